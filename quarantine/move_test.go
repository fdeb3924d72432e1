package quarantine

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fanguard/fanguard/internal/testutil"
)

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

func historyWhat(r *Record) []string {
	var w []string
	for _, e := range r.History {
		w = append(w, e.What)
	}
	return w
}

func TestQuarantine(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	p := filepath.Join(e.dir, "eicar.com")
	r := e.detect(t, []byte(p), eicar, 0o644)
	if err := e.mover.Quarantine(ctx, r.ID, r.Path, r.Dev, r.Ino); err != nil {
		t.Fatal(err)
	}
	if exists(p) {
		t.Error("the original is still there")
	}
	got := e.get(t, r.ID)
	if got.State != StateQuarantined || got.VaultName != VaultName(r.SHA256) {
		t.Errorf("state %q, vault name %q", got.State, got.VaultName)
	}
	if w := historyWhat(got); len(w) != 1 || w[0] != EventQuarantined {
		t.Errorf("history %v", w)
	}
	if c := e.vaultContent(t, got.VaultName); c != eicar {
		t.Errorf("vault content %q", c)
	}
	// Twice: the record is no longer recorded.
	if err := e.mover.Quarantine(ctx, r.ID, r.Path, r.Dev, r.Ino); !errors.Is(err, ErrState) {
		t.Errorf("second Quarantine = %v, want ErrState", err)
	}
}

func TestQuarantineGivesUp(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name  string
		setup func(t *testing.T, e *env, r *Record) // after the detection, before the move
	}{
		{"replaced", func(t *testing.T, e *env, r *Record) {
			// Renamed away, so that the new file gets another inode.
			os.Rename(string(r.Path), string(r.Path)+".old")
			writeFile(t, string(r.Path), eicar)
		}},
		{"gone", func(t *testing.T, e *env, r *Record) { os.Remove(string(r.Path)) }},
		{"content changed", func(t *testing.T, e *env, r *Record) {
			f, _ := os.OpenFile(string(r.Path), os.O_WRONLY|os.O_APPEND, 0)
			f.WriteString("more")
			f.Close()
		}},
		{"symlink instead", func(t *testing.T, e *env, r *Record) {
			os.Remove(string(r.Path))
			os.Symlink("/etc/passwd", string(r.Path))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			p := filepath.Join(e.dir, "x.com")
			r := e.detect(t, []byte(p), eicar, 0o644)
			tt.setup(t, e, r)
			before, _ := os.ReadFile(p)
			err := e.mover.Quarantine(ctx, r.ID, r.Path, r.Dev, r.Ino)
			if !errors.Is(err, ErrChanged) {
				t.Errorf("Quarantine = %v, want ErrChanged", err)
			}
			if after, _ := os.ReadFile(p); string(after) != string(before) {
				t.Error("the file at the path was touched")
			}
			got := e.get(t, r.ID)
			if got.State != StateRecorded || got.VaultName != "" {
				t.Errorf("state %q vault %q, want recorded", got.State, got.VaultName)
			}
			if w := historyWhat(got); len(w) != 1 || w[0] != EventNotMoved {
				t.Errorf("history %v", w)
			}
			if n, _ := e.vault.Size(); n != 0 {
				t.Errorf("the vault holds %d bytes", n)
			}
		})
	}
}

func writeFile(t *testing.T, p, content string) {
	t.Helper()
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

var faultPoints = []string{"after-record", "after-vault-write", "after-vault-rename", "after-state", "after-unlink"}

// TestFaultInjection kills a process at each point of a move and checks
// that Recover leaves the file in the vault with its record, the database
// intact.
func TestFaultInjection(t *testing.T) {
	for _, point := range append(faultPoints, "none") {
		t.Run(point, func(t *testing.T) {
			e := newEnv(t)
			ctx := context.Background()
			p := filepath.Join(e.dir, "dir with space", "mal\nware\xff.com")
			os.Mkdir(filepath.Dir(p), 0o755)
			content := eicar + strings.Repeat("padding", 10000)
			r := e.detect(t, []byte(p), content, 0o640)
			// An earlier record with the same content, already quarantined
			// elsewhere, must keep its vault file whatever happens.
			dbPath := filepath.Join(e.dir, "db", "quarantine.db")

			cmd := exec.Command(os.Args[0], dbPath, e.vault.Dir(), fmt.Sprint(r.ID), fmt.Sprint(r.Dev), fmt.Sprint(r.Ino), p)
			cmd.Env = append(os.Environ(), faultEnv+"="+point)
			out, err := cmd.CombinedOutput()
			var ee *exec.ExitError
			switch {
			case point == "none":
				if err != nil {
					t.Fatalf("child: %v\n%s", err, out)
				}
			case errors.As(err, &ee):
				if ws := ee.Sys().(syscall.WaitStatus); !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
					t.Fatalf("child ended with %v, want SIGKILL\n%s", err, out)
				}
			default:
				t.Fatalf("child: %v (want SIGKILL)\n%s", err, out)
			}

			// The state right after the crash: never lost.
			mid := e.get(t, r.ID)
			inPlace := false
			if c, err := os.ReadFile(p); err == nil {
				if string(c) != content {
					t.Fatal("after the crash the file at its path has other content")
				}
				inPlace = true
			}
			inVault := false
			if c, err := readAll(e.vault, VaultName(r.SHA256)); err == nil && string(c) == content {
				inVault = true
			}
			if !inPlace && !inVault {
				t.Fatalf("after the crash (state %s) the file is neither at its path nor in the vault", mid.State)
			}

			if err := e.mover.Recover(ctx); err != nil {
				t.Fatal(err)
			}
			if err := e.store.IntegrityCheck(ctx); err != nil {
				t.Fatal(err)
			}
			got := e.get(t, r.ID)
			// Recover finishes every interrupted move of a file still in
			// place: all end quarantined.
			if got.State != StateQuarantined || got.VaultName != VaultName(r.SHA256) {
				t.Errorf("state %q, vault %q after Recover; history %+v", got.State, got.VaultName, got.History)
			}
			if exists(p) {
				t.Error("the original is still at its path")
			}
			if c := e.vaultContent(t, got.VaultName); c != content {
				t.Error("the vault content differs")
			}
			if w := historyWhat(got); w[len(w)-1] != EventQuarantined {
				t.Errorf("history %v", w)
			}
			des, _ := os.ReadDir(e.vault.Dir())
			if len(des) != 1 {
				t.Errorf("%d files in the vault, want 1", len(des))
			}
			// A second Recover has nothing to do.
			if err := e.mover.Recover(ctx); err != nil {
				t.Fatal(err)
			}
			if again := e.get(t, r.ID); len(again.History) != len(got.History) {
				t.Error("a second Recover changed the history")
			}
		})
	}
}

// TestRecoverCases sets up interrupted moves by hand.
func TestRecoverCases(t *testing.T) {
	ctx := context.Background()
	t.Run("gone and not in the vault", func(t *testing.T) {
		e := newEnv(t)
		p := filepath.Join(e.dir, "x")
		r := e.detect(t, []byte(p), eicar, 0o644)
		e.store.SetState(ctx, r.ID, StateQuarantining, "")
		os.Remove(p)
		if err := e.mover.Recover(ctx); err != nil {
			t.Fatal(err)
		}
		if got := e.get(t, r.ID); got.State != StateRecorded {
			t.Errorf("state %q, want recorded", got.State)
		}
	})
	t.Run("in the vault, another file at the path", func(t *testing.T) {
		e := newEnv(t)
		p := filepath.Join(e.dir, "x")
		r := e.detect(t, []byte(p), eicar, 0o644)
		f, _ := os.Open(p)
		e.vault.Put(f, r.SHA256)
		f.Close()
		e.store.SetState(ctx, r.ID, StateQuarantining, "")
		os.Remove(p)
		writeFile(t, p, "innocent")
		if err := e.mover.Recover(ctx); err != nil {
			t.Fatal(err)
		}
		if got := e.get(t, r.ID); got.State != StateQuarantined {
			t.Errorf("state %q, want quarantined", got.State)
		}
		if b, _ := os.ReadFile(p); string(b) != "innocent" {
			t.Error("the new file at the path was touched")
		}
	})
	t.Run("orphan vault file", func(t *testing.T) {
		e := newEnv(t)
		kept := e.detect(t, []byte(filepath.Join(e.dir, "kept")), eicar, 0o644)
		if err := e.mover.Quarantine(ctx, kept.ID, kept.Path, kept.Dev, kept.Ino); err != nil {
			t.Fatal(err)
		}
		orphan := []byte("no record needs me")
		name, err := e.vault.Put(openTemp(t, orphan), sumOf(orphan))
		if err != nil {
			t.Fatal(err)
		}
		if err := e.mover.Recover(ctx); err != nil {
			t.Fatal(err)
		}
		if exists(filepath.Join(e.vault.Dir(), name)) {
			t.Error("the orphan is still in the vault")
		}
		if c := e.vaultContent(t, VaultName(kept.SHA256)); c != eicar {
			t.Error("the needed vault file went")
		}
	})
	t.Run("half-written vault file", func(t *testing.T) {
		e := newEnv(t)
		tmp := filepath.Join(e.vault.Dir(), tempPrefix+"123")
		writeFile(t, tmp, "half")
		if err := e.mover.Recover(ctx); err != nil {
			t.Fatal(err)
		}
		if exists(tmp) {
			t.Error("the temporary file is still there")
		}
	})
}

func TestRestore(t *testing.T) {
	ctx := context.Background()
	root := Actor{UID: 0, Name: "root"}
	quarantined := func(t *testing.T, name string, mode os.FileMode) (*env, *Record) {
		e := newEnv(t)
		p := filepath.Join(e.dir, name)
		r := e.detect(t, []byte(p), eicar, mode)
		if os.Geteuid() == 0 {
			if err := os.Chown(p, 65534, 65533); err != nil {
				t.Fatal(err)
			}
		}
		mtime := time.Date(2020, 5, 6, 7, 8, 9, 123456789, time.UTC)
		if err := os.Chtimes(p, mtime, mtime); err != nil {
			t.Fatal(err)
		}
		var st syscall.Stat_t
		syscall.Stat(p, &st)
		// The record holds the detected metadata.
		e.store.db.Exec(`UPDATE records SET uid = ?, gid = ?, mtime = ?, mode = ? WHERE id = ?`, st.Uid, st.Gid, mtime.UnixNano(), st.Mode, r.ID)
		if err := e.mover.Quarantine(ctx, r.ID, r.Path, r.Dev, r.Ino); err != nil {
			t.Fatal(err)
		}
		return e, e.get(t, r.ID)
	}
	check := func(t *testing.T, r *Record, p string) {
		t.Helper()
		b, err := os.ReadFile(p)
		if err != nil || string(b) != eicar {
			t.Fatalf("restored content %q, %v", b, err)
		}
		var st syscall.Stat_t
		syscall.Lstat(p, &st)
		if st.Mode != r.Mode || st.Uid != r.UID || st.Gid != r.GID || time.Unix(st.Mtim.Sec, st.Mtim.Nsec) != r.Mtime {
			t.Errorf("restored mode %o uid %d gid %d mtime %v; want %o %d %d %v",
				st.Mode, st.Uid, st.Gid, time.Unix(st.Mtim.Sec, st.Mtim.Nsec), r.Mode, r.UID, r.GID, r.Mtime)
		}
	}

	t.Run("original path", func(t *testing.T) {
		testutil.RequireRoot(t) // the owner
		e, r := quarantined(t, "setuid", 0o4751)
		if err := e.mover.Restore(ctx, r.ID, nil, false, root); err != nil {
			t.Fatal(err)
		}
		check(t, r, string(r.Path))
		got := e.get(t, r.ID)
		if got.State != StateRestored {
			t.Errorf("state %q", got.State)
		}
		if w := historyWhat(got); w[len(w)-1] != EventRestored || got.History[len(w)-1].By != root {
			t.Errorf("history %+v", got.History)
		}
		if n, _ := e.vault.Size(); n != 0 {
			t.Errorf("the vault still holds %d bytes", n)
		}
		if err := e.mover.Restore(ctx, r.ID, nil, true, root); !errors.Is(err, ErrState) {
			t.Errorf("second Restore = %v, want ErrState", err)
		}
		des, _ := os.ReadDir(e.dir)
		for _, de := range des {
			if strings.HasPrefix(de.Name(), ".fanguard-restore") {
				t.Errorf("temporary file %s left", de.Name())
			}
		}
	})
	t.Run("newline and invalid UTF-8", func(t *testing.T) {
		e, r := quarantined(t, "new\nline\xff\x01.com", 0o600)
		if err := e.mover.Restore(ctx, r.ID, nil, false, root); err != nil {
			t.Fatal(err)
		}
		check(t, r, string(r.Path))
	})
	t.Run("to", func(t *testing.T) {
		e, r := quarantined(t, "a", 0o640)
		to := filepath.Join(e.dir, "elsewhere")
		if err := e.mover.Restore(ctx, r.ID, []byte(to), false, root); err != nil {
			t.Fatal(err)
		}
		check(t, r, to)
		if exists(string(r.Path)) {
			t.Error("restored to the original path too")
		}
	})
	t.Run("refuses to overwrite", func(t *testing.T) {
		e, r := quarantined(t, "a", 0o644)
		writeFile(t, string(r.Path), "new file")
		if err := e.mover.Restore(ctx, r.ID, nil, false, root); !errors.Is(err, ErrExist) {
			t.Errorf("Restore over a file = %v, want ErrExist", err)
		}
		if b, _ := os.ReadFile(string(r.Path)); string(b) != "new file" {
			t.Error("the existing file was overwritten")
		}
		if got := e.get(t, r.ID); got.State != StateQuarantined {
			t.Errorf("state %q after a refusal", got.State)
		}
		if err := e.mover.Restore(ctx, r.ID, nil, true, root); err != nil {
			t.Fatalf("forced: %v", err)
		}
		check(t, r, string(r.Path))
	})
	t.Run("refuses a symlinked parent", func(t *testing.T) {
		e, r := quarantined(t, "a", 0o644)
		outside := t.TempDir()
		link := filepath.Join(e.dir, "link")
		os.Symlink(outside, link)
		for _, to := range []string{filepath.Join(link, "a"), filepath.Join(link, "sub", "..", "a"), link} {
			for _, force := range []bool{false, true} {
				if err := e.mover.Restore(ctx, r.ID, []byte(to), force, root); !errors.Is(err, ErrSymlink) {
					t.Errorf("Restore to %s (force %v) = %v, want ErrSymlink", to, force, err)
				}
			}
		}
		if des, _ := os.ReadDir(outside); len(des) != 0 {
			t.Errorf("written through the symlink: %v", des)
		}
		if got := e.get(t, r.ID); got.State != StateQuarantined {
			t.Errorf("state %q after a refusal", got.State)
		}
	})
	t.Run("refuses relative and missing directories", func(t *testing.T) {
		e, r := quarantined(t, "a", 0o644)
		for _, to := range []string{"relative/a", filepath.Join(e.dir, "missing", "a"), "/"} {
			if err := e.mover.Restore(ctx, r.ID, []byte(to), false, root); err == nil {
				t.Errorf("Restore to %q accepted", to)
			}
		}
	})
	t.Run("walk without openat2", func(t *testing.T) {
		e := newEnv(t)
		real := filepath.Join(e.dir, "real")
		os.Mkdir(real, 0o755)
		os.Symlink(real, filepath.Join(e.dir, "link"))
		fd, err := walkDir(real, syscall.O_RDONLY)
		if err != nil {
			t.Fatal(err)
		}
		syscall.Close(fd)
		if _, err := walkDir(filepath.Join(e.dir, "link"), syscall.O_RDONLY); !errors.Is(err, ErrSymlink) {
			t.Errorf("walkDir through a symlink = %v, want ErrSymlink", err)
		}
	})
}

func TestDeleteSharedContent(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	var recs []*Record
	for _, n := range []string{"a", "b"} {
		r := e.detect(t, []byte(filepath.Join(e.dir, n)), eicar, 0o644)
		if err := e.mover.Quarantine(ctx, r.ID, r.Path, r.Dev, r.Ino); err != nil {
			t.Fatal(err)
		}
		recs = append(recs, r)
	}
	name := VaultName(recs[0].SHA256)
	by := Actor{UID: 0, Name: "root"}
	if err := e.mover.Delete(ctx, recs[0].ID, by); err != nil {
		t.Fatal(err)
	}
	if !exists(filepath.Join(e.vault.Dir(), name)) {
		t.Fatal("the shared vault file went with the first record")
	}
	if got := e.get(t, recs[0].ID); got.State != StateDeleted || historyWhat(got)[1] != EventDeleted {
		t.Errorf("state %q history %v", got.State, historyWhat(got))
	}
	if err := e.mover.Delete(ctx, recs[0].ID, by); !errors.Is(err, ErrState) {
		t.Errorf("second Delete = %v, want ErrState", err)
	}
	// The second record still restores.
	if err := e.mover.Restore(ctx, recs[1].ID, nil, false, by); err != nil {
		t.Fatal(err)
	}
	if exists(filepath.Join(e.vault.Dir(), name)) {
		t.Error("the vault file outlived its last record")
	}
	if err := e.mover.Delete(ctx, 999, by); !errors.Is(err, ErrNotFound) {
		t.Errorf("Delete(999) = %v, want ErrNotFound", err)
	}
}

func TestPurge(t *testing.T) {
	ctx := context.Background()
	now := time.Now()
	// Five quarantined records, 10 days apart, oldest first; records 1 and
	// 3 share content.
	setup := func(t *testing.T) (*env, []int64) {
		e := newEnv(t)
		contents := []string{"c0", "c1", "c2", "c1", "c4"}
		var ids []int64
		for i, c := range contents {
			content := eicar + strings.Repeat(c, 500)
			r := e.detect(t, []byte(filepath.Join(e.dir, fmt.Sprint(i))), content, 0o644)
			if err := e.mover.Quarantine(ctx, r.ID, r.Path, r.Dev, r.Ino); err != nil {
				t.Fatal(err)
			}
			e.store.db.Exec(`UPDATE records SET time = ? WHERE id = ?`, now.Add(-time.Duration(50-10*i)*24*time.Hour).UnixNano(), r.ID)
			ids = append(ids, r.ID)
		}
		// An audit record, old: left alone.
		id, _ := e.store.Add(ctx, &Record{Time: now.Add(-1000 * time.Hour), Action: ActionAudit})
		ids = append(ids, id)
		return e, ids
	}
	states := func(e *env, ids []int64) []string {
		var s []string
		for _, id := range ids {
			s = append(s, e.get(t, id).State)
		}
		return s
	}
	Q, D, R := StateQuarantined, StateDeleted, StateRecorded
	fileSize := int64(headerSize + len(eicar) + 1000)
	tests := []struct {
		name      string
		olderThan time.Duration // 0: none
		maxBytes  int64
		want      []string
		wantRes   PurgeResult
	}{
		{"nothing", 0, 0, []string{Q, Q, Q, Q, Q, R}, PurgeResult{}},
		{"by age", 25 * 24 * time.Hour, 0, []string{D, D, D, Q, Q, R}, PurgeResult{Records: 3, Files: 2, Bytes: 2 * fileSize}},
		{"by size", 0, 2 * fileSize, []string{D, D, D, Q, Q, R}, PurgeResult{Records: 3, Files: 2, Bytes: 2 * fileSize}},
		{"by size, all", 0, 1, []string{D, D, D, D, D, R}, PurgeResult{Records: 5, Files: 4, Bytes: 4 * fileSize}},
		{"both", 45 * 24 * time.Hour, 3 * fileSize, []string{D, Q, Q, Q, Q, R}, PurgeResult{Records: 1, Files: 1, Bytes: fileSize}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, ids := setup(t)
			var cutoff time.Time
			if tt.olderThan > 0 {
				cutoff = now.Add(-tt.olderThan)
			}
			res, err := e.store.Purge(ctx, cutoff, tt.maxBytes, e.vault)
			if err != nil {
				t.Fatal(err)
			}
			if res != tt.wantRes {
				t.Errorf("result %+v, want %+v", res, tt.wantRes)
			}
			got := states(e, ids)
			if strings.Join(got, ",") != strings.Join(tt.want, ",") {
				t.Errorf("states %v, want %v", got, tt.want)
			}
			for i, id := range ids {
				r := e.get(t, id)
				if got[i] == D && historyWhat(r)[len(r.History)-1] != EventPurged {
					t.Errorf("record %d history %v", id, historyWhat(r))
				}
				if got[i] == Q {
					if _, err := readAll(e.vault, r.VaultName); err != nil {
						t.Errorf("record %d lost its content: %v", id, err)
					}
				}
			}
		})
	}
}

// TestConcurrentMovesAndRemovals: moves of files with the same content race
// deletions of other records with that content; no quarantined record may
// lose its vault file.
func TestConcurrentMovesAndRemovals(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	const n = 8
	var first, rest []*Record
	for i := 0; i < 2*n; i++ {
		r := e.detect(t, []byte(filepath.Join(e.dir, fmt.Sprint(i))), eicar, 0o644)
		if i < n {
			if err := e.mover.Quarantine(ctx, r.ID, r.Path, r.Dev, r.Ino); err != nil {
				t.Fatal(err)
			}
			first = append(first, r)
		} else {
			rest = append(rest, r)
		}
	}
	errs := make(chan error, 2*n)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for _, r := range first {
			errs <- e.mover.Delete(ctx, r.ID, Actor{Name: "test"})
		}
	}()
	for _, r := range rest {
		errs <- e.mover.Quarantine(ctx, r.ID, r.Path, r.Dev, r.Ino)
	}
	<-done
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	for _, r := range rest {
		got := e.get(t, r.ID)
		if got.State != StateQuarantined {
			t.Errorf("record %d: %s", r.ID, got.State)
			continue
		}
		if c := e.vaultContent(t, got.VaultName); c != eicar {
			t.Errorf("record %d lost its content", r.ID)
		}
	}
}
