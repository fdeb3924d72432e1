package scanner

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestMerge(t *testing.T) {
	rule := func(dir, name string) entry { return entry{Name: name, Path: dir + "/" + name, Kind: kindRule} }
	with := func(e entry, k entryKind) entry { e.Kind = k; return e }
	tests := []struct {
		name    string
		listing []entry
		want    merged
	}{
		{
			name:    "empty",
			listing: nil,
			want:    merged{},
		},
		{
			name:    "later directory overrides",
			listing: []entry{rule("/usr", "a.yar"), rule("/usr", "b.yar"), rule("/etc", "a.yar")},
			want:    merged{Files: []entry{rule("/etc", "a.yar"), rule("/usr", "b.yar")}},
		},
		{
			name:    "mask by /dev/null",
			listing: []entry{rule("/usr", "a.yar"), rule("/usr", "b.yar"), with(rule("/etc", "a.yar"), kindNull)},
			want:    merged{Files: []entry{rule("/usr", "b.yar")}, Masked: []string{"a.yar"}},
		},
		{
			name:    "mask by empty file",
			listing: []entry{rule("/usr", "a.yara"), with(rule("/etc", "a.yara"), kindEmpty)},
			want:    merged{Masked: []string{"a.yara"}},
		},
		{
			name:    "a later file unmasks",
			listing: []entry{with(rule("/usr", "a.yar"), kindNull), rule("/etc", "a.yar")},
			want:    merged{Files: []entry{rule("/etc", "a.yar")}},
		},
		{
			name:    "lexical order across directories",
			listing: []entry{rule("/usr", "b.yar"), rule("/usr", "Z.yar"), rule("/etc", "a.yara"), rule("/etc", "10-x.yar"), rule("/etc", "9-x.yar")},
			want:    merged{Files: []entry{rule("/etc", "10-x.yar"), rule("/etc", "9-x.yar"), rule("/usr", "Z.yar"), rule("/etc", "a.yara"), rule("/usr", "b.yar")}},
		},
		{
			name: "other names ignored",
			listing: []entry{
				rule("/usr", "README"), rule("/usr", "a.yar.bak"), rule("/usr", ".hidden.yar"), rule("/usr", "a.YAR"),
				rule("/usr", "a.yarx"), rule("/usr", ".yar"), rule("/usr", "x/y.yar"), rule("/usr", "ok.yar"),
			},
			want: merged{Files: []entry{rule("/usr", "ok.yar")}},
		},
		{
			name:    "not a regular file replaces and is reported",
			listing: []entry{rule("/usr", "a.yar"), {Name: "a.yar", Path: "/etc/a.yar", Kind: kindOther, Note: "not a regular file"}},
			want:    merged{Bad: []entry{{Name: "a.yar", Path: "/etc/a.yar", Kind: kindOther, Note: "not a regular file"}}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := merge(tt.listing)
			if diff := cmp.Diff(tt.want, got, cmp.AllowUnexported(entry{}, merged{})); diff != "" {
				t.Errorf("merge() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// TestLoadDirs merges real directories and checks what Load made of them.
func TestLoadDirs(t *testing.T) {
	type tree = map[string]string
	tests := []struct {
		name        string
		dirs        []tree // nil: the directory does not exist
		wantFiles   []string
		wantRules   []string
		wantMasked  []string
		wantMissing []int // indexes into dirs
		wantBroken  []string
	}{
		{
			name:      "override by file name",
			dirs:      []tree{{"a.yar": rule("usr_a"), "b.yar": rule("usr_b")}, {"a.yar": rule("etc_a")}},
			wantFiles: []string{"1/a.yar", "0/b.yar"},
			wantRules: []string{"a.yar:etc_a", "b.yar:usr_b"},
		},
		{
			name:       "mask by symlink to /dev/null",
			dirs:       []tree{{"a.yar": rule("usr_a"), "b.yar": rule("usr_b")}, {"a.yar": toDevNull}},
			wantFiles:  []string{"0/b.yar"},
			wantRules:  []string{"b.yar:usr_b"},
			wantMasked: []string{"a.yar"},
		},
		{
			name:       "mask by empty file, also in the same directory",
			dirs:       []tree{{"a.yar": rule("usr_a"), "b.yar": rule("usr_b"), "c.yar": ""}, {"b.yar": ""}},
			wantFiles:  []string{"0/a.yar"},
			wantRules:  []string{"a.yar:usr_a"},
			wantMasked: []string{"b.yar", "c.yar"},
		},
		{
			name:      "lexical order of names",
			dirs:      []tree{{"20-b.yar": rule("b"), "10-c.yara": rule("c")}, {"15-a.yar": rule("a")}},
			wantFiles: []string{"0/10-c.yara", "1/15-a.yar", "0/20-b.yar"},
			wantRules: []string{"10-c.yara:c", "15-a.yar:a", "20-b.yar:b"},
		},
		{
			name:        "missing directory skipped",
			dirs:        []tree{nil, {"a.yar": rule("a")}, nil},
			wantFiles:   []string{"1/a.yar"},
			wantRules:   []string{"a.yar:a"},
			wantMissing: []int{0, 2},
		},
		{
			name: "other files and subdirectories ignored",
			dirs: []tree{{
				"a.yar": rule("a"), "README": "not yara", "a.yar.orig": "not yara", ".hidden.yar": "not yara",
				"b.YAR": "not yara", "sub/c.yar": rule("c"), "x.txt": "not yara",
			}},
			wantFiles: []string{"0/a.yar"},
			wantRules: []string{"a.yar:a"},
		},
		{
			name:       "directory named like a rule file",
			dirs:       []tree{{"a.yar": rule("a"), "b.yar": rule("b")}, {"b.yar": asDir}},
			wantFiles:  []string{"0/a.yar"},
			wantRules:  []string{"a.yar:a"},
			wantBroken: []string{"1/b.yar"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			var dirs []string
			for i, files := range tt.dirs {
				d := filepath.Join(root, string(rune('0'+i)))
				if files != nil {
					writeTree(t, d, files)
				}
				dirs = append(dirs, d)
			}
			rel := func(p string) string {
				r, err := filepath.Rel(root, p)
				if err != nil {
					t.Fatal(err)
				}
				return r
			}
			rs := mustLoad(t, dirs...)
			var gotFiles, gotBroken, gotMissing []string
			for _, f := range rs.Files {
				gotFiles = append(gotFiles, rel(f.Path))
				if f.Name != filepath.Base(f.Path) || f.Rules != 1 {
					t.Errorf("file %+v: want Name = base name and Rules = 1", f)
				}
			}
			for _, b := range rs.Broken {
				gotBroken = append(gotBroken, rel(b.Path))
			}
			for _, m := range rs.MissingDirs {
				gotMissing = append(gotMissing, rel(m))
			}
			var wantMissing []string
			for _, i := range tt.wantMissing {
				wantMissing = append(wantMissing, rel(dirs[i]))
			}
			check := func(what string, want, got any) {
				t.Helper()
				if diff := cmp.Diff(want, got); diff != "" {
					t.Errorf("%s mismatch (-want +got):\n%s", what, diff)
				}
			}
			check("files", tt.wantFiles, gotFiles)
			check("rules", tt.wantRules, ruleNames(rs))
			check("masked", tt.wantMasked, rs.Masked)
			check("missing", wantMissing, gotMissing)
			check("broken", tt.wantBroken, gotBroken)
			check("count", len(tt.wantRules), rs.Count)
		})
	}
}

// FuzzMerge checks merge's invariants on arbitrary listings. The input is
// a sequence of records: a kind byte, then a name up to a 0 byte; a record
// whose kind byte has the high bit set starts the next directory.
func FuzzMerge(f *testing.F) {
	f.Add([]byte("\x00a.yar\x00\x00b.yara\x00\x80\x01a.yar\x00\x02c.yar\x00"))
	f.Add([]byte("\x00.x.yar\x00\x03d.yar\x00\x81\x00d.yar\x00\x00x/y.yar\x00"))
	f.Add([]byte("\x00README\x00\x00a.YAR\x00\x00.yar\x00"))
	f.Fuzz(func(t *testing.T, data []byte) {
		var listing []entry
		dir := 0
		for len(data) > 0 {
			k := data[0]
			data = data[1:]
			if k&0x80 != 0 {
				dir++
			}
			name, rest, _ := strings.Cut(string(data), "\x00")
			data = []byte(rest)
			listing = append(listing, entry{
				Name: name,
				Path: filepath.Join("/d", string(rune('a'+dir%26)), name),
				Kind: entryKind(k&0x7f) % (kindOther + 1),
			})
		}
		got := merge(listing)

		// The effective entry of each valid name is its last one.
		last := map[string]entry{}
		for _, e := range listing {
			if isRuleFileName(e.Name) {
				last[e.Name] = e
			}
		}
		seen := map[string]bool{}
		note := func(name string) {
			if !isRuleFileName(name) {
				t.Fatalf("invalid name %q in result", name)
			}
			if seen[name] {
				t.Fatalf("name %q appears twice in result", name)
			}
			seen[name] = true
		}
		for _, e := range got.Files {
			note(e.Name)
			if e != last[e.Name] || e.Kind != kindRule {
				t.Fatalf("file %+v: want the last entry %+v, a rule file", e, last[e.Name])
			}
		}
		for _, name := range got.Masked {
			note(name)
			if k := last[name].Kind; k != kindEmpty && k != kindNull {
				t.Fatalf("masked %q but its last entry is kind %d", name, k)
			}
		}
		for _, e := range got.Bad {
			note(e.Name)
			if e != last[e.Name] || e.Kind != kindOther {
				t.Fatalf("bad %+v: want the last entry %+v, kind other", e, last[e.Name])
			}
		}
		if len(seen) != len(last) {
			t.Fatalf("result holds %d names, want %d", len(seen), len(last))
		}
		byName := func(a, b entry) int { return strings.Compare(a.Name, b.Name) }
		if !slices.IsSortedFunc(got.Files, byName) || !slices.IsSorted(got.Masked) || !slices.IsSortedFunc(got.Bad, byName) {
			t.Fatalf("result not in lexical order: %+v", got)
		}
	})
}
