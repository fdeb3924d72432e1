package daemon

import (
	"context"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fanguard/fanguard/fan"
	"github.com/fanguard/fanguard/internal/testutil"
	"github.com/fanguard/fanguard/policy"
	"github.com/fanguard/fanguard/scanner"
)

// allowTestRule matches the content the allow list tests open.
const allowTestRule = `rule allow_test { strings: $a = "fanguard allow list test" condition: $a }`

// TestAllowListInMemory: the workers decide with the allow list in memory
// and never ask the recorder; a sum added to the list drops the cached
// denials, so the file's next open is scanned and allowed; an unchanged
// version is not read again; a failed read keeps the list in force and
// shows in the status; a sum that leaves the list drops every cached
// verdict.
func TestAllowListInMemory(t *testing.T) {
	testutil.RequireRoot(t) // a fanotify group, for the flush of the kernel's marks
	dir := t.TempDir()
	rules := filepath.Join(dir, "rules")
	os.Mkdir(rules, 0o755)
	if err := os.WriteFile(filepath.Join(rules, "t.yar"), []byte(allowTestRule), 0o644); err != nil {
		t.Fatal(err)
	}
	rs, err := scanner.Load(scanner.LoadOptions{Dirs: []string{rules}})
	if err != nil || rs.Count != 1 {
		t.Fatalf("loading the rule: %v", err)
	}
	content := []byte("some bytes, then: fanguard allow list test")
	sum := sha256.Sum256(content)
	path := filepath.Join(dir, "file")
	if err := os.WriteFile(path, content, 0o644); err != nil {
		t.Fatal(err)
	}
	g, err := fan.NewGroup(fan.GroupOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()

	d, k := testDaemon(t, time.Hour)
	d.rules.Store(newRuleSet(rs, 1))
	d.group = g
	d.cfg.Protect = policy.ProtectConfig{}
	d.storeSettings(d.cfg)
	d.cache = testCache(t, 100, &d.stats)
	rec := &fakeRecorder{}
	d.recorder = rec
	ctx := context.Background()
	if _, err := d.refreshAllowList(ctx, true); err != nil {
		t.Fatal(err)
	}
	w := &worker{d: d}
	defer w.drop()
	file := fan.FileInfo{ID: fan.FileID{Dev: 1, Ino: 77}, Stamp: fan.Stamp{CtimeNs: 9, Size: int64(len(content))}, Mode: unix.S_IFREG | 0o644}
	// open opens the file for an event, runs it through the reader and,
	// if queued, a worker, and returns whether it was allowed.
	open := func() bool {
		t.Helper()
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		fd := int32(f.Fd())
		k.mu.Lock()
		k.files[fd] = file
		k.uids[1000+fd] = 1000
		delete(k.answers, fd)
		delete(k.closes, fd)
		k.mu.Unlock()
		var scratch [4096]byte
		d.handle(fan.Event{Mask: unix.FAN_OPEN_PERM, Fd: fd, Pid: 1, Pidfd: 1000 + fd}, time.Now(), scratch[:])
		d.writeAnswers(d.answers.n)
		if j, _ := d.sched.pop(d.stillWaiting, nil); j != nil {
			j.started.Store(true)
			w.process(j)
			d.sched.finished(j.uid, false)
		}
		k.mu.Lock()
		defer k.mu.Unlock()
		if k.answers[fd] != 1 {
			t.Fatalf("fd %d answered %d times", fd, k.answers[fd])
		}
		return k.allowed[fd]
	}
	reads := func() int {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		return rec.allowReads
	}

	// Detected and denied, without a word to the recorder; denied again
	// from the cache.
	before := reads()
	if open() {
		t.Fatal("a file that matches was allowed")
	}
	if open() || d.stats.CacheHits.Load() != 1 {
		t.Fatalf("second open: not denied from the cache (%v)", d.stats.fields())
	}
	if reads() != before {
		t.Error("the event path read the allow list from the recorder")
	}

	// Allowed by the administrator: the next open is scanned and allowed.
	rec.setAllowed(sum)
	if n, err := d.refreshAllowList(ctx, false); n != 1 || err != nil {
		t.Fatalf("refresh: %d entries, %v", n, err)
	}
	if !open() {
		t.Error("the open after the allow list took the sum was denied")
	}
	if got := d.stats.AllowListed.Load(); got != 1 {
		t.Errorf("allow_listed = %d, want 1", got)
	}
	if !open() || d.stats.CacheHits.Load() != 2 {
		t.Errorf("the allowed file is not allowed from the cache (%v)", d.stats.fields())
	}

	// Nothing changed: the list is not read again.
	before = reads()
	if _, err := d.refreshAllowList(ctx, false); err != nil || reads() != before {
		t.Errorf("an unchanged allow list was read again (%v)", err)
	}

	// A failed read keeps the list in force, and says so until a read
	// works again.
	rec.mu.Lock()
	rec.allowFail = errors.New("disk I/O error")
	rec.allowVersion++
	rec.mu.Unlock()
	if _, err := d.refreshAllowList(ctx, false); err == nil {
		t.Error("a failed read reported no error")
	}
	if p := d.recordingProblem(); !strings.Contains(p, "allow list") || !strings.Contains(p, "disk I/O error") {
		t.Errorf("recording problem %q", p)
	}
	if !d.allow.Load().has(sum) {
		t.Error("the list in force was lost with a failed read")
	}
	rec.mu.Lock()
	rec.allowFail = nil
	rec.mu.Unlock()
	if _, err := d.refreshAllowList(ctx, false); err != nil || d.recordingProblem() != "" {
		t.Errorf("after a good read: %v, problem %q", err, d.recordingProblem())
	}

	// The sum leaves the list: the clean verdict cached for it goes, and
	// the next open is scanned and denied.
	rec.setAllowed()
	if _, err := d.refreshAllowList(ctx, false); err != nil {
		t.Fatal(err)
	}
	if open() {
		t.Error("allowed after its sum left the allow list")
	}
}

// TestAllowListSwapDuringScan: a scan that consulted the allow list
// caches its verdict only if that list is still in force when it would.
func TestAllowListSwapDuringScan(t *testing.T) {
	d, _ := testDaemon(t, time.Hour)
	d.cache = testCache(t, 100, &d.stats)
	old := &allowList{}
	d.allow.Store(old)
	for _, tt := range []struct {
		name      string
		fd        int32
		swapped   bool
		wantCache bool
	}{{"list still in force", 5, false, true}, {"list swapped during the scan", 6, true, false}} {
		t.Run(tt.name, func(t *testing.T) {
			d.allow.Store(old)
			d.cache.clear()
			d.inflight.Add(1)
			j := d.jobs.Get().(*job)
			info := fan.FileInfo{ID: fan.FileID{Dev: 1, Ino: 5}, Stamp: fan.Stamp{CtimeNs: 1, Size: 3}, Mode: unix.S_IFREG}
			j.start(fan.Event{Fd: tt.fd, Pid: 1, Pidfd: fan.NoPidfd}, 0, info, time.Now())
			j.started.Store(true)
			o := outcome{complete: true, allow: old, allowSeen: true, matches: []scanner.Match{{Rule: "r"}}}
			j.answer(policy.Deny, outcomeDetected)
			if tt.swapped {
				d.allow.Store(&allowList{})
			}
			(&worker{d: d}).endScan(j, d.rules.Load(), policy.Deny, &o, true, false)
			j.done()
			if _, _, ok := d.cache.lookup(info.ID, info.Stamp, 1); ok != tt.wantCache {
				t.Errorf("cached %v, want %v", ok, tt.wantCache)
			}
		})
	}
}
