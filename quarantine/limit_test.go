package quarantine

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// detectSparse makes a sparse file of size bytes at path whose content
// differs from its siblings' by its last byte, and records its detection.
func (e *env) detectSparse(t *testing.T, path string, size int64, last byte) *Record {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte{last}, size-1); err != nil {
		t.Fatal(err)
	}
	f.Close()
	content, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return e.detect(t, []byte(path), string(content), 0o644)
}

func TestVaultLimit(t *testing.T) {
	ctx := context.Background()
	file := int64(headerSize + len(eicar)) // one EICAR in the vault
	tests := []struct {
		name     string
		maxBytes int64
		contents []string // detected and moved in this order
		want     []error  // what each move returns
	}{
		{"no bound", 0, []string{eicar, eicar + "2"}, []error{nil, nil}},
		{"fits exactly", file, []string{eicar}, []error{nil}},
		{"one byte over", file - 1, []string{eicar}, []error{ErrVaultLimit}},
		{"the second does not fit", file + 10, []string{eicar, eicar + "2"}, []error{nil, ErrVaultLimit}},
		{"content already in the vault costs nothing", file, []string{eicar, eicar, eicar}, []error{nil, nil, nil}},
		{"a smaller one still fits", 2*file + 1, []string{eicar + "2", eicar + "34", eicar}, []error{nil, ErrVaultLimit, nil}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			e.mover.MaxBytes = tt.maxBytes
			for i, c := range tt.contents {
				p := filepath.Join(e.dir, fmt.Sprint(i))
				r := e.detect(t, []byte(p), c, 0o644)
				err := e.mover.Quarantine(ctx, r.ID, r.Path, r.Dev, r.Ino)
				if tt.want[i] == nil && err != nil || tt.want[i] != nil && !errors.Is(err, tt.want[i]) {
					t.Fatalf("move %d: %v, want %v", i, err, tt.want[i])
				}
				got := e.get(t, r.ID)
				if tt.want[i] == nil {
					if got.State != StateQuarantined || exists(p) {
						t.Errorf("move %d: state %s, file still there: %v", i, got.State, exists(p))
					}
					continue
				}
				// Refused: the file stays, denied; the record says why.
				if got.State != StateRecorded || !exists(p) {
					t.Errorf("move %d: state %s, file there: %v; want recorded, there", i, got.State, exists(p))
				}
				h := got.History[len(got.History)-1]
				wantDetail := fmt.Sprintf(", max_bytes is %d", tt.maxBytes)
				if h.What != EventNotMoved || !strings.HasPrefix(h.Detail, "the vault would hold ") || !strings.Contains(h.Detail, wantDetail) {
					t.Errorf("move %d: last event %s %q", i, h.What, h.Detail)
				}
			}
			if n, _ := e.vault.Size(); tt.maxBytes > 0 && n > tt.maxBytes {
				t.Errorf("the vault holds %d bytes, max_bytes is %d", n, tt.maxBytes)
			}
		})
	}
}

// TestVaultLimitSparse: twenty sparse files of 4 MiB each (their content,
// transformed, is not sparse in the vault) against a 16 MiB bound: the
// vault never holds more, not even for a temporary copy.
func TestVaultLimitSparse(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	const size, limit = 4 << 20, 16 << 20
	e.mover.MaxBytes = limit
	var peak int64
	e.mover.Fault = func(point string) {
		if point == "after-vault-write" || point == "after-vault-rename" {
			n, err := e.vault.Size()
			if err != nil {
				t.Error(err)
			}
			peak = max(peak, n)
		}
	}
	moved, refused := 0, 0
	for i := range 20 {
		r := e.detectSparse(t, filepath.Join(e.dir, fmt.Sprint(i)), size, byte(i+1))
		err := e.mover.Quarantine(ctx, r.ID, r.Path, r.Dev, r.Ino)
		switch {
		case err == nil:
			moved++
		case errors.Is(err, ErrVaultLimit):
			refused++
		default:
			t.Fatal(err)
		}
		if n, _ := e.vault.Size(); n > limit {
			t.Fatalf("after move %d the vault holds %d bytes, max_bytes is %d", i, n, limit)
		}
	}
	if want := limit / (size + headerSize); moved != want || refused != 20-want {
		t.Errorf("%d moved, %d refused; want %d, %d", moved, refused, want, 20-want)
	}
	if peak > limit {
		t.Errorf("the vault held %d bytes during a move, max_bytes is %d", peak, limit)
	}
}

// TestVaultLimitOtherProcess: the daemon's mover keeps the vault's total
// without walking it on every move, and sees what another process (the
// command line) or a person changed in between.
func TestVaultLimitOtherProcess(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	file := int64(headerSize + len(eicar) + 1)
	e.mover.MaxBytes = 2 * file
	// The command line: its own Store and Vault on the same files.
	cs, err := Open(filepath.Join(e.dir, "db", "quarantine.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	cv, err := OpenVault(e.vault.Dir())
	if err != nil {
		t.Fatal(err)
	}
	cli := &Mover{Store: cs, Vault: cv}

	n := 0
	move := func() (*Record, error) {
		n++
		p := filepath.Join(e.dir, fmt.Sprint(n))
		r := e.detect(t, []byte(p), fmt.Sprintf("%s%c", eicar, 'a'+n%26), 0o644)
		return r, e.mover.Quarantine(ctx, r.ID, r.Path, r.Dev, r.Ino)
	}
	mustMove := func(want error) *Record {
		t.Helper()
		r, err := move()
		if want == nil && err != nil || want != nil && !errors.Is(err, want) {
			t.Fatalf("move %d: %v, want %v", n, err, want)
		}
		return r
	}
	r1 := mustMove(nil)
	r2 := mustMove(nil)
	mustMove(ErrVaultLimit)
	if w := e.vault.usage.walks; w != 1 {
		t.Errorf("%d walks of the vault for 3 moves, want 1", w)
	}

	// The command line deletes one: room for one more.
	if err := cli.Delete(ctx, r1.ID, Actor{Name: "test"}); err != nil {
		t.Fatal(err)
	}
	mustMove(nil)
	mustMove(ErrVaultLimit)

	// It restores one: room again.
	if err := cli.Restore(ctx, r2.ID, nil, false, Actor{Name: "test"}); err != nil {
		t.Fatal(err)
	}
	mustMove(nil)
	mustMove(ErrVaultLimit)

	// A person copies a file in by hand: no room even after a purge of
	// one record.
	if err := os.WriteFile(filepath.Join(e.vault.Dir(), "by-hand"), make([]byte, file), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.Purge(ctx, time.Time{}, 2*file, cv); err != nil {
		t.Fatal(err)
	}
	mustMove(ErrVaultLimit)

	// Many moves that change nothing else: no walk.
	walks := e.vault.usage.walks
	e.mover.MaxBytes = 1 << 30
	for range 20 {
		mustMove(nil)
	}
	if w := e.vault.usage.walks - walks; w > 1 {
		t.Errorf("%d walks of the vault for 20 moves, want at most 1", w)
	}
	used, err := e.vault.Used()
	if err != nil {
		t.Fatal(err)
	}
	if size, _ := e.vault.Size(); used != size {
		t.Errorf("cached total %d, the vault holds %d", used, size)
	}
}
