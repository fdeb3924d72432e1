package quarantine

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// FuzzRecordRoundTrip: whatever bytes a path, a rule name, metadata or
// matched data hold, a record reads back as it was added.
func FuzzRecordRoundTrip(f *testing.F) {
	f.Add([]byte("/tmp/eicar.com"), "EICAR_Test_File", "eicar.yar", "severity", "low", "$a", []byte("X5O!P%@AP"), int64(0), []byte("cat\x00/tmp/eicar.com\x00"))
	f.Add([]byte("/tmp/new\nline\xff"), "r\xff", "", "k\x00", "v\xfe", "", []byte{0, 1, 2}, int64(-1), []byte(nil))
	f.Add([]byte{}, "", "\xc3(", "", "", "$\x80", make([]byte, 200), int64(1<<62), []byte("\x00"))
	s, err := Open(filepath.Join(f.TempDir(), "q.db"))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { s.Close() })
	ctx := context.Background()
	f.Fuzz(func(t *testing.T, path []byte, rule, ns, metaKey, metaVal, strID string, data []byte, offset int64, cmdline []byte) {
		in := &Record{
			Time: time.Unix(1700000000, 5), Action: ActionDeny, State: StateRecorded, SHA256: rule, Size: offset,
			Path: path, Dev: uint64(offset), Ino: ^uint64(offset), Mode: uint32(offset), Mtime: time.Unix(0, offset|1),
			Exe: data, Cmdline: cmdline, RulesGeneration: ns, VaultName: metaVal,
			Matches: []Match{
				{Rule: rule, Namespace: ns, RuleFile: metaKey, Tags: []string{rule, metaVal}, Meta: map[string]string{metaKey: metaVal},
					Strings: []StringMatch{{ID: strID, Offset: offset, Data: data}}},
				{Rule: metaVal},
			},
		}
		id, err := s.Add(ctx, in)
		if err != nil {
			t.Fatal(err)
		}
		want := *in
		want.ID = id
		want.Matches = []Match{in.Matches[0], in.Matches[1]}
		want.Matches[0].Strings = []StringMatch{{ID: strID, Offset: offset, Data: data[:min(len(data), MaxMatchData)]}}
		got, err := s.Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(&want, got, timeEqual, cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("Get (-want +got):\n%s", diff)
		}
	})
}
