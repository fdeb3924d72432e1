package feeds

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/fanguard/fanguard/policy"
)

// maxSignatureSize bounds a downloaded minisign signature.
const maxSignatureSize = 64 << 10

// Options says what Update updates and how. Update only reads it.
type Options struct {
	// Dir is the feeds directory ([update] dir): a rules directory, one of
	// RuleDirs.
	Dir string
	// RuleDirs are the rule directories in force ([rules] dirs): a new
	// version must compile together with them.
	RuleDirs []string
	// Feeds are the feeds to update, in order.
	Feeds []policy.FeedConfig
	// CanaryFiles is how many trusted files the gate scans; 0: none (no
	// canary and no cost bound).
	CanaryFiles int
	// Canary says where the trusted files are found; its Max is
	// CanaryFiles.
	Canary CanaryOptions
	// MaxScanCost bounds the mean scan time per trusted file; 0: no bound.
	MaxScanCost time.Duration
	// Timeout bounds one feed's download; 0: 10 minutes.
	Timeout time.Duration
	// ScanTimeout bounds one scan of a trusted file; 0: 60 seconds.
	ScanTimeout time.Duration
	// Force downloads and installs even what is unchanged or was rolled
	// back from.
	Force bool
	// UserAgent is sent with every request.
	UserAgent string
	// Progress, if not nil, is told what each feed is doing, for a person
	// watching; it is called from Update's goroutine.
	Progress func(feed, msg string)

	now func() time.Time // test seam; nil: time.Now
}

// Outcome is what Update did with a feed.
type Outcome string

const (
	Installed Outcome = "installed" // a new version is in force
	Unchanged Outcome = "unchanged" // the source has nothing newer
	Failed    Outcome = "failed"    // nothing changed; Result.Err says why
)

// Result is what Update did with one feed. A plain value.
type Result struct {
	Feed       string
	Outcome    Outcome
	Err        error // when Failed
	Downloaded int64 // bytes downloaded
	State      State // the feed's state afterwards
	Took       time.Duration
}

// Update checks each feed of opts for a new version and installs it when
// it passes the gate (see gate): download (or copy, for a local
// directory), verification (pinned SHA-256, minisign signature), safe
// unpacking, then compile, canary and cost against the rules in force.
// A feed that fails leaves its version in force untouched and the others
// go on. Update takes the feeds directory's lock for its whole run.
func Update(ctx context.Context, opts Options) ([]Result, error) {
	s := store{opts.Dir}
	unlock, err := s.lock(10 * time.Minute)
	if err != nil {
		return nil, err
	}
	defer unlock()
	now := opts.now
	if now == nil {
		now = time.Now
	}
	u := updater{opts: opts, s: s, now: now}
	var results []Result
	for _, fc := range opts.Feeds {
		if ctx.Err() != nil {
			return results, ctx.Err()
		}
		start := now()
		r := u.one(ctx, fc)
		r.Took = now().Sub(start)
		results = append(results, r)
	}
	return results, nil
}

type updater struct {
	opts Options
	s    store
	now  func() time.Time

	canaryOnce sync.Once
	canary     []TrustedFile
	canaryErr  error
}

func (u *updater) progress(feed, format string, args ...any) {
	if u.opts.Progress != nil {
		u.opts.Progress(feed, fmt.Sprintf(format, args...))
	}
}

// one updates one feed and records the outcome in its state.
func (u *updater) one(ctx context.Context, fc policy.FeedConfig) Result {
	st, err := u.s.readState(fc.Name)
	if err != nil {
		return Result{Feed: fc.Name, Outcome: Failed, Err: err}
	}
	st.LastAttempt = u.now()
	r := u.check(ctx, fc, &st)
	if r.Err != nil {
		r.Outcome = Failed
		st.LastError = r.Err.Error()
	} else {
		st.LastError = ""
		st.Checked = st.LastAttempt
	}
	if err := u.s.writeState(st); err != nil && r.Err == nil {
		r.Outcome, r.Err = Failed, err
	}
	if r.Outcome == Installed {
		u.s.prune(st)
	}
	r.Feed, r.State = fc.Name, st
	return r
}

// check fetches the feed and installs what is new, updating st.
func (u *updater) check(ctx context.Context, fc policy.FeedConfig, st *State) Result {
	fdir := u.s.feedDir(fc.Name)
	if err := os.MkdirAll(fdir, 0o755); err != nil {
		return Result{Err: fmt.Errorf("preparing feed %s: %w", fc.Name, err)}
	}
	// A conditional request only when what we hold came from this source
	// and is still there.
	sel := selection(fc)
	conditional := !u.opts.Force && st.Source == fc.URL && st.Current != nil &&
		st.Current.Selection == sel && dirExists(filepath.Join(fdir, st.Current.Dir))
	if !conditional {
		st.ETag, st.LastModified = "", ""
	}
	st.Source = fc.URL
	uopts := UnpackOptions{Subdir: fc.Subdir, Include: fc.Include, Exclude: fc.Exclude}
	staging, err := os.MkdirTemp(fdir, ".staging-")
	if err != nil {
		return Result{Err: fmt.Errorf("preparing feed %s: %w", fc.Name, err)}
	}
	defer os.RemoveAll(staging)
	tree := filepath.Join(staging, "tree")

	var res Result
	var id string
	switch {
	case strings.HasPrefix(fc.URL, "https://"):
		u.progress(fc.Name, "downloading %s", fc.URL)
		f, err := Fetch(ctx, FetchOptions{URL: fc.URL, CAFile: fc.CAFile, MaxSize: fc.MaxSize,
			Timeout: u.opts.Timeout, ETag: st.ETag, LastModified: st.LastModified, Dir: staging, UserAgent: u.opts.UserAgent})
		if err != nil {
			return Result{Err: fmt.Errorf("feed %s: %w", fc.Name, err)}
		}
		if f.NotModified {
			return Result{Outcome: Unchanged}
		}
		res.Downloaded = f.Size
		if err := u.verify(ctx, fc, f.Path, f.SHA256, staging); err != nil {
			return Result{Err: err, Downloaded: f.Size}
		}
		id = f.SHA256
		// The validators are kept only for a version decided on: after
		// a failure, the next check downloads it again.
		validators := func() { st.ETag, st.LastModified = f.ETag, f.LastModified }
		if u.skip(fc, st, id, sel) {
			validators()
			return Result{Outcome: Unchanged, Downloaded: f.Size}
		}
		defer func() {
			if res.Outcome == Installed {
				validators()
			}
		}()
		if _, err := Unpack(f.Path, tree, uopts); err != nil {
			return Result{Err: fmt.Errorf("feed %s: unpacking %s: %w", fc.Name, fc.URL, err), Downloaded: f.Size}
		}
		os.Remove(f.Path)
	case dirExists(fc.URL):
		if fc.MinisignKey != "" || fc.SHA256 != "" {
			return Result{Err: fmt.Errorf("feed %s: %s is a directory: a sha256 or a signature needs an archive", fc.Name, fc.URL)}
		}
		u.progress(fc.Name, "copying %s", fc.URL)
		up, err := CopyTree(fc.URL, tree, uopts)
		if err != nil {
			return Result{Err: fmt.Errorf("feed %s: %w", fc.Name, err)}
		}
		if id, err = treeID(tree, up.Files); err != nil {
			return Result{Err: fmt.Errorf("feed %s: %w", fc.Name, err)}
		}
		if u.skip(fc, st, id, sel) {
			return Result{Outcome: Unchanged}
		}
	default: // a local archive
		sum, err := fileSHA256(fc.URL)
		if err != nil {
			return Result{Err: fmt.Errorf("feed %s: %w", fc.Name, err)}
		}
		if err := u.verify(ctx, fc, fc.URL, sum, staging); err != nil {
			return Result{Err: err}
		}
		id = sum
		if u.skip(fc, st, id, sel) {
			return Result{Outcome: Unchanged}
		}
		if _, err := Unpack(fc.URL, tree, uopts); err != nil {
			return Result{Err: fmt.Errorf("feed %s: unpacking %s: %w", fc.Name, fc.URL, err)}
		}
	}

	u.progress(fc.Name, "checking version %.16s: compile, canary, cost", id)
	canary, err := u.trusted()
	if err != nil {
		return Result{Err: fmt.Errorf("feed %s: %w", fc.Name, err), Downloaded: res.Downloaded}
	}
	g, err := gate(gateOptions{ruleDirs: u.opts.RuleDirs, dir: u.opts.Dir, feed: fc.Name,
		candidate: tree, canary: canary, maxCost: u.opts.MaxScanCost, timeout: u.scanTimeout()})
	if err != nil {
		return Result{Err: err, Downloaded: res.Downloaded}
	}

	installed := u.now()
	vdir := id[:16] + "." + installed.UTC().Format("20060102T150405.000000000Z")
	if err := os.Rename(tree, filepath.Join(fdir, vdir)); err != nil {
		return Result{Err: fmt.Errorf("installing feed %s: %w", fc.Name, err), Downloaded: res.Downloaded}
	}
	if err := u.s.swap(fc.Name, vdir); err != nil {
		os.RemoveAll(filepath.Join(fdir, vdir))
		return Result{Err: err, Downloaded: res.Downloaded}
	}
	if st.Current != nil {
		st.Previous = st.Current
	}
	st.Current = &Version{ID: id, Selection: sel, Dir: vdir, Installed: installed, Files: g.files, Rules: g.rules,
		HeldBack: g.heldBack, Gate: g.report}
	st.Rejected = slices.DeleteFunc(st.Rejected, func(r string) bool { return r == id })
	res.Outcome = Installed
	return res
}

// skip reports whether version id is not to be installed: it is the one in
// force, or one rolled back from, and the update is not forced.
func (u *updater) skip(fc policy.FeedConfig, st *State, id, sel string) bool {
	if u.opts.Force {
		return false
	}
	if st.Current != nil && st.Current.ID == id && st.Current.Selection == sel {
		return true
	}
	if slices.Contains(st.Rejected, id) {
		u.progress(fc.Name, "version %.16s was rolled back from: not installed again (use --force)", id)
		return true
	}
	return false
}

// verify checks the archive at path against the feed's pinned SHA-256 and
// its minisign signature.
func (u *updater) verify(ctx context.Context, fc policy.FeedConfig, path, sum, tmpDir string) error {
	if err := VerifySHA256(sum, fc.SHA256); err != nil {
		return fmt.Errorf("feed %s: %s: %w", fc.Name, fc.URL, err)
	}
	if fc.MinisignKey == "" {
		return nil
	}
	sigURL := fc.SignatureURL
	if sigURL == "" {
		sigURL = fc.URL + ".minisig"
	}
	var sig []byte
	if strings.HasPrefix(sigURL, "https://") {
		f, err := Fetch(ctx, FetchOptions{URL: sigURL, CAFile: fc.CAFile, MaxSize: maxSignatureSize,
			Timeout: u.opts.Timeout, Dir: tmpDir, UserAgent: u.opts.UserAgent})
		if err != nil {
			return fmt.Errorf("feed %s: signature: %w", fc.Name, err)
		}
		sig, err = os.ReadFile(f.Path)
		os.Remove(f.Path)
		if err != nil {
			return fmt.Errorf("feed %s: signature: %w", fc.Name, err)
		}
	} else {
		var err error
		if sig, err = readBounded(sigURL, maxSignatureSize); err != nil {
			return fmt.Errorf("feed %s: signature: %w", fc.Name, err)
		}
	}
	if err := VerifyMinisign(fc.MinisignKey, path, sig); err != nil {
		return fmt.Errorf("feed %s: %s: %w", fc.Name, fc.URL, err)
	}
	return nil
}

// trusted samples the trusted files once per Update.
func (u *updater) trusted() ([]TrustedFile, error) {
	if u.opts.CanaryFiles <= 0 {
		return nil, nil
	}
	u.canaryOnce.Do(func() {
		o := u.opts.Canary
		o.Max = u.opts.CanaryFiles
		u.canary, _, u.canaryErr = SampleTrusted(o)
		if u.canaryErr == nil && len(u.canary) == 0 {
			u.canaryErr = errors.New("the canary found no trusted file (dpkg's md5sums): set update.canary_files = 0 to update without it")
		}
		if u.canaryErr != nil {
			u.canaryErr = fmt.Errorf("sampling trusted files: %w", u.canaryErr)
		}
	})
	return u.canary, u.canaryErr
}

func (u *updater) scanTimeout() time.Duration {
	if u.opts.ScanTimeout > 0 {
		return u.opts.ScanTimeout
	}
	return 60 * time.Second
}

// selection is a digest of what the feed's configuration takes from its
// archive: a version is installed again when it changes.
func selection(fc policy.FeedConfig) string {
	h := sha256.New()
	fmt.Fprintf(h, "subdir %q\ninclude %q\nexclude %q\n", fc.Subdir, fc.Include, fc.Exclude)
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// treeID is the hex SHA-256 of a tree's files: each relative path and its
// content, in order.
func treeID(dir string, files []string) (string, error) {
	h := sha256.New()
	for _, f := range files {
		data, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(f)))
		if err != nil {
			return "", fmt.Errorf("hashing %s: %w", f, err)
		}
		fmt.Fprintf(h, "%d:%s\x00%d:", len(f), f, len(data))
		h.Write(data)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func fileSHA256(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", fmt.Errorf("hashing %s: %w", p, err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("hashing %s: %w", p, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func readBounded(p string, limit int64) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", p, err)
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%s is larger than %d bytes", p, limit)
	}
	return data, nil
}

func dirExists(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}
