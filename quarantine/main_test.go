package quarantine

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/fanguard/fanguard/internal/testutil"
)

func TestMain(m *testing.M) {
	if point := os.Getenv(faultEnv); point != "" {
		os.Exit(faultChild(point))
	}
	os.Exit(testutil.RunCheckingFDs(m))
}

// env is a store, a vault and a mover in a temporary directory.
type env struct {
	dir   string
	store *Store
	vault *Vault
	mover *Mover
}

func newEnv(t testing.TB) *env {
	t.Helper()
	dir := t.TempDir()
	s, err := Open(dir + "/db/quarantine.db")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	v, err := OpenVault(dir + "/vault")
	if err != nil {
		t.Fatal(err)
	}
	return &env{dir: dir, store: s, vault: v, mover: &Mover{Store: s, Vault: v}}
}

// detect writes content to path and records a quarantine detection of it,
// as the daemon would.
func (e *env) detect(t testing.TB, path []byte, content string, mode os.FileMode) *Record {
	t.Helper()
	if err := os.WriteFile(string(path), []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(string(path), mode); err != nil {
		t.Fatal(err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(string(path), &st); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(content))
	r := &Record{
		Time: time.Now(), Action: ActionQuarantine, SHA256: hex.EncodeToString(sum[:]), Size: st.Size,
		Path: path, Dev: st.Dev, Ino: st.Ino, Mode: st.Mode, UID: st.Uid, GID: st.Gid,
		Mtime: time.Unix(st.Mtim.Sec, st.Mtim.Nsec), PID: 4242, Exe: []byte("/usr/bin/cat"),
		Cmdline: []byte("cat\x00" + string(path) + "\x00"), ProcUID: 1000, RulesGeneration: "gen1",
		Matches: []Match{{Rule: "EICAR_Test_File", Namespace: "eicar.yar", RuleFile: "/etc/fanguard/rules.d/eicar.yar",
			Strings: []StringMatch{{ID: "$a", Offset: 0, Data: []byte(content[:min(len(content), 8)])}}}},
	}
	id, err := e.store.Add(context.Background(), r)
	if err != nil {
		t.Fatal(err)
	}
	r.ID = id
	return r
}

// get returns record id.
func (e *env) get(t testing.TB, id int64) *Record {
	t.Helper()
	r, err := e.store.Get(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// vaultContent returns the decoded vault content of name.
func (e *env) vaultContent(t testing.TB, name string) string {
	t.Helper()
	b, err := readAll(e.vault, name)
	if err != nil {
		t.Fatalf("reading %s from the vault: %v", name, err)
	}
	return string(b)
}

func readAll(v *Vault, name string) ([]byte, error) {
	r, err := v.Open(name)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return io.ReadAll(r)
}

// timeEqual compares times by instant.
var timeEqual = cmp.Comparer(func(a, b time.Time) bool { return a.Equal(b) })

// Fault injection: the parent re-runs the test binary with these variables;
// TestMain sees faultEnv and runs faultChild instead of the tests.
const (
	faultEnv = "FANGUARD_QUARANTINE_FAULT" // the point to die at; the arguments: db vault id dev ino path
)

// faultChild quarantines one record and kills itself with SIGKILL at point.
// It exits 0 if the point was never reached, 1 on an error.
func faultChild(point string) int {
	a := os.Args[1:]
	if len(a) != 6 {
		fmt.Fprintln(os.Stderr, "want the arguments: db vault id dev ino path")
		return 1
	}
	id, _ := strconv.ParseInt(a[2], 10, 64)
	dev, _ := strconv.ParseUint(a[3], 10, 64)
	ino, _ := strconv.ParseUint(a[4], 10, 64)
	s, err := Open(a[0])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer s.Close()
	v, err := OpenVault(a[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	m := &Mover{Store: s, Vault: v, Fault: func(p string) {
		if p == point {
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {} // the signal is on its way
		}
	}}
	if err := m.Quarantine(context.Background(), id, []byte(a[5]), dev, ino); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}
