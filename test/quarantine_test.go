package test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fanguard/fanguard/quarantine"
)

// records waits (up to wait) until the daemon's quarantine log holds n
// records and returns them, newest first.
func records(t *testing.T, d *daemon, n int, wait time.Duration) []quarantine.Record {
	t.Helper()
	store, err := quarantine.Open(filepath.Join(d.Work, "quarantine.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	deadline := time.Now().Add(wait)
	for {
		recs, err := store.List(context.Background(), quarantine.Filter{})
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) >= n || time.Now().After(deadline) {
			return recs
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestDetectionActions: EICAR opened on the protected tmpfs under each
// action: the open's answer, the record and its fields, the file's fate.
func TestDetectionActions(t *testing.T) {
	tests := []struct {
		action    string
		wantErr   error
		wantState string
		inPlace   bool
	}{
		{"quarantine", unix.EPERM, quarantine.StateQuarantined, false},
		{"deny", unix.EPERM, quarantine.StateRecorded, true},
		{"audit", nil, quarantine.StateRecorded, true},
	}
	for _, tt := range tests {
		t.Run(tt.action, func(t *testing.T) {
			d := startDaemon(t, options{quarantine: `action = "` + tt.action + `"`})
			path := filepath.Join(d.Dir, "bad\nname\xff.com")
			writeFile(t, path, eicar, 0o640)
			os.Chown(path, 1234, 5678)
			st, _ := os.Stat(path)
			_, err := os.ReadFile(path)
			if !errors.Is(err, tt.wantErr) && !(err == nil && tt.wantErr == nil) {
				t.Fatalf("open: %v, want %v", err, tt.wantErr)
			}
			recs := records(t, d, 1, 5*time.Second)
			if len(recs) != 1 {
				t.Fatalf("%d records, want 1", len(recs))
			}
			var r quarantine.Record
			deadline := time.Now().Add(5 * time.Second)
			for { // the move follows the record
				store, _ := quarantine.Open(filepath.Join(d.Work, "quarantine.db"))
				got, err := store.Get(context.Background(), recs[0].ID)
				store.Close()
				if err != nil {
					t.Fatal(err)
				}
				r = *got
				if r.State == tt.wantState || time.Now().After(deadline) {
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			if r.Action != tt.action || r.State != tt.wantState {
				t.Errorf("record action %q state %q, want %q %q", r.Action, r.State, tt.action, tt.wantState)
			}
			if string(r.Path) != path || r.Size != int64(len(eicar)) || len(r.SHA256) != 64 ||
				r.UID != 1234 || r.GID != 5678 || r.Mode&0o777 != 0o640 || !r.Mtime.Equal(st.ModTime()) ||
				r.PID != int32(os.Getpid()) || len(r.Exe) == 0 || len(r.Cmdline) == 0 || r.ProcUID != 0 || r.RulesGeneration == "" {
				t.Errorf("record fields: %+v", r)
			}
			if len(r.Matches) != 1 || r.Matches[0].Rule != "EICAR_Test_File" || len(r.Matches[0].Strings) != 1 || r.Matches[0].Strings[0].Offset != 0 {
				t.Errorf("record matches: %+v", r.Matches)
			}
			_, statErr := os.Lstat(path)
			if inPlace := statErr == nil; inPlace != tt.inPlace {
				t.Errorf("file in place: %v, want %v", inPlace, tt.inPlace)
			}
			if tt.action == "quarantine" {
				vault := filepath.Join(d.Work, "vault")
				vi, err := os.Stat(vault)
				if err != nil || vi.Mode().Perm() != 0o700 {
					t.Errorf("vault %v mode %v, want 0700", err, vi.Mode())
				}
				fi, err := os.Stat(filepath.Join(vault, r.VaultName))
				if err != nil || fi.Mode().Perm() != 0o600 {
					t.Errorf("vault file %q: %v, want mode 0600", r.VaultName, err)
				}
				if b, _ := os.ReadFile(filepath.Join(vault, r.VaultName)); strings.Contains(string(b), "EICAR") {
					t.Error("the vault holds the EICAR string in the clear")
				}
			}
			line := d.waitLog(5*time.Second, "detection", `"record": `)
			if strings.Contains(line, `"record": -1`) {
				t.Errorf("detection logged without its record: %s", line)
			}
		})
	}
}

// TestAllowList: a file detected and denied (and so cached as denied)
// opens at once once its sha256 is on the allow list and the daemon is
// told (POST /allowlist, as the command line does), and is not recorded
// again; taken off the list without a word to the daemon, it is denied
// again within a few seconds (the daemon polls the database).
func TestAllowList(t *testing.T) {
	d := startDaemon(t, options{})
	path := filepath.Join(d.Dir, "eicar.com")
	writeFile(t, path, eicar, 0o644)
	if _, err := os.ReadFile(path); !errors.Is(err, unix.EPERM) {
		t.Fatalf("open: %v, want EPERM", err)
	}
	recs := records(t, d, 1, 5*time.Second)
	if len(recs) != 1 {
		t.Fatalf("%d records", len(recs))
	}
	store, err := quarantine.Open(filepath.Join(d.Work, "quarantine.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	if err := store.Allow(context.Background(), recs[0].SHA256, "test", quarantine.Actor{Name: "root"}); err != nil {
		t.Fatal(err)
	}
	if code, body, err := controlDo(d.Control, "POST", "/allowlist"); err != nil || code != 200 || !strings.Contains(string(body), `"entries": 1`) {
		t.Fatalf("POST /allowlist: %d %s %v", code, body, err)
	}
	// The same file, cached as denied until the list changed.
	if _, err := os.ReadFile(path); err != nil {
		t.Errorf("open of an allow-listed file: %v", err)
	}
	if recs := records(t, d, 2, 300*time.Millisecond); len(recs) != 1 {
		t.Errorf("%d records after the allowed open, want still 1", len(recs))
	}
	if c := d.counters(); c["allow_listed"] < 1 {
		t.Errorf("allow_listed = %v", c["allow_listed"])
	}
	// Off the list, the daemon not told: the clean verdict cached for the
	// allowed content goes when the daemon sees the change.
	if ok, err := store.Disallow(context.Background(), recs[0].SHA256); !ok || err != nil {
		t.Fatalf("Disallow: %v, %v", ok, err)
	}
	start := time.Now()
	for {
		_, err := os.ReadFile(path)
		if errors.Is(err, unix.EPERM) {
			break
		}
		if time.Since(start) > 5*time.Second {
			t.Fatalf("still allowed %v after its sum left the allow list (%v)", time.Since(start), err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("denied again %v after its sum left the allow list", time.Since(start).Round(time.Millisecond))
}

// TestQuarantineReviewWithDaemon: a file quarantined by the running daemon
// is shown with its matched string and offset, restored with --allow to
// its path with mode, owner and mtime, and then opens without a new record.
func TestQuarantineReviewWithDaemon(t *testing.T) {
	d := startDaemon(t, options{quarantine: `action = "quarantine"`})
	path := filepath.Join(d.Dir, "sub dir", "caught\tone.com")
	os.MkdirAll(filepath.Dir(path), 0o755)
	writeFile(t, path, eicar, 0o640)
	os.Chown(path, 4321, 8765)
	mtime := time.Date(2020, 2, 3, 4, 5, 6, 7, time.UTC)
	os.Chtimes(path, mtime, mtime)
	if _, err := os.ReadFile(path); !errors.Is(err, unix.EPERM) {
		t.Fatalf("open: %v, want EPERM", err)
	}
	db := "--db=" + filepath.Join(d.Work, "quarantine.db")
	vault := "--vault=" + filepath.Join(d.Work, "vault")
	var id string
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err := os.Lstat(path); err != nil { // moved into the vault
			recs := records(t, d, 1, time.Second)
			id = strconv.FormatInt(recs[0].ID, 10)
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the detected file was not moved into the vault")
		}
	}
	code, out, errOut := run(t, "quarantine", "show", id, db, vault)
	if code != 0 || !strings.Contains(out, "EICAR_Test_File") || !strings.Contains(out, "$eicar") || !strings.Contains(out, `caught\tone.com`) {
		t.Errorf("show: exit %d\n%s\n%s", code, out, errOut)
	}
	// With the daemon's configuration, so that the command tells the
	// daemon of the new allow list before the file is back.
	code, out, errOut = run(t, "quarantine", "restore", id, "--allow", db, vault, "--config", d.Config)
	if code != 0 {
		t.Fatalf("restore: exit %d\n%s\n%s", code, out, errOut)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	sys := st.Sys().(*syscall.Stat_t)
	if st.Mode().Perm() != 0o640 || sys.Uid != 4321 || sys.Gid != 8765 || !st.ModTime().Equal(mtime) {
		t.Errorf("restored file: mode %v owner %d:%d mtime %v", st.Mode(), sys.Uid, sys.Gid, st.ModTime())
	}
	if b, err := os.ReadFile(path); err != nil || string(b) != eicar {
		t.Errorf("open after restore --allow: %q, %v", b, err)
	}
	if recs := records(t, d, 2, 300*time.Millisecond); len(recs) != 1 {
		t.Errorf("%d records after the allowed open, want 1", len(recs))
	}
}
