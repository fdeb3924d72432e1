package feeds

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// storeDir is the hidden directory of a feeds directory that holds the
// versions and the state of each feed. The rule loader skips hidden names,
// so nothing below it loads except through a feed's link.
const storeDir = ".store"

// stateFile is the name of a feed's state, in its store directory.
const stateFile = "state.json"

// ErrNoPrevious is returned by Rollback when a feed has no previous version
// to go back to.
var ErrNoPrevious = errors.New("no previous version")

// State is what fanguard knows of one feed: where it comes from, when it
// was last checked, and the versions installed. It is kept as JSON in
// DIR/.store/NAME/state.json, written whole (a new file renamed over the
// old one). A plain value: not safe for concurrent writes to the same
// file, which the lock of Update and Rollback prevents.
type State struct {
	Feed         string    `json:"feed"`
	Source       string    `json:"source"`                  // the URL or path it was last fetched from
	ETag         string    `json:"etag,omitempty"`          // of the last download, for a conditional request
	LastModified string    `json:"last_modified,omitempty"` // of the last download
	Checked      time.Time `json:"checked"`                 // the last check that succeeded (a version installed, or none newer)
	LastAttempt  time.Time `json:"last_attempt"`            // the last check, whatever its outcome
	LastError    string    `json:"last_error,omitempty"`    // why the last check failed; "" when it worked
	Current      *Version  `json:"current,omitempty"`       // in force: the feed's link points at it
	Previous     *Version  `json:"previous,omitempty"`      // kept for Rollback
	// Rejected lists the versions (IDs) rolled back from: Update does not
	// install them again unless forced.
	Rejected []string `json:"rejected,omitempty"`
}

// Version is one installed version of a feed.
type Version struct {
	ID        string     `json:"id"`        // hex SHA-256 of the archive, or of the local tree
	Selection string     `json:"selection"` // digest of the feed's subdir, include and exclude when installed
	Dir       string     `json:"dir"`       // its directory, relative to the feed's store directory
	Installed time.Time  `json:"installed"`
	Files     int        `json:"files"` // rule files installed
	Rules     int        `json:"rules"` // rules that load from them
	HeldBack  []HeldRule `json:"held_back,omitempty"`
	Gate      GateReport `json:"gate"`
}

// HeldRule is a rule the gate kept out of a version.
type HeldRule struct {
	File   string `json:"file"`              // rule file, relative to the feed
	Rule   string `json:"rule"`              // rule identifier
	Reason string `json:"reason"`            // why: it matched a trusted file, or depends on a rule held back
	Match  string `json:"matched,omitempty"` // the trusted file it matched
}

// GateReport is what the gate measured of a version.
type GateReport struct {
	Seconds     float64 `json:"seconds"` // the whole gate: compile, canary, cost
	CompileSecs float64 `json:"compile_seconds"`
	Sampled     int     `json:"canary_files"`   // trusted files scanned
	SampleBytes int64   `json:"canary_bytes"`   // their size in all
	CostNanos   int64   `json:"cost_ns"`        // mean scan time per trusted file, the whole rule set
	Matches     int     `json:"canary_matches"` // matches on trusted files, before holding back
}

// Cost is the mean scan time per trusted file.
func (g GateReport) Cost() time.Duration { return time.Duration(g.CostNanos) }

// store is the feeds directory of [update] dir: each feed NAME is a
// symbolic link DIR/NAME to .store/NAME/VERSION, and its versions and state
// live in DIR/.store/NAME.
type store struct {
	dir string
}

func (s store) feedDir(name string) string { return filepath.Join(s.dir, storeDir, name) }
func (s store) link(name string) string    { return filepath.Join(s.dir, name) }

// ReadState reads the state of feed name in the feeds directory dir. A feed
// never updated has a zero State (with Feed set) and no error.
func ReadState(dir, name string) (State, error) {
	return store{dir}.readState(name)
}

func (s store) readState(name string) (State, error) {
	p := filepath.Join(s.feedDir(name), stateFile)
	data, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return State{Feed: name}, nil
	}
	if err != nil {
		return State{}, fmt.Errorf("reading feed state: %w", err)
	}
	var st State
	if err := json.Unmarshal(data, &st); err != nil {
		return State{}, fmt.Errorf("reading feed state %s: %w", p, err)
	}
	st.Feed = name
	return st, nil
}

// writeState replaces the state of st.Feed: a temporary file, synced, then
// renamed over the old one.
func (s store) writeState(st State) error {
	dir := s.feedDir(st.Feed)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("writing feed state: %w", err)
	}
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("writing feed state: %w", err)
	}
	f, err := os.CreateTemp(dir, ".state-*")
	if err != nil {
		return fmt.Errorf("writing feed state: %w", err)
	}
	defer os.Remove(f.Name())
	_, err = f.Write(append(data, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(f.Name(), 0o644)
	}
	if err == nil {
		err = os.Rename(f.Name(), filepath.Join(dir, stateFile))
	}
	if err != nil {
		return fmt.Errorf("writing feed state: %w", err)
	}
	return nil
}

// swap points the link of feed name at its version directory vdir
// (relative to the feed's store directory) in one rename: a loader sees the
// old version or the new one, never neither.
func (s store) swap(name, vdir string) error {
	link := s.link(name)
	if fi, err := os.Lstat(link); err == nil && fi.Mode()&fs.ModeSymlink == 0 {
		return fmt.Errorf("installing feed %s: %s is not a symbolic link made by fanguard: move it away", name, link)
	}
	target := filepath.Join(storeDir, name, vdir)
	tmp := filepath.Join(s.dir, storeDir, "."+name+".link")
	os.Remove(tmp)
	if err := os.Symlink(target, tmp); err != nil {
		return fmt.Errorf("installing feed %s: %w", name, err)
	}
	if err := os.Rename(tmp, link); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("installing feed %s: %w", name, err)
	}
	if d, err := os.Open(s.dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// prune removes the version directories of feed name that st no longer
// names, and stray staging directories.
func (s store) prune(st State) {
	keep := map[string]bool{stateFile: true}
	for _, v := range []*Version{st.Current, st.Previous} {
		if v != nil {
			keep[v.Dir] = true
		}
	}
	des, err := os.ReadDir(s.feedDir(st.Feed))
	if err != nil {
		return
	}
	for _, de := range des {
		if !keep[de.Name()] && de.IsDir() {
			os.RemoveAll(filepath.Join(s.feedDir(st.Feed), de.Name()))
		}
	}
}

// lock takes the feeds directory's lock, so that two updates (the timer and
// an administrator) never install at once. It waits up to wait.
func (s store) lock(wait time.Duration) (unlock func(), err error) {
	dir := filepath.Join(s.dir, storeDir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("locking feeds: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("locking feeds: %w", err)
	}
	deadline := time.Now().Add(wait)
	for {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) || time.Now().After(deadline) {
			f.Close()
			if errors.Is(err, syscall.EWOULDBLOCK) {
				return nil, fmt.Errorf("locking feeds: another update or rollback holds %s", f.Name())
			}
			return nil, fmt.Errorf("locking feeds: %w", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Rollback puts the previous version of feed name back in force in the
// feeds directory dir, and marks the version it leaves as rejected, so
// that Update does not install it again unless forced; the version it puts
// back is no longer rejected. It returns the state after the rollback;
// ErrNoPrevious when there is nothing to go back to.
func Rollback(dir, name, reason string) (State, error) {
	return rollback(dir, name, reason, time.Minute)
}

// FallBack is Rollback for the daemon at start or reload: it does not wait
// for the lock (an update running holds it for as long as its download and
// gate take), and fails at once when another update or rollback holds it;
// that update reloads the daemon when it is done.
func FallBack(dir, name, reason string) (State, error) {
	return rollback(dir, name, reason, 0)
}

func rollback(dir, name, reason string, wait time.Duration) (State, error) {
	s := store{dir}
	unlock, err := s.lock(wait)
	if err != nil {
		return State{}, err
	}
	defer unlock()
	st, err := s.readState(name)
	if err != nil {
		return State{}, err
	}
	if st.Previous == nil {
		return st, fmt.Errorf("rolling back feed %s: %w", name, ErrNoPrevious)
	}
	if _, err := os.Stat(filepath.Join(s.feedDir(name), st.Previous.Dir)); err != nil {
		return st, fmt.Errorf("rolling back feed %s: previous version %.16s: %w", name, st.Previous.ID, err)
	}
	if err := s.swap(name, st.Previous.Dir); err != nil {
		return st, err
	}
	if st.Current != nil && st.Current.ID != st.Previous.ID && !slices.Contains(st.Rejected, st.Current.ID) {
		st.Rejected = append(st.Rejected, st.Current.ID)
	}
	st.Current, st.Previous = st.Previous, st.Current
	// The version put back in force is no longer rejected (a second
	// rollback undoes the first).
	st.Rejected = slices.DeleteFunc(st.Rejected, func(id string) bool { return id == st.Current.ID })
	if reason != "" {
		st.LastError = "rolled back: " + reason
	}
	return st, s.writeState(st)
}

// Broken names the feeds of names whose link in dir does not lead to an
// installed version (removed by hand, a failed disk), with why.
func Broken(dir string, names []string) map[string]string {
	out := make(map[string]string)
	for _, name := range names {
		st, err := ReadState(dir, name)
		if err != nil {
			out[name] = err.Error()
			continue
		}
		if st.Current == nil {
			continue // never installed
		}
		fi, err := os.Stat(store{dir}.link(name))
		switch {
		case err != nil:
			out[name] = err.Error()
		case !fi.IsDir():
			out[name] = "not a directory"
		}
	}
	return out
}

// FeedOf returns the feed a rule file belongs to, given its path as the
// loader reports it, or "". The loader follows a feed's link to the
// version it points at, so the path is below DIR/.store/NAME/; a path
// below the link DIR/NAME/ counts too.
func FeedOf(dir, path string) string {
	rel, err := filepath.Rel(dir, path)
	if err != nil || rel == "." || strings.HasPrefix(rel, "..") {
		real, rerr := filepath.EvalSymlinks(dir)
		if rerr != nil || real == dir {
			return ""
		}
		return FeedOf(real, path)
	}
	parts := strings.Split(filepath.ToSlash(rel), "/")
	if parts[0] == storeDir && len(parts) > 2 {
		parts = parts[1:]
	}
	if len(parts) < 2 || strings.HasPrefix(parts[0], ".") {
		return ""
	}
	return parts[0]
}
