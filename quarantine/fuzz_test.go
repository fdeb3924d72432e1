package quarantine

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// FuzzRecordRoundTrip: whatever bytes a path, a rule name, metadata or
// matched data hold, and however long they are, a record reads back as it
// was added, cut to the caps: each cut value a prefix of what was given
// (valid UTF-8 staying valid), with the whole lengths and the counts of
// what was left out.
func FuzzRecordRoundTrip(f *testing.F) {
	f.Add([]byte("/tmp/eicar.com"), "EICAR_Test_File", "eicar.yar", "severity", "low", "$a", []byte("X5O!P%@AP"), int64(0), []byte("cat\x00/tmp/eicar.com\x00"), int64(1), int64(0), uint16(1))
	f.Add([]byte("/tmp/new\nline\xff"), "r\xff", "", "k\x00", "v\xfe", "", []byte{0, 1, 2}, int64(-1), []byte(nil), int64(0), int64(-5), uint16(0))
	f.Add([]byte{}, "", "\xc3(", "", "", "$\x80", make([]byte, 200), int64(1<<62), []byte("\x00"), int64(1<<62), int64(1<<40), uint16(3))
	f.Add(bytes.Repeat([]byte("/a"), 3000), strings.Repeat("é", 200), strings.Repeat("n", 300), "k", strings.Repeat("v", 600), "$s",
		make([]byte, 1<<16), int64(7), bytes.Repeat([]byte("arg\x00"), 2000), int64(-3), int64(time.Hour), uint16(40))
	s, err := Open(filepath.Join(f.TempDir(), "q.db"))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { s.Close() })
	ctx := context.Background()
	f.Fuzz(func(t *testing.T, path []byte, rule, ns, metaKey, metaVal, strID string, data []byte, offset int64, cmdline []byte,
		count, lastSeen int64, nStrings uint16) {
		at := time.Unix(1700000000, 5)
		lastSeen %= 1 << 60 // 36 years: nanoseconds since 1970 stay within an int64
		strs := make([]StringMatch, int(nStrings)%200)
		for i := range strs {
			strs[i] = StringMatch{ID: strID, Offset: offset + int64(i), Data: data}
		}
		in := &Record{
			Time: at, Action: ActionDeny, State: StateRecorded, SHA256: rule, Size: offset,
			Path: path, Dev: uint64(offset), Ino: ^uint64(offset), Mode: uint32(offset), Mtime: time.Unix(0, offset|1),
			Exe: data, Cmdline: cmdline, RulesGeneration: ns, VaultName: metaVal,
			Count: count, LastSeen: at.Add(time.Duration(lastSeen)),
			Matches: []Match{
				{Rule: rule, Namespace: ns, RuleFile: metaKey, Tags: []string{rule, metaVal}, Meta: map[string]string{metaKey: metaVal},
					Strings: strs},
				{Rule: metaVal},
			},
		}
		id, err := s.Add(ctx, in)
		if err != nil {
			t.Fatal(err)
		}
		got, err := s.Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}

		// What Add was given, cut as the caps say.
		cut := func(in string, n int) string {
			t.Helper()
			c := cutString(in, n)
			if !strings.HasPrefix(in, c) || len(c) > n || len(in) > n && len(c) < n-utf8.UTFMax+1 {
				t.Fatalf("cutString(%d bytes, %d) gave %d bytes", len(in), n, len(c))
			}
			if utf8.ValidString(in) && !utf8.ValidString(c) {
				t.Fatalf("cutString made valid UTF-8 invalid")
			}
			return c
		}
		want := *in
		want.ID = id
		want.SHA256, want.RulesGeneration, want.VaultName = cut(rule, MaxName), cut(ns, MaxName), cut(metaVal, MaxName)
		want.Path = path[:min(len(path), MaxPath)]
		want.Exe = data[:min(len(data), MaxPath)]
		want.Cmdline, want.CmdlineLen = cmdline[:min(len(cmdline), MaxCmdline)], int64(len(cmdline))
		want.Count = max(count, 1)
		if lastSeen < 0 {
			want.LastSeen = at
		}
		first := Match{Rule: cut(rule, MaxName), Namespace: cut(ns, MaxName), RuleFile: cut(metaKey, MaxPath),
			Tags: []string{cut(rule, MaxName), cut(metaVal, MaxName)}, Meta: map[string]string{cut(metaKey, MaxName): cut(metaVal, MaxMetaValue)}}
		for i := range min(len(strs), MaxStrings) {
			first.Strings = append(first.Strings, StringMatch{ID: cut(strID, MaxName), Offset: offset + int64(i),
				Data: data[:min(len(data), MaxMatchData)], Len: int64(len(data))})
		}
		first.StringsOmitted = len(strs) - len(first.Strings)
		second := Match{Rule: cut(metaVal, MaxName)}
		want.Matches = []Match{first, second}
		// The second match goes only if the first leaves it no room.
		e1, _ := encodeMatch(first)
		e2, _ := encodeMatch(second)
		if len(e1)+len(e2)+3 > MaxMatchesBytes {
			want.Matches, want.MatchesOmitted = want.Matches[:1], 1
		}
		if diff := cmp.Diff(&want, got, timeEqual, cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("Get (-want +got):\n%s", diff)
		}
	})
}
