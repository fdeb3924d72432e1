package feeds

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// writeFiles writes files (slash path relative to dir → content) under dir,
// making their directories.
func writeFiles(t testing.TB, dir string, files map[string]string) {
	t.Helper()
	for name, body := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// storeEntries returns the names in dir, sorted; none when it is missing.
func storeEntries(t testing.TB, dir string) []string {
	t.Helper()
	des, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	var names []string
	for _, de := range des {
		names = append(names, de.Name())
	}
	return names
}

// readLink returns the target of the feed's link, failing t when it is not
// a link.
func readLink(t testing.TB, dir, name string) string {
	t.Helper()
	target, err := os.Readlink(filepath.Join(dir, name))
	if err != nil {
		t.Fatalf("feed %s: %v", name, err)
	}
	return target
}

// installVersions makes version directories of feed name, each holding a
// file named after it, and a state with current and previous (either may
// be ""), the link pointing at current.
func installVersions(t *testing.T, dir, name, current, previous string) store {
	t.Helper()
	s := store{dir}
	st := State{Feed: name, Source: "/src"}
	for _, v := range []struct {
		id  string
		ptr **Version
	}{{current, &st.Current}, {previous, &st.Previous}} {
		if v.id == "" {
			continue
		}
		writeFiles(t, s.feedDir(name), map[string]string{v.id + "/" + v.id + ".yar": "rule r_" + v.id + " { condition: false }\n"})
		*v.ptr = &Version{ID: v.id, Dir: v.id, Files: 1, Rules: 1}
	}
	if err := s.writeState(st); err != nil {
		t.Fatal(err)
	}
	if current != "" {
		if err := s.swap(name, current); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

func TestSwap(t *testing.T) {
	dir := t.TempDir()
	s := store{dir}
	writeFiles(t, s.feedDir("f"), map[string]string{"v1/a.yar": "one", "v2/a.yar": "two"})
	for _, v := range []string{"v1", "v2", "v1"} {
		if err := s.swap("f", v); err != nil {
			t.Fatalf("swap to %s: %v", v, err)
		}
		if got, want := readLink(t, dir, "f"), filepath.Join(".store", "f", v); got != want {
			t.Errorf("after swap to %s the link points at %q, want %q (relative)", v, got, want)
		}
		data, err := os.ReadFile(filepath.Join(dir, "f", "a.yar"))
		if err != nil {
			t.Fatal(err)
		}
		if want := map[string]string{"v1": "one", "v2": "two"}[v]; string(data) != want {
			t.Errorf("after swap to %s f/a.yar holds %q, want %q", v, data, want)
		}
	}
	if got := storeEntries(t, filepath.Join(dir, storeDir)); !slices.Equal(got, []string{"f"}) {
		t.Errorf(".store holds %q after the swaps, want only the feed's directory (no temporary link)", got)
	}

	// A reader never finds the link missing while it is swapped.
	var stop atomic.Bool
	var missing atomic.Int32
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for !stop.Load() {
			if _, err := os.Stat(filepath.Join(dir, "f", "a.yar")); err != nil {
				missing.Add(1)
			}
		}
	}()
	for i := range 300 {
		if err := s.swap("f", []string{"v1", "v2"}[i%2]); err != nil {
			t.Fatal(err)
		}
	}
	stop.Store(true)
	wg.Wait()
	if n := missing.Load(); n > 0 {
		t.Errorf("a reader found f/a.yar missing %d times during swaps", n)
	}

	// What is not a link is not replaced.
	for _, mk := range []struct {
		name string
		make func(p string) error
	}{
		{"dir", func(p string) error { return os.Mkdir(p, 0o755) }},
		{"file", func(p string) error { return os.WriteFile(p, []byte("mine"), 0o644) }},
	} {
		t.Run(mk.name, func(t *testing.T) {
			name := "own" + mk.name
			p := filepath.Join(dir, name)
			if err := mk.make(p); err != nil {
				t.Fatal(err)
			}
			writeFiles(t, s.feedDir(name), map[string]string{"v1/a.yar": "x"})
			err := s.swap(name, "v1")
			if err == nil || !strings.Contains(err.Error(), p+" is not a symbolic link made by fanguard: move it away") {
				t.Fatalf("swap over a %s: err = %v, want one naming %s as not a link", mk.name, err, p)
			}
			fi, err := os.Lstat(p)
			if err != nil || fi.Mode()&fs.ModeSymlink != 0 {
				t.Errorf("the %s at %s was replaced: %v, %v", mk.name, p, fi.Mode(), err)
			}
		})
	}
}

func TestStateRoundTrip(t *testing.T) {
	dir := t.TempDir()
	s := store{dir}
	at := time.Date(2026, 3, 4, 5, 6, 7, 8, time.UTC)
	st := State{
		Feed: "f", Source: "https://example.org/r.zip", ETag: `"e1"`, LastModified: "Tue, 03 Mar 2026 00:00:00 GMT",
		Checked: at, LastAttempt: at.Add(time.Hour), LastError: "something",
		Current: &Version{ID: "aa", Selection: "s1", Dir: "aa.1", Installed: at, Files: 2, Rules: 3,
			HeldBack: []HeldRule{{File: "x.yar", Rule: "r", Reason: "matched a trusted file", Match: "/usr/bin/ls"}},
			Gate:     GateReport{Seconds: 1.5, CompileSecs: 0.5, Sampled: 10, SampleBytes: 1000, CostNanos: 1234, Matches: 1}},
		Previous: &Version{ID: "bb", Dir: "bb.1", Installed: at.Add(-time.Hour)},
		Rejected: []string{"cc"},
	}
	if err := s.writeState(st); err != nil {
		t.Fatal(err)
	}
	got, err := ReadState(dir, "f")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(st, got); diff != "" {
		t.Errorf("state after a round trip (-wrote +read):\n%s", diff)
	}
	p := filepath.Join(dir, storeDir, "f", stateFile)
	if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("%s: %v, %v; want mode 0644", p, fi, err)
	}
	if got := storeEntries(t, s.feedDir("f")); !slices.Equal(got, []string{stateFile}) {
		t.Errorf("the feed's directory holds %q, want only %s (no temporary file)", got, stateFile)
	}

	// The feed is the one asked for, whatever the file says.
	writeFiles(t, s.feedDir("g"), map[string]string{stateFile: `{"feed": "other", "source": "/x"}`})
	got, err = ReadState(dir, "g")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(State{Feed: "g", Source: "/x"}, got); diff != "" {
		t.Errorf("state of g (-want +got):\n%s", diff)
	}

	tests := []struct {
		name    string
		files   map[string]string
		want    State
		wantErr string
	}{
		{"missing", nil, State{Feed: "n"}, ""},
		{"missing with the store", map[string]string{"other/state.json": "{}"}, State{Feed: "n"}, ""},
		{"corrupt", map[string]string{"n/state.json": `{"feed": "n", "current": {`}, State{}, filepath.Join(dir, "t", storeDir, "n", stateFile)},
		{"wrong type", map[string]string{"n/state.json": `{"checked": 5}`}, State{}, filepath.Join(dir, "t", storeDir, "n", stateFile)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := filepath.Join(dir, "t")
			os.RemoveAll(d)
			writeFiles(t, filepath.Join(d, storeDir), tt.files)
			got, err := ReadState(d, "n")
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), "reading feed state "+tt.wantErr+": ") {
					t.Fatalf("err = %v, want one naming %s", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestPrune(t *testing.T) {
	dir := t.TempDir()
	s := store{dir}
	writeFiles(t, s.feedDir("f"), map[string]string{
		"v1/a.yar": "1", "v2/a.yar": "2", "v3/a.yar": "3", ".staging-1/tree/a.yar": "s",
		stateFile: "{}", ".state-123": "partial",
	})
	writeFiles(t, s.feedDir("g"), map[string]string{"w1/a.yar": "1"})
	s.prune(State{Feed: "f", Current: &Version{ID: "3", Dir: "v3"}, Previous: &Version{ID: "2", Dir: "v2"}})
	if diff := cmp.Diff([]string{".state-123", stateFile, "v2", "v3"}, storeEntries(t, s.feedDir("f"))); diff != "" {
		t.Errorf("after prune (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"w1"}, storeEntries(t, s.feedDir("g"))); diff != "" {
		t.Errorf("another feed's directory after prune (-want +got):\n%s", diff)
	}
	s.prune(State{Feed: "f", Current: &Version{ID: "3", Dir: "v3"}})
	if diff := cmp.Diff([]string{".state-123", stateFile, "v3"}, storeEntries(t, s.feedDir("f"))); diff != "" {
		t.Errorf("after prune without a previous version (-want +got):\n%s", diff)
	}
}

func TestLock(t *testing.T) {
	dir := t.TempDir()
	s := store{dir}
	unlock, err := s.lock(0)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = s.lock(300 * time.Millisecond)
	waited := time.Since(start)
	lockFile := filepath.Join(dir, storeDir, "lock")
	if err == nil || !strings.Contains(err.Error(), "another update or rollback holds "+lockFile) {
		t.Errorf("second lock: err = %v, want one saying another update holds %s", err, lockFile)
	}
	if waited < 300*time.Millisecond {
		t.Errorf("second lock gave up after %v, want it to wait 300ms", waited)
	}
	// Rollback waits for the same lock; released during the wait, the
	// lock is taken.
	go func() {
		time.Sleep(200 * time.Millisecond)
		unlock()
	}()
	start = time.Now()
	unlock2, err := s.lock(5 * time.Second)
	if err != nil {
		t.Fatalf("lock released during the wait: %v", err)
	}
	if waited := time.Since(start); waited < 150*time.Millisecond {
		t.Errorf("lock taken after %v, while the first holder kept it 200ms", waited)
	}
	unlock2()
	unlock3, err := s.lock(0)
	if err != nil {
		t.Fatalf("lock after both released: %v", err)
	}
	unlock3()
}

func TestRollback(t *testing.T) {
	dir := t.TempDir()
	installVersions(t, dir, "f", "new", "old")
	st, err := Rollback(dir, "f", "false positive on /usr/bin/ls")
	if err != nil {
		t.Fatal(err)
	}
	if got := readLink(t, dir, "f"); got != filepath.Join(storeDir, "f", "old") {
		t.Errorf("after a rollback the link points at %q, want the previous version", got)
	}
	want := State{Feed: "f", Source: "/src", LastError: "rolled back: false positive on /usr/bin/ls",
		Current:  &Version{ID: "old", Dir: "old", Files: 1, Rules: 1},
		Previous: &Version{ID: "new", Dir: "new", Files: 1, Rules: 1},
		Rejected: []string{"new"}}
	if diff := cmp.Diff(want, st); diff != "" {
		t.Errorf("state after a rollback (-want +got):\n%s", diff)
	}
	onDisk, err := ReadState(dir, "f")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(st, onDisk); diff != "" {
		t.Errorf("state on disk differs from the one returned (-returned +disk):\n%s", diff)
	}

	// A second rollback goes back: the version put back in force is not
	// rejected any more, the one left is.
	st, err = Rollback(dir, "f", "")
	if err != nil {
		t.Fatal(err)
	}
	if got := readLink(t, dir, "f"); got != filepath.Join(storeDir, "f", "new") {
		t.Errorf("after a second rollback the link points at %q, want the first version again", got)
	}
	want.Current, want.Previous = want.Previous, want.Current
	want.Rejected = []string{"old"}
	if diff := cmp.Diff(want, st); diff != "" {
		t.Errorf("state after a second rollback (-want +got):\n%s", diff)
	}

	t.Run("no previous", func(t *testing.T) {
		for _, name := range []string{"only", "never"} {
			if name == "only" {
				installVersions(t, dir, name, "v1", "")
			}
			_, err := Rollback(dir, name, "")
			if !errors.Is(err, ErrNoPrevious) || !strings.Contains(err.Error(), "rolling back feed "+name) {
				t.Errorf("feed %s: err = %v, want ErrNoPrevious naming the feed", name, err)
			}
		}
		if got := readLink(t, dir, "only"); got != filepath.Join(storeDir, "only", "v1") {
			t.Errorf("link moved to %q", got)
		}
	})

	t.Run("previous missing", func(t *testing.T) {
		s := installVersions(t, dir, "gone", "v2", "v1")
		before, err := s.readState("gone")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.RemoveAll(filepath.Join(s.feedDir("gone"), "v1")); err != nil {
			t.Fatal(err)
		}
		_, err = Rollback(dir, "gone", "")
		if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "rolling back feed gone: previous version v1") {
			t.Errorf("err = %v, want a not-exist error naming the feed and the previous version", err)
		}
		if got := readLink(t, dir, "gone"); got != filepath.Join(storeDir, "gone", "v2") {
			t.Errorf("link moved to %q", got)
		}
		after, err := s.readState("gone")
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(before, after); diff != "" {
			t.Errorf("state changed by a failed rollback (-before +after):\n%s", diff)
		}
	})
}

func TestBroken(t *testing.T) {
	dir := t.TempDir()
	s := installVersions(t, dir, "ok", "v1", "")
	installVersions(t, dir, "nolink", "v1", "")
	os.Remove(filepath.Join(dir, "nolink"))
	installVersions(t, dir, "dangling", "v1", "")
	os.RemoveAll(filepath.Join(s.feedDir("dangling"), "v1"))
	installVersions(t, dir, "file", "v1", "")
	writeFiles(t, s.feedDir("file"), map[string]string{"plain": "x"})
	if err := s.swap("file", "plain"); err != nil {
		t.Fatal(err)
	}
	writeFiles(t, s.feedDir("corrupt"), map[string]string{stateFile: "{"})

	got := Broken(dir, []string{"ok", "never", "nolink", "dangling", "file", "corrupt"})
	want := map[string]string{
		"nolink":   filepath.Join(dir, "nolink"),
		"dangling": filepath.Join(dir, "dangling"),
		"file":     "not a directory",
		"corrupt":  filepath.Join(s.feedDir("corrupt"), stateFile),
	}
	if diff := cmp.Diff(sortedKeys(want), sortedKeys(got)); diff != "" {
		t.Fatalf("broken feeds (-want +got):\n%s\n%v", diff, got)
	}
	for name, w := range want {
		if !strings.Contains(got[name], w) {
			t.Errorf("feed %s: why = %q, want it to contain %q", name, got[name], w)
		}
	}
}

func TestFeedOf(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "feeds")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	alias := filepath.Join(root, "alias")
	if err := os.Symlink(dir, alias); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		dir, path, want string
	}{
		{dir, filepath.Join(dir, "rl/x.yar"), "rl"},
		{dir, filepath.Join(dir, "rl/sub/dir/x.yar"), "rl"},
		{dir, filepath.Join(dir, ".store/rl/0123.20260101T000000Z/x.yar"), "rl"},
		{dir, filepath.Join(dir, ".store/rl/0123.20260101T000000Z/a/b.yar"), "rl"},
		{dir, filepath.Join(dir, ".store/rl"), ""},
		{dir, filepath.Join(dir, ".store/.gate-1/rl/x.yar"), ""},
		{dir, filepath.Join(dir, ".hidden/x.yar"), ""},
		{dir, filepath.Join(dir, "top.yar"), ""},
		{dir, dir, ""},
		{dir, dir + "/", ""},
		{dir, filepath.Join(root, "other/rl/x.yar"), ""},
		{dir, filepath.Join(root, "feeds2/rl/x.yar"), ""},
		{dir, "/", ""},
		// The feeds directory named through a link, paths reported
		// with links resolved.
		{alias, filepath.Join(dir, ".store/rl/v/x.yar"), "rl"},
		{alias, filepath.Join(alias, "rl/x.yar"), "rl"},
		{alias, dir, ""},
		{alias, filepath.Join(root, "other/rl/x.yar"), ""},
	}
	for _, tt := range tests {
		if got := FeedOf(tt.dir, tt.path); got != tt.want {
			t.Errorf("FeedOf(%q, %q) = %q, want %q", tt.dir, tt.path, got, tt.want)
		}
	}
}

// TestFallBackDoesNotWait: the daemon's fallback gives up at once while an
// update holds the lock, and works once it is free.
func TestFallBackDoesNotWait(t *testing.T) {
	dir := t.TempDir()
	installVersions(t, dir, "f", "A", "B")
	unlock, err := store{dir}.lock(0)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = FallBack(dir, "f", "broken at start")
	if err == nil || !strings.Contains(err.Error(), "another update or rollback holds") {
		t.Errorf("FallBack under the lock: %v", err)
	}
	if waited := time.Since(start); waited > 50*time.Millisecond {
		t.Errorf("FallBack waited %v for the lock", waited)
	}
	unlock()
	st, err := FallBack(dir, "f", "broken at start")
	if err != nil || st.Current == nil || st.Current.ID != "B" || st.LastError != "rolled back: broken at start" {
		t.Errorf("FallBack: %+v, %v", st, err)
	}
}
