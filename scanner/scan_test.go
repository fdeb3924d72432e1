package scanner

import (
	"bytes"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fanguard/fanguard/policy"
	"github.com/google/go-cmp/cmp"
)

func TestVarsFor(t *testing.T) {
	tests := []struct {
		path, head, owner string
		want              Vars
	}{
		{"/usr/bin/ls", "\x7fELF\x02\x01", "root", Vars{"ls", "/usr/bin", "", "ELF", "root"}},
		{"/tmp/dl/Setup.EXE", "MZ\x90\x00", "bob", Vars{"Setup.EXE", "/tmp/dl", ".exe", "EXE", "bob"}},
		{"/home/a/.bashrc", "# .bashrc", "a", Vars{".bashrc", "/home/a", "", "", "a"}},
		{"/home/a/..x.TaR.Gz", "\x1f\x8b\x08", "a", Vars{"..x.TaR.Gz", "/home/a", ".gz", "GZIP", "a"}},
		{"/x/doc.pdf", "%PDF-1.7", "", Vars{"doc.pdf", "/x", ".pdf", "PDF", ""}},
		{"/x/a.zip", "PK\x03\x04\x0a\x00", "", Vars{"a.zip", "/x", ".zip", "ZIP", ""}},
		{"/x/a.docx", "PK\x03\x04\x14\x00\x06\x00", "", Vars{"a.docx", "/x", ".docx", "Office", ""}},
		{"/x/a.jar", "PK\x03\x04\x14\x00\x08\x00", "", Vars{"a.jar", "/x", ".jar", "ZIP", ""}},
		{"/x/empty.zip", "PK\x05\x06", "", Vars{"empty.zip", "/x", ".zip", "PKZIP", ""}},
		{"/x/run.sh", "#!/bin/sh\n", "", Vars{"run.sh", "/x", ".sh", "UNIX SCRIPT", ""}},
		{"/x/run.py", "#!python\n", "", Vars{"run.py", "/x", ".py", "Script", ""}},
		{"/x/macho", "\xcf\xfa\xed\xfe\x07\x00\x00\x01", "", Vars{"macho", "/x", "", "MACH-O", ""}},
		{"/x/macho32be", "\xfe\xed\xfa\xce", "", Vars{"macho32be", "/x", "", "MACH-O", ""}},
		{"/x/fat", "\xca\xfe\xba\xbe\x00\x00\x00\x02", "", Vars{"fat", "/x", "", "MACH-O", ""}},
		{"/x/A.class", "\xca\xfe\xba\xbe\x00\x00\x00\x34", "", Vars{"A.class", "/x", ".class", "Java Class or DYLIB", ""}},
		{"/x/trailing.", "M", "", Vars{"trailing.", "/x", "", "", ""}},
		{"/x/\xff\xfe.\xc3\x89XE", "", "", Vars{"\xff\xfe.\xc3\x89XE", "/x", ".\xc3\x89xe", "", ""}},
		{"relative.txt", "hello", "", Vars{"relative.txt", ".", ".txt", "", ""}},
		{"", "", "", Vars{}},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			got := VarsFor(tt.path, []byte(tt.head), tt.owner)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("VarsFor(%q, %q, %q) mismatch (-want +got):\n%s", tt.path, tt.head, tt.owner, diff)
			}
		})
	}
}

func TestRoundUpSeconds(t *testing.T) {
	tests := []struct{ in, want time.Duration }{
		{0, 0},
		{-time.Second, 0},
		{time.Nanosecond, time.Second},
		{900 * time.Millisecond, time.Second},
		{time.Second, time.Second},
		{1500 * time.Millisecond, 2 * time.Second},
		{math.MaxInt64, math.MaxInt32 * time.Second},
	}
	for _, tt := range tests {
		if got := roundUpSeconds(tt.in); got != tt.want {
			t.Errorf("roundUpSeconds(%v) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

// TestEICAR checks the shipped EICAR rule on real files.
func TestEICAR(t *testing.T) {
	s := mustScanner(t, mustLoad(t, shippedRules))
	rulePath, err := filepath.Abs(filepath.Join(shippedRules, "eicar.yar"))
	if err != nil {
		t.Fatal(err)
	}
	e := eicar()
	if len(e) != 68 {
		t.Fatalf("EICAR string is %d bytes, want 68", len(e))
	}
	tests := []struct {
		name    string
		content []byte
		match   bool
	}{
		{"exact", e, true},
		{"with CRLF", append(bytes.Clone(e), "\r\n"...), true},
		{"padded to 128", append(bytes.Clone(e), bytes.Repeat([]byte(" "), 128-68)...), true},
		{"at offset 1", append([]byte(" "), e...), false},
		{"in 200 bytes", append(bytes.Clone(e), bytes.Repeat([]byte(" "), 200-68)...), false},
		{"truncated", e[:67], false},
	}
	dir := t.TempDir()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "_")+".com")
			if err := os.WriteFile(p, tt.content, 0o644); err != nil {
				t.Fatal(err)
			}
			content, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			ms, err := s.Scan(content, VarsFor(p, content, ""))
			if err != nil {
				t.Fatal(err)
			}
			if !tt.match {
				if ms != nil {
					t.Errorf("matches = %v, want none", matchNames(ms))
				}
				return
			}
			want := []Match{{
				Rule:      "EICAR_Test_File",
				Namespace: "eicar.yar",
				File:      rulePath,
				Tags:      []string{"test"},
				Meta: map[string]string{
					"description": "EICAR anti-malware test file (harmless test string)",
					"reference":   "https://www.eicar.org/download-anti-malware-testfile/",
					"severity":    "low",
				},
				Action:  policy.ActionDefault,
				Strings: []StringMatch{{ID: "$eicar", Offset: 0, Data: e[:64], Len: len(e)}},
			}}
			if diff := cmp.Diff(want, ms); diff != "" {
				t.Errorf("matches mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestStringMatchesCapped(t *testing.T) {
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{"cap.yar": `
rule many { strings: $a = "AB" $b = "CD" condition: all of them }
rule long { strings: $l = /Z{100}/ condition: $l }
`})
	s := mustScanner(t, mustLoad(t, dir))
	buf := []byte(strings.Repeat("AB", 20) + "CD" + strings.Repeat("Z", 100))
	ms, err := s.Scan(buf, Vars{})
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 2 {
		t.Fatalf("matches = %v, want many and long", matchNames(ms))
	}
	for _, m := range ms {
		switch m.Rule {
		case "many":
			// 20 of $a and 1 of $b: 16 kept, 5 counted.
			if len(m.Strings) != maxStringMatches || m.StringsOmitted != 21-maxStringMatches {
				t.Errorf("many: %d string matches and %d omitted, want %d and %d", len(m.Strings), m.StringsOmitted,
					maxStringMatches, 21-maxStringMatches)
			}
			for i, sm := range m.Strings {
				if sm.ID != "$a" || sm.Offset != int64(2*i) || string(sm.Data) != "AB" {
					t.Errorf("many: string match %d = %+v, want $a at %d", i, sm, 2*i)
				}
			}
		case "long":
			if len(m.Strings) != 1 || len(m.Strings[0].Data) != maxMatchData || m.Strings[0].Offset != 42 || m.Strings[0].Len != 100 {
				t.Errorf("long: strings = %+v, want one at 42 with %d of 100 bytes", m.Strings, maxMatchData)
			}
		}
	}
}

// TestScanResultsIndependent checks that reusing the collector's slice does
// not let a later scan change an earlier result.
func TestScanResultsIndependent(t *testing.T) {
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{"ab.yar": `
rule a { strings: $a = "aaaa" condition: $a }
rule b { strings: $b = "bbbb" condition: $b }
`})
	s := mustScanner(t, mustLoad(t, dir))
	first, err := s.Scan([]byte("aaaa"), Vars{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Scan([]byte("bbbb"), Vars{}); err != nil {
		t.Fatal(err)
	}
	clean, err := s.Scan([]byte("cccc"), Vars{})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"ab.yar:a"}, matchNames(first)); diff != "" {
		t.Errorf("first result changed (-want +got):\n%s", diff)
	}
	if clean != nil {
		t.Errorf("clean scan = %v, want nil", clean)
	}
}

func TestScanAfterClose(t *testing.T) {
	s := mustScanner(t, mustLoad(t, shippedRules))
	s.Close()
	s.Close()
	if _, err := s.Scan([]byte("x"), Vars{}); !errors.Is(err, errClosed) {
		t.Errorf("Scan after Close: %v, want errClosed", err)
	}
}

// TestCleanScanAllocs keeps the allocations of a clean scan small: go-yara
// itself needs 3 or 4 per scan (the callback's cgo handle and container).
func TestCleanScanAllocs(t *testing.T) {
	s := mustScanner(t, mustLoad(t, shippedRules))
	buf := cleanBuffer(64 << 10)
	v := VarsFor("/srv/data/file.bin", buf, "root")
	allocs := testing.AllocsPerRun(100, func() {
		if ms, err := s.Scan(buf, v); err != nil || ms != nil {
			t.Fatalf("Scan = %v, %v", ms, err)
		}
	})
	t.Logf("%.0f allocations per clean scan", allocs)
	if allocs > 6 {
		t.Errorf("%.0f allocations per clean scan, want at most 6", allocs)
	}
}

// cleanBuffer returns n bytes of text that no shipped rule matches.
func cleanBuffer(n int) []byte {
	line := []byte("the quick brown fox jumps over the lazy dog 0123456789\n")
	return bytes.Repeat(line, n/len(line)+1)[:n]
}

func BenchmarkScanClean(b *testing.B) {
	rs := mustLoad(b, shippedRules)
	s := mustScanner(b, rs)
	buf := cleanBuffer(64 << 10)
	v := VarsFor("/srv/data/file.bin", buf, "root")
	b.ReportAllocs()
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		if ms, err := s.Scan(buf, v); err != nil || ms != nil {
			b.Fatalf("Scan = %v, %v", ms, err)
		}
	}
}

// TestCloseFreesRules: after Close no scanner can be made from the set
// (it would scan with freed rules); its other fields stay readable.
func TestCloseFreesRules(t *testing.T) {
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{"a.yar": rule("a")})
	rs := mustLoad(t, dir)
	s := mustScanner(t, rs)
	s.Close() // scanners first
	rs.Close()
	if _, err := rs.NewScanner(time.Second); !errors.Is(err, ErrNoRules) {
		t.Errorf("NewScanner after Close: %v, want ErrNoRules", err)
	}
	if rs.Count != 1 || rs.Generation == "" {
		t.Errorf("after Close: Count %d, Generation %q", rs.Count, rs.Generation)
	}
	rs.Close() // twice is harmless
}
