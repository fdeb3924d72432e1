package scanner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"time"
)

// DefaultMaxFileSize is PathOptions.MaxFileSize when left zero.
const DefaultMaxFileSize = 64 << 20

// Reasons in PathResult.Skipped.
const (
	SkippedNotRegular = "not a regular file"
	SkippedTooLarge   = "larger than max_file_size"
)

// PathOptions tunes ScanPaths. The zero value means the defaults. Owner is
// called from several goroutines at once and must be safe for that.
type PathOptions struct {
	// Workers is the number of files scanned in parallel; 0 means
	// GOMAXPROCS.
	Workers int
	// MaxFileSize: larger files are skipped, not scanned; 0 means
	// DefaultMaxFileSize. Each worker keeps a buffer of up to this size.
	MaxFileSize int64
	// Timeout bounds the CPU time of one file's scan, in whole seconds
	// (rounded up); 0 means no bound.
	Timeout time.Duration
	// Owner names the user with a uid, for the "owner" external variable;
	// nil leaves owner empty.
	Owner func(uid uint32) string
}

// PathResult is the outcome for one file; a plain value, safe to read from
// any goroutine once handed over.
type PathResult struct {
	Path    string  // as named on the command line, or joined below it
	Size    int64   // file size, when known
	Matches []Match // nil when clean, skipped or failed
	Skipped string  // why the file was not scanned: SkippedNotRegular, SkippedTooLarge
	Err     error   // why the file (or directory) could not be read or scanned
}

// pathJob is a regular file found by the walk.
type pathJob struct {
	path   string // as reported
	abs    string // absolute, for the external variables
	follow bool   // named on the command line: symbolic links are followed
}

// ScanPaths scans the files named by paths, walking directories
// recursively; for "fanguard scan PATH...". A symbolic link named in paths
// is followed, links found inside directories are not (they are reported
// as skipped). Files are read with pread into a reusable buffer per worker
// (never mapped) and scanned like the daemon scans, opts.Workers at a time.
//
// fn is called once per file (and per directory that cannot be read) from
// the calling goroutine, in no particular order. A file that cannot be read
// or scanned is reported through PathResult.Err and the walk goes on.
// ScanPaths returns ctx.Err() when ctx is canceled, or an error when the
// scanners cannot be created.
func (rs *Ruleset) ScanPaths(ctx context.Context, paths []string, opts PathOptions, fn func(PathResult)) error {
	workers := opts.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	maxSize := opts.MaxFileSize
	if maxSize <= 0 {
		maxSize = DefaultMaxFileSize
	}
	scanners := make([]*Scanner, 0, workers)
	defer func() {
		for _, s := range scanners {
			s.Close()
		}
	}()
	for range workers {
		s, err := rs.NewScanner(opts.Timeout)
		if err != nil {
			return err
		}
		scanners = append(scanners, s)
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	jobs := make(chan pathJob, workers)
	results := make(chan PathResult, workers)
	send := func(r PathResult) bool {
		select {
		case results <- r:
			return true
		case <-ctx.Done():
			return false
		}
	}

	var wg sync.WaitGroup
	wg.Go(func() {
		defer close(jobs)
		w := walker{ctx: ctx, jobs: jobs, send: send}
		for _, p := range paths {
			if !w.root(p) {
				return
			}
		}
	})
	for _, s := range scanners {
		wg.Go(func() {
			pw := pathWorker{s: s, maxSize: maxSize, owner: opts.Owner}
			for job := range jobs {
				if ctx.Err() != nil || !send(pw.scan(job)) {
					return
				}
			}
		})
	}
	go func() {
		wg.Wait()
		close(results)
	}()
	for r := range results {
		fn(r)
	}
	return ctx.Err()
}

// walker turns command-line paths into jobs; results for what it does not
// hand to the workers go straight to send.
type walker struct {
	ctx  context.Context
	jobs chan<- pathJob
	send func(PathResult) bool
}

// root handles one command-line path. It returns false when canceled.
func (w *walker) root(p string) bool {
	abs, err := filepath.Abs(p)
	if err != nil {
		return w.send(PathResult{Path: p, Err: fmt.Errorf("resolving %s: %w", p, err)})
	}
	fi, err := os.Stat(p)
	switch {
	case err != nil:
		return w.send(PathResult{Path: p, Err: err})
	case fi.IsDir():
		return w.dir(p, abs)
	case fi.Mode().IsRegular():
		return w.job(pathJob{path: p, abs: abs, follow: true})
	default:
		return w.send(PathResult{Path: p, Skipped: SkippedNotRegular})
	}
}

// dir walks a directory without following symbolic links.
func (w *walker) dir(p, abs string) bool {
	des, err := os.ReadDir(p)
	if err != nil {
		if !w.send(PathResult{Path: p, Err: err}) {
			return false
		}
		// ReadDir returns what it read before the error: go on with it.
	}
	for _, de := range des {
		cp, cabs := filepath.Join(p, de.Name()), filepath.Join(abs, de.Name())
		var ok bool
		switch t := de.Type(); {
		case t.IsDir():
			ok = w.dir(cp, cabs)
		case t.IsRegular():
			ok = w.job(pathJob{path: cp, abs: cabs})
		default:
			ok = w.send(PathResult{Path: cp, Skipped: SkippedNotRegular})
		}
		if !ok {
			return false
		}
	}
	return true
}

// job hands a file to the workers. It returns false when canceled.
func (w *walker) job(j pathJob) bool {
	select {
	case w.jobs <- j:
		return true
	case <-w.ctx.Done():
		return false
	}
}

// pathWorker reads and scans files with its own Scanner and buffer.
type pathWorker struct {
	s       *Scanner
	maxSize int64
	owner   func(uint32) string
	buf     []byte // reused across files, grows up to maxSize
}

// scan reads and scans one file.
func (pw *pathWorker) scan(j pathJob) PathResult {
	r := PathResult{Path: j.path}
	flags := os.O_RDONLY | syscall.O_NONBLOCK // a FIFO swapped in must not block the open
	if !j.follow {
		flags |= syscall.O_NOFOLLOW
	}
	f, err := os.OpenFile(j.path, flags, 0)
	if err != nil {
		if errors.Is(err, syscall.ELOOP) {
			r.Skipped = SkippedNotRegular // replaced by a symbolic link since the walk
			return r
		}
		r.Err = err
		return r
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		r.Err = err
		return r
	}
	if !fi.Mode().IsRegular() {
		r.Skipped = SkippedNotRegular
		return r
	}
	r.Size = fi.Size()
	if r.Size > pw.maxSize {
		r.Skipped = SkippedTooLarge
		return r
	}
	if int64(cap(pw.buf)) < r.Size {
		pw.buf = make([]byte, min(max(r.Size, 2*int64(cap(pw.buf))), pw.maxSize))
	}
	n, err := f.ReadAt(pw.buf[:r.Size], 0)
	if err != nil && !errors.Is(err, io.EOF) { // EOF: the file shrank; scan what is there
		r.Err = fmt.Errorf("reading %s: %w", j.path, err)
		return r
	}
	data := pw.buf[:n]
	var owner string
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && pw.owner != nil {
		owner = pw.owner(st.Uid)
	}
	r.Matches, err = pw.s.Scan(data, VarsFor(j.abs, data[:min(len(data), 16)], owner))
	if err != nil {
		r.Err = fmt.Errorf("scanning %s: %w", j.path, err)
	}
	return r
}
