package feeds

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fanguard/fanguard/policy"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// releaseServer serves one archive over TLS, as a collection's release
// address does, with an ETag derived from its content. The archive can be
// changed between requests. It counts the full downloads and records the
// If-None-Match of each request.
type releaseServer struct {
	*httptest.Server
	caFile string

	mu                sync.Mutex // guards the following
	body              []byte
	ignoreConditional bool // answer every request in full
	downloads         int
	ifNoneMatch       []string
}

func newReleaseServer(t *testing.T) *releaseServer {
	t.Helper()
	s := &releaseServer{}
	s.Server = httptest.NewTLSServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	s.caFile = filepath.Join(t.TempDir(), "ca.pem")
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.Certificate().Raw})
	if err := os.WriteFile(s.caFile, pemBytes, 0o644); err != nil {
		t.Fatal(err)
	}
	return s
}

// etagOf is the ETag the server gives body.
func etagOf(body []byte) string {
	sum := sha256.Sum256(body)
	return `"` + hex.EncodeToString(sum[:8]) + `"`
}

func sha256Hex(body []byte) string {
	sum := sha256.Sum256(body)
	return hex.EncodeToString(sum[:])
}

func (s *releaseServer) serve(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	inm := r.Header.Get("If-None-Match")
	s.ifNoneMatch = append(s.ifNoneMatch, inm)
	etag := etagOf(s.body)
	if inm == etag && !s.ignoreConditional {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	s.downloads++
	w.Header().Set("ETag", etag)
	w.Header().Set("Content-Length", strconv.Itoa(len(s.body)))
	w.Write(s.body)
}

func (s *releaseServer) set(body []byte, ignoreConditional bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.body, s.ignoreConditional = body, ignoreConditional
}

// seen returns the full downloads so far and the If-None-Match of the last
// request.
func (s *releaseServer) seen() (downloads int, lastINM string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n := len(s.ifNoneMatch); n > 0 {
		lastINM = s.ifNoneMatch[n-1]
	}
	return s.downloads, lastINM
}

func (s *releaseServer) url() string { return s.URL + "/releases/latest/download/rules.tar.gz" }

// updateEnv is a rules directory in force and a feeds directory, with a
// clock that moves one second each time Update reads it.
type updateEnv struct {
	system, feeds string
	clock         time.Time
	progress      []string // what Update said, "feed: message"
}

func newUpdateEnv(t *testing.T) *updateEnv {
	t.Helper()
	root := t.TempDir()
	e := &updateEnv{system: filepath.Join(root, "system"), feeds: filepath.Join(root, "feeds"),
		clock: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	writeFiles(t, e.system, map[string]string{"base.yar": systemRule})
	return e
}

func (e *updateEnv) opts(feeds ...policy.FeedConfig) Options {
	return Options{Dir: e.feeds, RuleDirs: []string{e.system, e.feeds}, Feeds: feeds,
		Progress: func(feed, msg string) { e.progress = append(e.progress, feed+": "+msg) },
		now: func() time.Time {
			e.clock = e.clock.Add(time.Second)
			return e.clock
		}}
}

// update runs Update and returns its results, failing t on an error.
func (e *updateEnv) update(t *testing.T, o Options) []Result {
	t.Helper()
	res, err := Update(context.Background(), o)
	if err != nil {
		t.Fatalf("Update: %v", err)
	}
	if len(res) != len(o.Feeds) {
		t.Fatalf("Update gave %d results for %d feeds", len(res), len(o.Feeds))
	}
	for i, r := range res {
		if r.Feed != o.Feeds[i].Name {
			t.Errorf("result %d is of feed %q, want %q", i, r.Feed, o.Feeds[i].Name)
		}
		if (r.Outcome == Failed) != (r.Err != nil) {
			t.Errorf("feed %s: outcome %s with error %v", r.Feed, r.Outcome, r.Err)
		}
		if r.Err != nil && !strings.Contains(r.Err.Error(), "feed "+r.Feed) {
			t.Errorf("feed %s: error %q does not name the feed", r.Feed, r.Err)
		}
	}
	return res
}

// checkInstalled checks what the store holds for a feed against its state:
// the state on disk is the result's, the link points at Current, and the
// feed's directory holds Current and Previous only.
func (e *updateEnv) checkInstalled(t *testing.T, r Result) {
	t.Helper()
	onDisk, err := ReadState(e.feeds, r.Feed)
	if err != nil {
		t.Fatal(err)
	}
	// An empty Rejected is not written: nil on disk.
	if diff := cmp.Diff(r.State, onDisk, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("state on disk differs from the result's (-result +disk):\n%s", diff)
	}
	st := r.State
	if st.Current == nil {
		if _, err := os.Lstat(filepath.Join(e.feeds, r.Feed)); err == nil {
			t.Errorf("feed %s has a link but no current version", r.Feed)
		}
		return
	}
	if got, want := readLink(t, e.feeds, r.Feed), filepath.Join(storeDir, r.Feed, st.Current.Dir); got != want {
		t.Errorf("the link points at %q, want %q", got, want)
	}
	want := []string{stateFile, st.Current.Dir}
	if st.Previous != nil {
		want = append(want, st.Previous.Dir)
	}
	slices.Sort(want)
	if diff := cmp.Diff(want, storeEntries(t, filepath.Join(e.feeds, storeDir, r.Feed))); diff != "" {
		t.Errorf("the feed's store directory (-want +got):\n%s", diff)
	}
}

// release builds a collection's archive: rule files under
// rules-main/yara, and a README.
func release(t *testing.T, files map[string]string) []byte {
	t.Helper()
	members := []member{{name: "rules-main/README.md", body: "rules for tests\n"}}
	for _, name := range sortedKeys(files) {
		members = append(members, member{name: "rules-main/yara/" + name, body: files[name]})
	}
	return tarGz(t, members)
}

func TestUpdateTLS(t *testing.T) {
	e := newUpdateEnv(t)
	srv := newReleaseServer(t)
	v1 := release(t, map[string]string{"a.yar": goodRules, "sub/b.yara": subRule})
	v2 := release(t, map[string]string{"a.yar": goodRules, "sub/b.yara": subRule,
		"c.yar": "rule feed_three {\n\tstrings: $a = \"FEED-THREE\"\n\tcondition: $a\n}\n"})
	base := policy.FeedConfig{Name: "rl", URL: srv.url(), CAFile: srv.caFile, Subdir: "rules-main/yara"}

	steps := []struct {
		name              string
		body              []byte
		ignoreConditional bool
		feed              func(fc *policy.FeedConfig)
		force             bool
		before            func(t *testing.T)
		want              Outcome
		wantErr           string
		wantCurrent       []byte // the archive in force afterwards
		wantPrevious      []byte
		wantFiles         int
		wantRules         int
		wantDownloads     int    // full downloads the server counted so far
		wantINM           string // If-None-Match of the request
		wantETag          string // kept in the state
		wantDownloaded    bool   // the result counts the body
		wantProgress      string // a message Update gave
	}{
		{
			name: "installs", body: v1, want: Installed,
			wantCurrent: v1, wantFiles: 2, wantRules: 3, wantDownloads: 1, wantETag: etagOf(v1), wantDownloaded: true,
			wantProgress: "rl: checking version " + sha256Hex(v1)[:16] + ": compile, canary, cost",
		},
		{
			name: "unchanged with a conditional request", body: v1, want: Unchanged,
			wantCurrent: v1, wantFiles: 2, wantRules: 3, wantDownloads: 1, wantINM: etagOf(v1), wantETag: etagOf(v1),
		},
		{
			name: "a bad sha256 leaves the version in force", body: v2, feed: func(fc *policy.FeedConfig) { fc.SHA256 = sha256Hex(v1) },
			want: Failed, wantErr: "feed rl: " + srv.url() + ": ",
			wantCurrent: v1, wantFiles: 2, wantRules: 3, wantDownloads: 2, wantINM: etagOf(v1), wantETag: etagOf(v1), wantDownloaded: true,
		},
		{
			name: "a failed version is downloaded again", body: v2, feed: func(fc *policy.FeedConfig) { fc.SHA256 = sha256Hex(v1) },
			want: Failed, wantErr: "feed rl: " + srv.url() + ": ",
			wantCurrent: v1, wantFiles: 2, wantRules: 3, wantDownloads: 3, wantINM: etagOf(v1), wantETag: etagOf(v1), wantDownloaded: true,
		},
		{
			name: "a new version", body: v2, want: Installed,
			wantCurrent: v2, wantPrevious: v1, wantFiles: 3, wantRules: 4, wantDownloads: 4, wantINM: etagOf(v1), wantETag: etagOf(v2), wantDownloaded: true,
		},
		{
			name: "a version rolled back from is not installed again", body: v2, want: Unchanged,
			before: func(t *testing.T) {
				if _, err := Rollback(e.feeds, "rl", "test"); err != nil {
					t.Fatal(err)
				}
			},
			wantCurrent: v1, wantPrevious: v2, wantFiles: 2, wantRules: 3, wantDownloads: 4, wantINM: etagOf(v2), wantETag: etagOf(v2),
		},
		{
			name: "nor when downloaded in full", body: v2, ignoreConditional: true, want: Unchanged,
			wantCurrent: v1, wantPrevious: v2, wantFiles: 2, wantRules: 3, wantDownloads: 5, wantINM: etagOf(v2), wantETag: etagOf(v2), wantDownloaded: true,
			wantProgress: "rl: version " + sha256Hex(v2)[:16] + " was rolled back from: not installed again (use --force)",
		},
		{
			name: "unless forced", body: v2, force: true, want: Installed,
			wantCurrent: v2, wantPrevious: v1, wantFiles: 3, wantRules: 4, wantDownloads: 6, wantINM: "", wantETag: etagOf(v2), wantDownloaded: true,
		},
		{
			name: "forced again reinstalls the same", body: v2, force: true, want: Installed,
			wantCurrent: v2, wantPrevious: v2, wantFiles: 3, wantRules: 4, wantDownloads: 7, wantINM: "", wantETag: etagOf(v2), wantDownloaded: true,
		},
		{
			name: "a new include installs the same archive again", body: v2, feed: func(fc *policy.FeedConfig) { fc.Include = []string{"*.yar"} },
			want:        Installed,
			wantCurrent: v2, wantPrevious: v2, wantFiles: 2, wantRules: 3, wantDownloads: 8, wantINM: "", wantETag: etagOf(v2), wantDownloaded: true,
		},
		{
			name: "then unchanged", body: v2, feed: func(fc *policy.FeedConfig) { fc.Include = []string{"*.yar"} },
			want:        Unchanged,
			wantCurrent: v2, wantPrevious: v2, wantFiles: 2, wantRules: 3, wantDownloads: 8, wantINM: etagOf(v2), wantETag: etagOf(v2),
		},
		{
			name: "a new subdir installs the same archive again", body: v2, feed: func(fc *policy.FeedConfig) { fc.Subdir = "rules-main/yara/sub" },
			want:        Installed,
			wantCurrent: v2, wantPrevious: v2, wantFiles: 1, wantRules: 1, wantDownloads: 9, wantINM: "", wantETag: etagOf(v2), wantDownloaded: true,
		},
	}
	var before State
	for _, step := range steps {
		// The steps build on each other: stop at the first that fails.
		ok := t.Run(step.name, func(t *testing.T) {
			srv.set(step.body, step.ignoreConditional)
			if step.before != nil {
				step.before(t)
				var err error
				if before, err = ReadState(e.feeds, "rl"); err != nil {
					t.Fatal(err)
				}
			}
			fc := base
			if step.feed != nil {
				step.feed(&fc)
			}
			o := e.opts(fc)
			o.Force = step.force
			e.progress = nil
			r := e.update(t, o)[0]
			if r.Outcome != step.want {
				t.Fatalf("outcome %s (%v), want %s", r.Outcome, r.Err, step.want)
			}
			if step.wantErr != "" && !strings.HasPrefix(r.Err.Error(), step.wantErr) {
				t.Errorf("error %q, want it to start with %q", r.Err, step.wantErr)
			}
			downloads, inm := srv.seen()
			if downloads != step.wantDownloads || inm != step.wantINM {
				t.Errorf("server: %d full downloads, last If-None-Match %q; want %d, %q", downloads, inm, step.wantDownloads, step.wantINM)
			}
			if want := map[bool]int64{true: int64(len(step.body))}[step.wantDownloaded]; r.Downloaded != want {
				t.Errorf("Downloaded = %d, want %d", r.Downloaded, want)
			}
			if step.wantProgress != "" && !slices.Contains(e.progress, step.wantProgress) {
				t.Errorf("progress %q, want it to hold %q", e.progress, step.wantProgress)
			}
			st := r.State
			if st.Current == nil || st.Current.ID != sha256Hex(step.wantCurrent) {
				t.Fatalf("current version %+v, want the archive %.16s", st.Current, sha256Hex(step.wantCurrent))
			}
			if st.Current.Files != step.wantFiles || st.Current.Rules != step.wantRules {
				t.Errorf("current version: %d files, %d rules; want %d, %d", st.Current.Files, st.Current.Rules, step.wantFiles, step.wantRules)
			}
			switch {
			case step.wantPrevious == nil && st.Previous != nil:
				t.Errorf("previous version %+v, want none", st.Previous)
			case step.wantPrevious != nil && (st.Previous == nil || st.Previous.ID != sha256Hex(step.wantPrevious)):
				t.Errorf("previous version %+v, want the archive %.16s", st.Previous, sha256Hex(step.wantPrevious))
			}
			if st.ETag != step.wantETag || st.Source != fc.URL {
				t.Errorf("state: ETag %q, source %q; want %q, %q", st.ETag, st.Source, step.wantETag, fc.URL)
			}
			if st.LastAttempt != e.clock.Add(-time.Second) && st.LastAttempt != e.clock.Add(-2*time.Second) {
				t.Errorf("last attempt %v, want this run's (clock at %v)", st.LastAttempt, e.clock)
			}
			switch r.Outcome {
			case Failed:
				if st.LastError != r.Err.Error() || st.Checked.Equal(st.LastAttempt) {
					t.Errorf("after a failure: last error %q, checked %v (attempt %v); want the error, an older check", st.LastError, st.Checked, st.LastAttempt)
				}
				if diff := cmp.Diff(before.Current, st.Current); diff != "" {
					t.Errorf("a failure changed the version in force (-before +after):\n%s", diff)
				}
			default:
				if st.LastError != "" || !st.Checked.Equal(st.LastAttempt) {
					t.Errorf("after a check that worked: last error %q, checked %v (attempt %v)", st.LastError, st.Checked, st.LastAttempt)
				}
			}
			if r.Outcome == Installed {
				g := st.Current.Gate
				if !st.Current.Installed.After(st.LastAttempt) || g.CompileSecs <= 0 || g.Seconds < g.CompileSecs || g.Sampled != 0 {
					t.Errorf("installed at %v (attempt %v), gate report %+v", st.Current.Installed, st.LastAttempt, g)
				}
				if st.Current.Selection != selection(fc) {
					t.Errorf("selection %q, want the feed's %q", st.Current.Selection, selection(fc))
				}
				if !strings.HasPrefix(st.Current.Dir, st.Current.ID[:16]+".") {
					t.Errorf("version directory %q is not named after the archive", st.Current.Dir)
				}
			}
			e.checkInstalled(t, r)
			before = st
		})
		if !ok {
			break
		}
	}
}

func TestUpdateLocal(t *testing.T) {
	tree := map[string]string{"a.yar": goodRules, "sub/b.yara": subRule, "notes.txt": "not a rule"}
	src := t.TempDir()
	writeFiles(t, filepath.Join(src, "tree"), tree)
	archive := tarXz(t, []member{{name: "a.yar", body: goodRules}, {name: "sub/b.yara", body: subRule}})
	writeTemp(t, src, "rules.tar.xz", archive)
	zipped := zipBytes(t, []member{{name: "z/a.yar", body: goodRules}})
	writeTemp(t, src, "rules.zip", zipped)

	tests := []struct {
		name    string
		fc      policy.FeedConfig
		change  func(t *testing.T) // between the second and third update; nil: no third
		wantID  string             // "": not checked (a tree's digest)
		files   int
		rules   int
		wantErr string
	}{
		{name: "directory", fc: policy.FeedConfig{URL: filepath.Join(src, "tree")}, files: 2, rules: 3,
			change: func(t *testing.T) {
				writeFiles(t, filepath.Join(src, "tree"), map[string]string{"sub/b.yara": subRule + "\n// changed\n"})
			}},
		{name: "directory with a subdir", fc: policy.FeedConfig{URL: filepath.Join(src, "tree"), Subdir: "sub"}, files: 1, rules: 1},
		{name: "tar.xz file", fc: policy.FeedConfig{URL: filepath.Join(src, "rules.tar.xz")}, wantID: sha256Hex(archive), files: 2, rules: 3},
		{name: "zip file pinned", fc: policy.FeedConfig{URL: filepath.Join(src, "rules.zip"), SHA256: sha256Hex(zipped), Subdir: "z"},
			wantID: sha256Hex(zipped), files: 1, rules: 2},
		{name: "zip file pinned wrong", fc: policy.FeedConfig{URL: filepath.Join(src, "rules.zip"), SHA256: sha256Hex(archive)},
			wantErr: "feed local: " + filepath.Join(src, "rules.zip") + ": "},
		{name: "directory with a sha256", fc: policy.FeedConfig{URL: filepath.Join(src, "tree"), SHA256: sha256Hex(archive)},
			wantErr: "feed local: " + filepath.Join(src, "tree") + " is a directory: a sha256 or a signature needs an archive"},
		{name: "missing", fc: policy.FeedConfig{URL: filepath.Join(src, "gone.zip")},
			wantErr: "feed local: hashing " + filepath.Join(src, "gone.zip") + ": "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newUpdateEnv(t)
			tt.fc.Name = "local"
			r := e.update(t, e.opts(tt.fc))[0]
			e.checkInstalled(t, r)
			if tt.wantErr != "" {
				if r.Outcome != Failed || !strings.HasPrefix(r.Err.Error(), tt.wantErr) {
					t.Fatalf("outcome %s, error %v; want a failure starting with %q", r.Outcome, r.Err, tt.wantErr)
				}
				if r.State.Current != nil {
					t.Errorf("a failure installed %+v", r.State.Current)
				}
				return
			}
			if r.Outcome != Installed {
				t.Fatalf("outcome %s (%v), want installed", r.Outcome, r.Err)
			}
			cur := r.State.Current
			if len(cur.ID) != 64 || tt.wantID != "" && cur.ID != tt.wantID || cur.Files != tt.files || cur.Rules != tt.rules {
				t.Errorf("installed %+v, want ID %.16s, %d files, %d rules", cur, tt.wantID, tt.files, tt.rules)
			}
			if r.Downloaded != 0 {
				t.Errorf("a local feed counted %d bytes downloaded", r.Downloaded)
			}
			r2 := e.update(t, e.opts(tt.fc))[0]
			if r2.Outcome != Unchanged || r2.State.Current.Dir != cur.Dir {
				t.Errorf("second update: %s (%v), version %+v; want unchanged", r2.Outcome, r2.Err, r2.State.Current)
			}
			if tt.change == nil {
				return
			}
			tt.change(t)
			r3 := e.update(t, e.opts(tt.fc))[0]
			if r3.Outcome != Installed || r3.State.Current.ID == cur.ID || r3.State.Previous.ID != cur.ID {
				t.Errorf("after a change: %s (%v), current %+v, previous %+v", r3.Outcome, r3.Err, r3.State.Current, r3.State.Previous)
			}
			e.checkInstalled(t, r3)
		})
	}
}

// TestUpdateFailures checks that a feed that fails leaves the others going
// on, with an error naming it.
func TestUpdateFailures(t *testing.T) {
	srv := newReleaseServer(t)
	good := release(t, map[string]string{"a.yar": goodRules})
	srv.set(good, false)
	closed := httptest.NewTLSServer(http.NotFoundHandler())
	closedURL := closed.URL + "/rules.tar.gz"
	closed.Close()
	src := t.TempDir()
	writeFiles(t, filepath.Join(src, "bad"), map[string]string{"ok.yar": goodRules, "bad.yar": badRule})
	writeFiles(t, filepath.Join(src, "fp"), map[string]string{"fp.yar": fpRules})
	writeFiles(t, filepath.Join(src, "empty"), map[string]string{"README": "no rules"})
	emptyRoot := t.TempDir()
	writeFiles(t, emptyRoot, map[string]string{"var/lib/dpkg/status": "", "var/lib/dpkg/info/x.list": ""})

	tests := []struct {
		name    string
		fc      policy.FeedConfig
		canary  *CanaryOptions
		maxCost time.Duration
		wantErr string // a prefix of the feed's error; "": installed
		check   func(t *testing.T, r Result)
	}{
		{name: "unreachable", fc: policy.FeedConfig{URL: closedURL, CAFile: srv.caFile},
			wantErr: "feed broken: fetching " + closedURL},
		{name: "untrusted certificate", fc: policy.FeedConfig{URL: srv.url()},
			wantErr: "feed broken: fetching " + srv.url()},
		{name: "does not compile", fc: policy.FeedConfig{URL: filepath.Join(src, "bad")},
			wantErr: "feed broken does not compile with the rules in force; not installed:\n  broken/bad.yar:3: ",
			check: func(t *testing.T, r Result) {
				var ge *GateError
				if !errors.As(r.Err, &ge) || ge.Stage != "compile" {
					t.Errorf("err = %v, want a compile GateError", r.Err)
				}
			}},
		{name: "no rule file", fc: policy.FeedConfig{URL: filepath.Join(src, "empty")},
			wantErr: "feed broken does not compile with the rules in force; not installed:\n  it holds no rule file"},
		{name: "canary without trusted files", fc: policy.FeedConfig{URL: filepath.Join(src, "fp")},
			canary:  &CanaryOptions{Root: emptyRoot},
			wantErr: "feed broken: sampling trusted files: the canary found no trusted file"},
		{name: "cost", fc: policy.FeedConfig{URL: filepath.Join(src, "fp")}, maxCost: time.Nanosecond,
			canary:  &CanaryOptions{},
			wantErr: "feed broken is held back: its rules cost too much to scan with"},
		{name: "canary holds back", fc: policy.FeedConfig{URL: filepath.Join(src, "fp")},
			canary: &CanaryOptions{},
			check: func(t *testing.T, r Result) {
				cur := r.State.Current
				if cur.Files != 1 || cur.Rules != 1 || cur.Gate.Sampled != 1 || cur.Gate.Matches != 1 || cur.Gate.CostNanos <= 0 {
					t.Errorf("installed %+v, want 1 file, 1 rule, 1 trusted file sampled that matched", cur)
				}
				var held []string
				for _, h := range cur.HeldBack {
					held = append(held, h.File+" "+h.Rule+": "+h.Reason)
				}
				want := []string{"fp.yar fp: matched a trusted file", "fp.yar fp_user: uses a rule held back"}
				if diff := cmp.Diff(want, held); diff != "" {
					t.Errorf("held back (-want +got):\n%s", diff)
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newUpdateEnv(t)
			tt.fc.Name = "broken"
			o := e.opts(tt.fc, policy.FeedConfig{Name: "good", URL: srv.url(), CAFile: srv.caFile, Subdir: "rules-main/yara"})
			o.MaxScanCost = tt.maxCost
			if tt.canary != nil {
				o.CanaryFiles = 1
				o.Canary = *tt.canary
				if o.Canary.Root == "" {
					o.Canary = fakeCanary(t)
				}
			}
			res := e.update(t, o)
			r := res[0]
			e.checkInstalled(t, r)
			if tt.wantErr != "" {
				if r.Outcome != Failed || !strings.HasPrefix(r.Err.Error(), tt.wantErr) {
					t.Errorf("outcome %s, error %v; want a failure starting with %q", r.Outcome, r.Err, tt.wantErr)
				}
				if r.State.Current != nil || r.State.LastError != r.Err.Error() {
					t.Errorf("state after a failure: current %+v, last error %q", r.State.Current, r.State.LastError)
				}
			} else if r.Outcome != Installed {
				t.Errorf("outcome %s (%v), want installed", r.Outcome, r.Err)
			}
			if tt.check != nil {
				tt.check(t, r)
			}
			// The other feed went on, unless the whole canary failed.
			g := res[1]
			e.checkInstalled(t, g)
			if strings.Contains(tt.name, "canary without") || tt.maxCost > 0 {
				if g.Outcome != Failed {
					t.Errorf("feed good: %s, want it to fail as the other did", g.Outcome)
				}
				return
			}
			if g.Outcome != Installed {
				t.Errorf("feed good: %s (%v), want installed", g.Outcome, g.Err)
			}
		})
	}
}

// TestUpdateCanceled checks that Update stops between feeds when its
// context is done.
func TestUpdateCanceled(t *testing.T) {
	e := newUpdateEnv(t)
	src := t.TempDir()
	writeFiles(t, src, map[string]string{"a.yar": goodRules})
	ctx, cancel := context.WithCancel(context.Background())
	o := e.opts(policy.FeedConfig{Name: "one", URL: src}, policy.FeedConfig{Name: "two", URL: src})
	o.Progress = func(feed, msg string) {
		if strings.HasPrefix(msg, "checking") {
			cancel()
		}
	}
	res, err := Update(ctx, o)
	if !errors.Is(err, context.Canceled) || len(res) != 1 || res[0].Outcome != Installed {
		t.Errorf("Update canceled during the first feed: %d results, err %v; want the first installed and context.Canceled", len(res), err)
	}
	if st, err := ReadState(e.feeds, "two"); err != nil || st.Current != nil || !st.LastAttempt.IsZero() {
		t.Errorf("feed two after a cancel: %+v, %v; want it not tried", st, err)
	}
}
