package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/term"
)

// progressInterval bounds how often the progress bar is redrawn.
const progressInterval = 100 * time.Millisecond

// progress is the one-line progress bar of "fanguard scan" on a terminal:
// files and bytes scanned (out of the totals once a concurrent pre-walk has
// counted them), rate, detections and an estimated time left. It is drawn on
// w with \r and erase-to-end-of-line, redrawn at most every
// progressInterval, and erased before any other line is written (clear) and
// at the end (stop). A nil *progress does nothing, which is what runScan uses
// when standard error is not a terminal.
type progress struct {
	w     io.Writer
	width int // terminal columns; the line is cut to fit, 0 when unknown
	start time.Time

	mu         sync.Mutex // guards the fields below and writes to w
	files      int        // files done (scanned or failed)
	bytes      int64      // bytes scanned
	detections int
	totalFiles int
	totalBytes int64
	counted    bool // the pre-walk has finished: the totals are known
	shown      bool // the bar is on the screen

	cancel context.CancelFunc
	done   chan struct{}
	wg     sync.WaitGroup
}

// newProgress returns a running progress bar on stderr when stderr is a
// terminal, and nil otherwise. It counts what paths hold (regular files of
// at most maxSize bytes, walking like scanner.ScanPaths) in the background.
func newProgress(stderr io.Writer, paths []string, maxSize int64) *progress {
	f, ok := stderr.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return nil
	}
	p := &progress{w: f, start: time.Now(), done: make(chan struct{})}
	if w, _, err := term.GetSize(int(f.Fd())); err == nil && w > 1 {
		p.width = w - 1 // never write to the last column: some terminals wrap there
	}
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	p.wg.Go(func() { p.count(ctx, paths, maxSize) })
	p.mu.Lock()
	p.draw()
	p.mu.Unlock()
	p.wg.Go(p.loop)
	return p
}

// loop redraws the bar every progressInterval until stop.
func (p *progress) loop() {
	t := time.NewTicker(progressInterval)
	defer t.Stop()
	for {
		select {
		case <-p.done:
			return
		case <-t.C:
			p.mu.Lock()
			p.draw()
			p.mu.Unlock()
		}
	}
}

// add records one file done: size bytes scanned, n detections.
func (p *progress) add(size int64, n int) {
	if p == nil {
		return
	}
	p.mu.Lock()
	p.files++
	p.bytes += size
	p.detections += n
	p.mu.Unlock()
}

// print erases the bar and runs write (which prints whole lines, on
// standard error or on standard output), with the bar kept off the screen
// until write returns; the next tick draws it again below.
func (p *progress) print(write func()) {
	if p == nil {
		write()
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.erase()
	write()
}

// stop ends the pre-walk and the redraws and erases the bar.
func (p *progress) stop() {
	if p == nil {
		return
	}
	p.cancel()
	close(p.done)
	p.wg.Wait()
	p.mu.Lock()
	p.erase()
	p.mu.Unlock()
}

// erase clears the bar's line; p.mu held.
func (p *progress) erase() {
	if p.shown {
		io.WriteString(p.w, "\r\x1b[K")
		p.shown = false
	}
}

// draw writes the bar over the current line; p.mu held.
func (p *progress) draw() {
	line := p.line(time.Since(p.start))
	if p.width > 0 {
		if r := []rune(line); len(r) > p.width {
			line = string(r[:p.width])
		}
	}
	io.WriteString(p.w, "\r"+line+"\x1b[K")
	p.shown = true
}

// line is the bar's text after elapsed; p.mu held.
func (p *progress) line(elapsed time.Duration) string {
	var b strings.Builder
	rate := 0.0
	if s := elapsed.Seconds(); s > 0 {
		rate = float64(p.bytes) / s / 1e6
	}
	if p.counted {
		// Files may have appeared since the count: never show more done
		// than in all.
		fmt.Fprintf(&b, "%d/%d files  %s/%s", p.files, max(p.files, p.totalFiles),
			humanBytes(p.bytes), humanBytes(max(p.bytes, p.totalBytes)))
	} else {
		fmt.Fprintf(&b, "%d files  %s", p.files, humanBytes(p.bytes))
	}
	fmt.Fprintf(&b, "  %.1f MB/s  %d detections", rate, p.detections)
	if !p.counted {
		b.WriteString("  counting…")
	} else if eta, ok := p.eta(elapsed); ok {
		b.WriteString("  ETA " + formatETA(eta))
	}
	return b.String()
}

// eta estimates the time left from the share of the work done: the mean of
// the shares of files and of bytes, since both the per-file cost and the
// per-byte cost count. ok is false when nothing is done yet.
func (p *progress) eta(elapsed time.Duration) (time.Duration, bool) {
	var shares []float64
	if p.totalFiles > 0 {
		shares = append(shares, min(1, float64(p.files)/float64(p.totalFiles)))
	}
	if p.totalBytes > 0 {
		shares = append(shares, min(1, float64(p.bytes)/float64(p.totalBytes)))
	}
	if len(shares) == 0 {
		return 0, true // nothing to scan
	}
	var done float64
	for _, s := range shares {
		done += s
	}
	done /= float64(len(shares))
	if done <= 0 {
		return 0, false
	}
	return time.Duration(float64(elapsed) * (1 - done) / done), true
}

// formatETA shows d as m:ss, or h:mm:ss from an hour on.
func formatETA(d time.Duration) string {
	s := int64(d.Round(time.Second) / time.Second)
	if s >= 3600 {
		return fmt.Sprintf("%d:%02d:%02d", s/3600, s/60%60, s%60)
	}
	return fmt.Sprintf("%d:%02d", s/60, s%60)
}

// humanBytes shows n in decimal units (B, kB, MB, GB, TB).
func humanBytes(n int64) string {
	if n < 1000 {
		return fmt.Sprintf("%d B", n)
	}
	v := float64(n)
	for _, u := range []string{"kB", "MB", "GB", "TB"} {
		v /= 1000
		if v < 1000 || u == "TB" {
			return fmt.Sprintf("%.1f %s", v, u)
		}
	}
	panic("unreachable")
}

// count totals the regular files of at most maxSize bytes under paths the
// way scanner.ScanPaths walks them: command-line paths are followed,
// symbolic links inside directories are not; sizes come from lstat only.
// The totals are published when the walk ends, not when canceled.
func (p *progress) count(ctx context.Context, paths []string, maxSize int64) {
	var files int
	var bytes int64
	add := func(fi os.FileInfo) {
		if fi.Mode().IsRegular() && fi.Size() <= maxSize {
			files++
			bytes += fi.Size()
		}
	}
	var dir func(string) bool
	dir = func(d string) bool {
		des, _ := os.ReadDir(d) // what was read before an error still counts
		for _, de := range des {
			if ctx.Err() != nil {
				return false
			}
			cp := filepath.Join(d, de.Name())
			switch t := de.Type(); {
			case t.IsDir():
				if !dir(cp) {
					return false
				}
			case t.IsRegular():
				if fi, err := de.Info(); err == nil {
					add(fi)
				}
			}
		}
		return true
	}
	for _, root := range paths {
		fi, err := os.Stat(root)
		switch {
		case err != nil:
		case fi.IsDir():
			if !dir(root) {
				return
			}
		default:
			add(fi)
		}
	}
	if ctx.Err() != nil {
		return
	}
	p.mu.Lock()
	p.totalFiles, p.totalBytes, p.counted = files, bytes, true
	p.mu.Unlock()
}
