package test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fanguard/fanguard/internal/testutil"
	"github.com/fanguard/fanguard/quarantine"
)

// qcli is a quarantine log and vault in a temporary directory, seeded
// through the quarantine package as the daemon would, and reviewed through
// the binary's --db and --vault flags.
type qcli struct {
	t     *testing.T
	dir   string // where seeded files live
	db    string
	vault string
	store *quarantine.Store
	mover *quarantine.Mover
}

func newQCLI(t *testing.T) *qcli {
	t.Helper()
	testutil.RequireRoot(t) // the command line is root only
	work := t.TempDir()
	q := &qcli{t: t, dir: filepath.Join(work, "files"), db: filepath.Join(work, "q", "quarantine.db"), vault: filepath.Join(work, "q", "vault")}
	if err := os.Mkdir(q.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	s, err := quarantine.Open(q.db)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	v, err := quarantine.OpenVault(q.vault)
	if err != nil {
		t.Fatal(err)
	}
	q.store, q.mover = s, &quarantine.Mover{Store: s, Vault: v}
	// An empty configuration: built-in defaults, whatever /etc holds.
	writeFile(t, filepath.Join(work, "fanguard.toml"), "", 0o644)
	return q
}

// run runs "fanguard ARGS --db DB --vault VAULT --config EMPTY".
func (q *qcli) run(args ...string) (int, string, string) {
	q.t.Helper()
	args = append(args, "--db", q.db, "--vault", q.vault, "--config", filepath.Join(filepath.Dir(q.dir), "fanguard.toml"))
	return run(q.t, args...)
}

// seed writes a file named name with content, records its detection with
// action at time at, and quarantines it when action is "quarantine".
func (q *qcli) seed(name, content, action, rule string, at time.Time) *quarantine.Record {
	q.t.Helper()
	p := filepath.Join(q.dir, name)
	writeFile(q.t, p, content, 0o640)
	mtime := time.Date(2021, 2, 3, 4, 5, 6, 789, time.UTC)
	os.Chtimes(p, mtime, mtime)
	var st syscall.Stat_t
	if err := syscall.Stat(p, &st); err != nil {
		q.t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(content))
	off := strings.Index(content, "EICAR")
	r := &quarantine.Record{
		Time: at, Action: action, SHA256: hex.EncodeToString(sum[:]), Size: st.Size, Path: []byte(p),
		Dev: st.Dev, Ino: st.Ino, Mode: st.Mode, UID: st.Uid, GID: st.Gid, Mtime: mtime,
		PID: 4242, Exe: []byte("/usr/bin/c\x01at"), Cmdline: []byte("cat\x00" + p + "\x00"), ProcUID: 1000, RulesGeneration: "g1",
		Matches: []quarantine.Match{{Rule: rule, Namespace: "eicar.yar", RuleFile: "/etc/fanguard/rules.d/eicar.yar",
			Tags: []string{"test"}, Meta: map[string]string{"severity": "low"},
			Strings: []quarantine.StringMatch{{ID: "$eicar", Offset: int64(off), Data: []byte("EICAR-STANDARD")}}}},
	}
	id, err := q.store.Add(context.Background(), r)
	if err != nil {
		q.t.Fatal(err)
	}
	if action == quarantine.ActionQuarantine {
		if err := q.mover.Quarantine(context.Background(), id, r.Path, r.Dev, r.Ino); err != nil {
			q.t.Fatal(err)
		}
	}
	r, err = q.store.Get(context.Background(), id)
	if err != nil {
		q.t.Fatal(err)
	}
	return r
}

// listJSON is what a test reads of "list --json".
type listJSON struct {
	ID      int64  `json:"id"`
	Action  string `json:"action"`
	State   string `json:"state"`
	Path    string `json:"path"`
	PathB64 []byte `json:"path_b64"`
	SHA256  string `json:"sha256"`
	Process struct {
		PID     int32    `json:"pid"`
		Exe     string   `json:"exe"`
		Cmdline []string `json:"cmdline"`
	} `json:"process"`
	Matches []struct {
		Rule    string `json:"rule"`
		Strings []struct {
			ID     string `json:"id"`
			Offset int64  `json:"offset"`
			Data   []byte `json:"data"`
			Before []byte `json:"before"`
			After  []byte `json:"after"`
		} `json:"strings"`
	} `json:"matches"`
	History []struct {
		What string `json:"what"`
		By   struct {
			UID  uint32 `json:"uid"`
			Name string `json:"name"`
		} `json:"by"`
	} `json:"history"`
}

const oddName = "new\nline\xff\tname.com"

func TestQuarantineCLIList(t *testing.T) {
	q := newQCLI(t)
	now := time.Now()
	audit := q.seed("audit.txt", "xx "+eicar, quarantine.ActionAudit, "Audit_Rule", now.Add(-3*time.Hour))
	deny := q.seed("deny.txt", "yy "+eicar, quarantine.ActionDeny, "EICAR_Test_File", now.Add(-2*time.Hour))
	odd := q.seed(oddName, "zz "+eicar, quarantine.ActionQuarantine, "EICAR_Test_File", now.Add(-time.Hour))

	code, out, errOut := q.run("quarantine", "list")
	if code != 0 {
		t.Fatalf("list: exit %d: %s", code, errOut)
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 4 {
		t.Fatalf("want a header and 3 lines (a raw newline would make more):\n%s", out)
	}
	header := lines[0]
	for _, col := range []string{"ID", "TIME", "COUNT", "LAST", "ACTION", "STATE", "RULE", "PATH", "PROCESS"} {
		if !strings.Contains(header, col) {
			t.Errorf("header lacks %s: %q", col, header)
		}
	}
	// Newest first, columns aligned.
	pathCol := strings.Index(header, "PATH")
	for i, want := range []*quarantine.Record{odd, deny, audit} {
		l := lines[i+1]
		if !strings.HasPrefix(l, strconv.FormatInt(want.ID, 10)+" ") {
			t.Errorf("line %d is not record %d: %q", i+1, want.ID, l)
		}
		if len(l) < pathCol || !strings.HasPrefix(l[pathCol:], `"`+q.dir) && !strings.HasPrefix(l[pathCol:], q.dir) {
			t.Errorf("PATH column not aligned in %q", l)
		}
		if !strings.Contains(l, `"/usr/bin/c\x01at" [4242]`) {
			t.Errorf("process not shown escaped: %q", l)
		}
	}
	escaped := strconv.Quote(filepath.Join(q.dir, oddName))
	if !strings.Contains(lines[1], escaped) || !strings.Contains(lines[1], `\xff`) {
		t.Errorf("odd path not shown escaped as %s: %q", escaped, lines[1])
	}
	if strings.Contains(out, "\xff") || strings.Contains(out, "\x01") {
		t.Error("raw bytes in the table")
	}
	if !strings.Contains(lines[1], "quarantined") || !strings.Contains(lines[3], "audit") {
		t.Errorf("states/actions wrong:\n%s", out)
	}

	// --json, decoded.
	code, out, errOut = q.run("quarantine", "list", "--json")
	if code != 0 {
		t.Fatalf("list --json: exit %d: %s", code, errOut)
	}
	var recs []listJSON
	if err := json.Unmarshal([]byte(out), &recs); err != nil {
		t.Fatalf("decoding list --json: %v\n%s", err, out)
	}
	if len(recs) != 3 || recs[0].ID != odd.ID || recs[2].ID != audit.ID {
		t.Fatalf("list --json: %+v", recs)
	}
	r := recs[0]
	if !bytes.Equal(r.PathB64, odd.Path) {
		t.Errorf("path_b64 %q, want %q", r.PathB64, odd.Path)
	}
	if want := filepath.Join(q.dir, "new\nline") + `\xff` + "\tname.com"; r.Path != want {
		t.Errorf("path %q, want %q", r.Path, want)
	}
	if r.Action != "quarantine" || r.State != "quarantined" || r.SHA256 != odd.SHA256 || r.Process.PID != 4242 ||
		len(r.Process.Cmdline) != 2 || r.Process.Cmdline[1] != r.Path || len(r.Matches) != 1 || r.Matches[0].Rule != "EICAR_Test_File" {
		t.Errorf("list --json record: %+v", r)
	}

	// Filters.
	tests := []struct {
		name string
		args []string
		want []int64
	}{
		{"action", []string{"--action", "deny"}, []int64{deny.ID}},
		{"rule", []string{"--rule", "EICAR_Test_File"}, []int64{odd.ID, deny.ID}},
		{"path glob", []string{"--path", q.dir + "/*.txt"}, []int64{deny.ID, audit.ID}},
		{"path glob no match across /", []string{"--path", "/*.txt"}, nil},
		{"limit", []string{"--limit", "1"}, []int64{odd.ID}},
		{"since duration", []string{"--since", "150m"}, []int64{odd.ID, deny.ID}},
		{"until time", []string{"--until", now.Add(-150 * time.Minute).Format(time.RFC3339)}, []int64{audit.ID}},
		{"since days", []string{"--since", "1d"}, []int64{odd.ID, deny.ID, audit.ID}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errOut := q.run(append([]string{"quarantine", "list", "--json"}, tt.args...)...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, errOut)
			}
			var recs []listJSON
			if err := json.Unmarshal([]byte(out), &recs); err != nil {
				t.Fatal(err)
			}
			var got []int64
			for _, r := range recs {
				got = append(got, r.ID)
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("ids %v, want %v", got, tt.want)
			}
		})
	}
	for _, bad := range [][]string{{"--since", "yesterday"}, {"--action", "block"}, {"extra-arg"}} {
		if code, _, _ := q.run(append([]string{"quarantine", "list"}, bad...)...); code != 2 {
			t.Errorf("list %v: exit %d, want 2", bad, code)
		}
	}
}

func TestQuarantineCLIShow(t *testing.T) {
	q := newQCLI(t)
	content := "some bytes before the test file: " + eicar + " and after"
	r := q.seed(oddName, content, quarantine.ActionQuarantine, "EICAR_Test_File", time.Now())
	off := strings.Index(content, "EICAR")

	code, out, errOut := q.run("quarantine", "show", strconv.FormatInt(r.ID, 10))
	if code != 0 {
		t.Fatalf("show: exit %d: %s", code, errOut)
	}
	for _, want := range []string{
		strconv.Quote(string(r.Path)),
		"EICAR_Test_File (eicar.yar, /etc/fanguard/rules.d/eicar.yar)",
		fmt.Sprintf(`$eicar at offset %d (0x%x): "EICAR-STANDARD"`, off, off),
		// ±16 bytes around it, from the vault.
		"in the file: " + strconv.Quote(content[off-16:off]) + ` + "EICAR-STANDARD" + "-ANTIVIRUS-TEST-"`,
		"severity = \"low\"",
		r.SHA256,
		"mode -rw-r----- (0640)",
		"pid 4242, uid 1000",
		"quarantined by fanguard",
		"history:",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("show lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "\xff") || strings.Contains(out, "\x01") {
		t.Errorf("raw bytes in show:\n%q", out)
	}

	code, out, errOut = q.run("quarantine", "show", "--json", strconv.FormatInt(r.ID, 10))
	if code != 0 {
		t.Fatalf("show --json: exit %d: %s", code, errOut)
	}
	var j listJSON
	if err := json.Unmarshal([]byte(out), &j); err != nil {
		t.Fatal(err)
	}
	s := j.Matches[0].Strings[0]
	if s.Offset != int64(off) || string(s.Data) != "EICAR-STANDARD" || string(s.Before) != content[off-16:off] || len(s.After) != 16 {
		t.Errorf("show --json string: %+v", s)
	}
	if len(j.History) != 1 || j.History[0].What != "quarantined" {
		t.Errorf("show --json history: %+v", j.History)
	}

	// A record whose opener was gone before it was described.
	gone := &quarantine.Record{Time: time.Now(), Action: quarantine.ActionDeny, SHA256: r.SHA256, Size: r.Size,
		Path: []byte(filepath.Join(q.dir, "gone")), PID: 99, ProcUID: 0, RulesGeneration: "g1",
		Matches: []quarantine.Match{{Rule: "EICAR_Test_File", Namespace: "eicar.yar", RuleFile: "/etc/fanguard/rules.d/eicar.yar"}}}
	goneID, err := q.store.Add(context.Background(), gone)
	if err != nil {
		t.Fatal(err)
	}
	code, out, errOut = q.run("quarantine", "show", strconv.FormatInt(goneID, 10))
	if code != 0 || !strings.Contains(out, "pid 99, uid 0, executable unknown (the process was gone") ||
		!regexp.MustCompile(`(?m)^command line +unknown$`).MatchString(out) {
		t.Errorf("show of a record without its process: exit %d, %s\n%s", code, errOut, out)
	}

	if code, _, errOut := q.run("quarantine", "show", "9999"); code != 1 || !strings.Contains(errOut, "not found") {
		t.Errorf("show 9999: exit %d, %s", code, errOut)
	}
	if code, _, _ := q.run("quarantine", "show", "abc"); code != 2 {
		t.Errorf("show abc: exit %d, want 2", code)
	}
}

// TestQuarantineCLIBounded: a record cut to the caps and seen many times
// says so in list, show, their JSON, and export.
func TestQuarantineCLIBounded(t *testing.T) {
	q := newQCLI(t)
	ctx := context.Background()
	at := time.Now().Add(-time.Hour).Truncate(time.Second)
	last := at.Add(59 * time.Second)
	strs := make([]quarantine.StringMatch, 20)
	for i := range strs {
		strs[i] = quarantine.StringMatch{ID: "$big", Offset: int64(i), Data: bytes.Repeat([]byte{'X'}, 1<<20)}
	}
	matches := make([]quarantine.Match, 40)
	for i := range matches {
		matches[i] = quarantine.Match{Rule: fmt.Sprintf("Rule_%02d", i)}
	}
	matches[0].Strings = strs
	r := &quarantine.Record{
		Time: at, Action: quarantine.ActionDeny, SHA256: strings.Repeat("ab", 32), Size: 68, Path: []byte("/tmp/flood.com"),
		PID: 77, Exe: []byte("/usr/bin/flood"), Cmdline: append([]byte("flood\x00"), bytes.Repeat([]byte("A\x00"), 3<<20-3)...),
		ProcUID: 1000, RulesGeneration: "g1", Matches: matches,
	}
	id, err := q.store.Add(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	if err := q.store.AddRepeats(ctx, []quarantine.Repeat{{ID: id, N: 1258, Last: last}}); err != nil {
		t.Fatal(err)
	}
	sid := strconv.FormatInt(id, 10)

	code, out, errOut := q.run("quarantine", "list")
	if code != 0 {
		t.Fatalf("list: exit %d: %s", code, errOut)
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	header := lines[0]
	countCol, lastCol := strings.Index(header, "COUNT"), strings.Index(header, "LAST")
	if len(lines) != 2 || !strings.HasPrefix(lines[1][countCol:], "1259 ") ||
		!strings.HasPrefix(lines[1][lastCol:], last.Local().Format("2006-01-02 15:04:05")) ||
		!strings.Contains(lines[1], "Rule_31,(8 more)") {
		t.Errorf("list:\n%s", out)
	}

	code, out, errOut = q.run("quarantine", "show", sid)
	if code != 0 {
		t.Fatalf("show: exit %d: %s", code, errOut)
	}
	for _, want := range []string{
		"seen             1,259 times, last at " + last.Local().Format("2006-01-02 15:04:05.000 MST"),
		"... (truncated: the first 4,096 of 6,291,456 bytes in all)",
		`$big at offset 0 (0x0): "` + strings.Repeat("X", quarantine.MaxMatchData) + `" (the first 64 of 1,048,576 bytes)`,
		"    ... and 4 more matched strings, not kept",
		"  ... and 8 more matching rules, not kept",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("show lacks %q:\n%s", want, out)
		}
	}
	if len(out) > 32<<10 {
		t.Errorf("show printed %d bytes", len(out))
	}

	type boundedJSON struct {
		Count    int64     `json:"count"`
		LastSeen time.Time `json:"last_seen"`
		Process  struct {
			CmdlineB64       []byte `json:"cmdline_b64"`
			CmdlineLen       int64  `json:"cmdline_len"`
			CmdlineTruncated bool   `json:"cmdline_truncated"`
		} `json:"process"`
		Matches []struct {
			StringsOmitted int `json:"strings_omitted"`
			Strings        []struct {
				Data []byte `json:"data"`
				Len  int64  `json:"len"`
			} `json:"strings"`
		} `json:"matches"`
		MatchesOmitted int `json:"matches_omitted"`
	}
	check := func(what string, j boundedJSON) {
		t.Helper()
		if j.Count != 1259 || !j.LastSeen.Equal(last) || len(j.Process.CmdlineB64) != quarantine.MaxCmdline ||
			j.Process.CmdlineLen != 6<<20 || !j.Process.CmdlineTruncated || j.MatchesOmitted != 8 || len(j.Matches) != 32 ||
			j.Matches[0].StringsOmitted != 4 || len(j.Matches[0].Strings) != 16 || len(j.Matches[0].Strings[0].Data) != 64 ||
			j.Matches[0].Strings[0].Len != 1<<20 {
			t.Errorf("%s: count %d, last seen %v, cmdline %d of %d bytes (truncated %v), %d matches + %d omitted",
				what, j.Count, j.LastSeen, len(j.Process.CmdlineB64), j.Process.CmdlineLen, j.Process.CmdlineTruncated,
				len(j.Matches), j.MatchesOmitted)
		}
	}
	for _, args := range [][]string{{"list", "--json"}, {"show", "--json", sid}, {"export"}} {
		code, out, errOut := q.run(append([]string{"quarantine"}, args...)...)
		if code != 0 {
			t.Fatalf("%v: exit %d: %s", args, code, errOut)
		}
		var j boundedJSON
		if args[0] == "list" {
			var js []boundedJSON
			if err := json.Unmarshal([]byte(out), &js); err != nil || len(js) != 1 {
				t.Fatalf("%v: %v, %d records", args, err, len(js))
			}
			j = js[0]
		} else if err := json.Unmarshal([]byte(out), &j); err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		check(fmt.Sprint(args), j)
	}
}

func TestQuarantineCLIRestoreDelete(t *testing.T) {
	q := newQCLI(t)
	ctx := context.Background()
	odd := q.seed(oddName, "odd "+eicar, quarantine.ActionQuarantine, "EICAR_Test_File", time.Now())
	other := q.seed("other.com", "other "+eicar, quarantine.ActionQuarantine, "EICAR_Test_File", time.Now())
	id := strconv.FormatInt(odd.ID, 10)

	// Back to its path, newline and invalid UTF-8 and all, with mode and mtime.
	code, out, errOut := q.run("quarantine", "restore", id)
	if code != 0 {
		t.Fatalf("restore: exit %d: %s", code, errOut)
	}
	if !strings.Contains(out, strconv.Quote(string(odd.Path))) {
		t.Errorf("restore output: %q", out)
	}
	b, err := os.ReadFile(string(odd.Path))
	if err != nil || string(b) != "odd "+eicar {
		t.Fatalf("restored: %q, %v", b, err)
	}
	fi, _ := os.Stat(string(odd.Path))
	if fi.Mode() != 0o640 || !fi.ModTime().Equal(odd.Mtime) {
		t.Errorf("restored mode %v mtime %v; want 0640 %v", fi.Mode(), fi.ModTime(), odd.Mtime)
	}
	if code, _, errOut := q.run("quarantine", "restore", id); code != 1 || !strings.Contains(errOut, "restored, not quarantined") {
		t.Errorf("second restore: exit %d, %s", code, errOut)
	}

	// Refusals: an existing file, a symlinked directory.
	oid := strconv.FormatInt(other.ID, 10)
	writeFile(t, string(other.Path), "a new file", 0o644)
	if code, _, errOut := q.run("quarantine", "restore", oid); code != 1 || !strings.Contains(errOut, "--force") {
		t.Errorf("restore over a file: exit %d, %s", code, errOut)
	}
	outside := t.TempDir()
	link := filepath.Join(q.dir, "link")
	os.Symlink(outside, link)
	if code, _, errOut := q.run("quarantine", "restore", oid, "--force", "--to", filepath.Join(link, "x")); code != 1 || !strings.Contains(errOut, "symbolic link") {
		t.Errorf("restore through a symlink: exit %d, %s", code, errOut)
	}
	if des, _ := os.ReadDir(outside); len(des) != 0 {
		t.Error("written through the symlink")
	}
	// --to elsewhere, --allow.
	to := filepath.Join(q.dir, "restored.com")
	if code, out, errOut := q.run("quarantine", "restore", oid, "--to", to, "--allow"); code != 0 || !strings.Contains(out, "allow list") {
		t.Fatalf("restore --to --allow: exit %d, %s %s", code, out, errOut)
	}
	if b, _ := os.ReadFile(to); string(b) != "other "+eicar {
		t.Errorf("restored to --to: %q", b)
	}
	if ok, _ := q.store.IsAllowed(ctx, other.SHA256); !ok {
		t.Error("--allow did not allow the sha256")
	}
	al, _ := q.store.AllowList(ctx)
	if len(al) != 1 || !strings.Contains(al[0].Comment, "record "+oid) {
		t.Errorf("allow list %+v", al)
	}
	rec, _ := q.store.Get(ctx, other.ID)
	if w := rec.History[len(rec.History)-1].What; rec.State != "restored" || w != "allowed" {
		t.Errorf("state %s, last event %s", rec.State, w)
	}

	// Delete.
	del := q.seed("del.com", "del "+eicar, quarantine.ActionQuarantine, "EICAR_Test_File", time.Now())
	did := strconv.FormatInt(del.ID, 10)
	if code, _, errOut := q.run("quarantine", "delete", did); code != 0 {
		t.Fatalf("delete: exit %d: %s", code, errOut)
	}
	if _, err := os.Stat(filepath.Join(q.vault, del.VaultName)); !os.IsNotExist(err) {
		t.Errorf("vault file still there: %v", err)
	}
	if code, _, _ := q.run("quarantine", "delete", did); code != 1 {
		t.Errorf("second delete: exit %d, want 1", code)
	}
	if code, _, _ := q.run("quarantine", "delete", "9999"); code != 1 {
		t.Errorf("delete 9999: exit %d, want 1", code)
	}
	if code, _, _ := q.run("quarantine", "delete"); code != 2 {
		t.Errorf("delete without id: exit %d, want 2", code)
	}
	if code, _, _ := q.run("quarantine", "restore", "9999"); code != 1 {
		t.Errorf("restore 9999: exit %d, want 1", code)
	}
}

func TestQuarantineCLIPurgeAndExport(t *testing.T) {
	q := newQCLI(t)
	now := time.Now()
	old := q.seed("old.com", "old "+eicar, quarantine.ActionQuarantine, "R", now.Add(-100*24*time.Hour))
	mid := q.seed("mid.com", "mid "+eicar, quarantine.ActionQuarantine, "R", now.Add(-50*24*time.Hour))
	recent := q.seed("new.com", "new "+eicar, quarantine.ActionQuarantine, "R", now.Add(-time.Hour))
	audit := q.seed("audit.com", "audit "+eicar, quarantine.ActionAudit, "R", now.Add(-200*24*time.Hour))

	if code, out, errOut := q.run("quarantine", "purge", "--older-than", "60d", "--max-bytes", "0"); code != 0 || !strings.Contains(out, "purged 1 records") {
		t.Fatalf("purge --older-than: exit %d, %q %s", code, out, errOut)
	}
	if code, out, errOut := q.run("quarantine", "purge", "--older-than", "0", "--max-bytes", "200"); code != 0 || !strings.Contains(out, "purged 1 records") {
		t.Fatalf("purge --max-bytes: exit %d, %q %s", code, out, errOut)
	}
	for _, c := range []struct {
		r    *quarantine.Record
		want string
	}{{old, "deleted"}, {mid, "deleted"}, {recent, "quarantined"}, {audit, "recorded"}} {
		r, _ := q.store.Get(context.Background(), c.r.ID)
		if r.State != c.want {
			t.Errorf("record %d: state %s, want %s", c.r.ID, r.State, c.want)
		}
	}
	if code, _, _ := q.run("quarantine", "purge", "--max-bytes", "lots"); code != 2 {
		t.Errorf("purge --max-bytes lots: exit %d, want 2", code)
	}

	code, out, errOut := q.run("quarantine", "export")
	if code != 0 {
		t.Fatalf("export: exit %d: %s", code, errOut)
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 4 {
		t.Fatalf("export: %d lines, want 4:\n%s", len(lines), out)
	}
	var first, second listJSON
	json.Unmarshal([]byte(lines[0]), &first)
	if err := json.Unmarshal([]byte(lines[1]), &second); err != nil {
		t.Fatal(err)
	}
	if first.ID != audit.ID || second.ID != old.ID {
		t.Errorf("export order: %d, %d; want oldest first (%d, %d)", first.ID, second.ID, audit.ID, old.ID)
	}
	var whats []string
	for _, h := range second.History {
		whats = append(whats, h.What)
	}
	if fmt.Sprint(whats) != "[quarantined purged]" {
		t.Errorf("exported history %v", whats)
	}
}

func TestQuarantineCLIAllow(t *testing.T) {
	q := newQCLI(t)
	sum := strings.Repeat("AB", 32)
	if code, _, errOut := q.run("allow", "add", sum, "--comment", "a false\npositive"); code != 0 {
		t.Fatalf("allow add: exit %d: %s", code, errOut)
	}
	code, out, _ := q.run("allow", "list")
	if code != 0 || !strings.Contains(out, strings.ToLower(sum)) || !strings.Contains(out, `"a false\npositive"`) || !strings.Contains(out, "root (uid 0)") {
		t.Errorf("allow list: exit %d:\n%s", code, out)
	}
	if ok, _ := q.store.IsAllowed(context.Background(), strings.ToLower(sum)); !ok {
		t.Error("not allowed in the store")
	}
	for _, bad := range []string{"abc", strings.Repeat("g", 64), strings.Repeat("a", 65)} {
		if code, _, _ := q.run("allow", "add", bad); code != 2 {
			t.Errorf("allow add %s: exit %d, want 2", bad, code)
		}
	}
	if code, _, errOut := q.run("allow", "remove", sum); code != 0 {
		t.Errorf("allow remove: exit %d: %s", code, errOut)
	}
	if code, _, errOut := q.run("allow", "remove", sum); code != 1 || !strings.Contains(errOut, "not on the allow list") {
		t.Errorf("second allow remove: exit %d: %s", code, errOut)
	}
	if code, out, _ := q.run("allow", "list", "--json"); code != 0 || strings.TrimSpace(out) != "[]" {
		t.Errorf("allow list --json of an empty list: exit %d %q", code, out)
	}
}

// TestQuarantineCLINonRoot: anyone but root is refused, with a clear
// message, before anything is opened.
func TestQuarantineCLINonRoot(t *testing.T) {
	testutil.RequireRoot(t)
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		if testutil.InCI() {
			t.Fatal("setpriv is missing, and CI=true: install util-linux")
		}
		t.Skip("setpriv is missing")
	}
	// The binary must be reachable by nobody.
	bin := filepath.Join(t.TempDir(), "fanguard")
	data, err := os.ReadFile(binary)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{filepath.Dir(bin), filepath.Dir(filepath.Dir(bin))} {
		os.Chmod(d, 0o755)
	}
	db := filepath.Join(t.TempDir(), "q.db")
	for _, args := range [][]string{
		{"quarantine", "list"},
		{"quarantine", "show", "1"},
		{"quarantine", "restore", "1"},
		{"quarantine", "purge"},
		{"allow", "list"},
		{"allow", "add", strings.Repeat("a", 64)},
	} {
		cmd := exec.Command(setpriv, append([]string{"--reuid=65534", "--regid=65534", "--clear-groups", bin}, append(args, "--db", db)...)...)
		var errb bytes.Buffer
		cmd.Stderr = &errb
		err := cmd.Run()
		ee, ok := err.(*exec.ExitError)
		if !ok || ee.ExitCode() != 1 || !strings.Contains(errb.String(), "root only") {
			t.Errorf("%v as nobody: %v, %s", args, err, errb.String())
		}
	}
	if _, err := os.Stat(db); !os.IsNotExist(err) {
		t.Error("a refused command created the database")
	}
}
