package daemon

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fanguard/fanguard/fan"
	"github.com/fanguard/fanguard/internal/testutil"
	"github.com/fanguard/fanguard/policy"
)

// record builds one event record as the kernel writes it: the metadata
// and, if pidfd is not fan.NoPidfd, a pidfd info record.
func record(mask uint64, fd, pid, pidfd int32) []byte {
	b := make([]byte, fan.MetadataSize)
	ne := binary.NativeEndian
	if pidfd != fan.NoPidfd {
		b = append(b, unix.FAN_EVENT_INFO_TYPE_PIDFD, 0, 8, 0)
		ne.PutUint16(b[fan.MetadataSize+2:], 8)
		b = ne.AppendUint32(b, uint32(pidfd))
	}
	ne.PutUint32(b[0:], uint32(len(b)))
	b[4] = unix.FANOTIFY_METADATA_VERSION
	ne.PutUint16(b[6:], fan.MetadataSize)
	ne.PutUint64(b[8:], mask)
	ne.PutUint32(b[16:], uint32(fd))
	ne.PutUint32(b[20:], uint32(pid))
	return b
}

// BenchmarkReaderCacheHit is the reader's path for a read of 64 opens
// answered from the daemon's cache: parsing, the fast path and writing
// the answers (kernel calls faked). It reports the time per event.
func BenchmarkReaderCacheHit(b *testing.B) {
	d, _ := testDaemon(&testing.T{}, 0)
	d.kern = nopKernel{}
	d.cfg.Protect = policy.ProtectConfig{}
	d.storeSettings(d.cfg)
	d.cache = testCache(b, 1000, &d.stats)
	d.cache.store(cacheEntry{stamp: fan.Stamp{}, gen: 1, verdict: policy.Allow})
	const events = 64
	var buf []byte
	for i := range int32(events) {
		buf = append(buf, record(unix.FAN_OPEN_PERM, 10+i, 7, 200+i)...)
	}
	var scratch [4096]byte
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		if err := d.handleBatch(buf, now, scratch[:]); err != nil {
			b.Fatal(err)
		}
		d.writeAnswers(d.answers.n)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*events), "ns/event")
	if d.stats.CacheHits.Load() == 0 {
		b.Fatalf("no cache hit: %v", d.stats.fields())
	}
}

func TestReaderCacheHitAllocs(t *testing.T) {
	if testutil.RaceEnabled {
		t.Skip("the race detector changes escape analysis")
	}
	if a := testing.Benchmark(BenchmarkReaderCacheHit).AllocsPerOp(); a != 0 {
		t.Errorf("the reader allocates %d times per read of cache hits, want 0", a)
	}
}

// malformedRecord is record with its first info record's length set to
// zero: delimited by event_len, but not parseable.
func malformedRecord(fd, pid int32) []byte {
	b := record(unix.FAN_OPEN_PERM, fd, pid, 300+fd)
	binary.NativeEndian.PutUint16(b[fan.MetadataSize+2:], 0)
	return b
}

// TestReaderMalformedRecords: a read holding malformed records among
// good ones. Every record that can be delimited is answered (a malformed
// permission event with on_error) and closed, once; a record that cannot
// be delimited ends the read with fan.ErrMalformed after the records
// before it were answered.
func TestReaderMalformedRecords(t *testing.T) {
	badLen := func(b []byte) []byte { binary.NativeEndian.PutUint32(b, uint32(len(b)+100)); return b }
	badVersion := func(b []byte) []byte { b[4]++; return b }
	tests := []struct {
		name       string
		records    [][]byte
		wantAnswer map[int32]bool // fd → allowed
		wantErrors uint64
		wantFatal  bool
	}{
		{name: "malformed between good ones",
			records:    [][]byte{record(unix.FAN_OPEN_PERM, 10, 7, 110), malformedRecord(11, 7), record(unix.FAN_OPEN_PERM, 12, 7, 112), malformedRecord(13, 7)},
			wantAnswer: map[int32]bool{10: true, 11: false, 12: true, 13: false}, wantErrors: 2},
		{name: "malformed with another mask: answered all the same",
			records: [][]byte{func() []byte {
				b := malformedRecord(14, 7)
				binary.NativeEndian.PutUint64(b[8:], unix.FAN_CLOSE_WRITE)
				return b
			}(), record(unix.FAN_OPEN_PERM, 15, 7, 115)},
			wantAnswer: map[int32]bool{14: false, 15: true}, wantErrors: 1},
		{name: "event_len past the read: fatal after the records before it",
			records:    [][]byte{record(unix.FAN_OPEN_PERM, 16, 7, 116), badLen(record(unix.FAN_OPEN_PERM, 17, 7, 117)), record(unix.FAN_OPEN_PERM, 18, 7, 118)},
			wantAnswer: map[int32]bool{16: true}, wantErrors: 1, wantFatal: true},
		{name: "unknown version: fatal",
			records:    [][]byte{malformedRecord(19, 7), badVersion(record(unix.FAN_OPEN_PERM, 20, 7, 120))},
			wantAnswer: map[int32]bool{19: false}, wantErrors: 2, wantFatal: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, k := testDaemon(t, time.Hour)
			d.cfg.OnError = policy.Deny
			d.cfg.Protect = policy.ProtectConfig{}
			d.storeSettings(d.cfg)
			d.cache = testCache(t, 1000, &d.stats)
			var buf []byte
			for _, r := range tt.records {
				buf = append(buf, r...)
			}
			for fd := range int32(40) {
				k.files[fd] = fan.FileInfo{ID: fan.FileID{Dev: 1, Ino: 1}, Stamp: fan.Stamp{CtimeNs: 1, Size: 10}, Mode: unix.S_IFREG | 0o644}
				k.uids[100+fd] = 1000
				k.uids[300+fd] = 1000
				k.notification[fd] = true
			}
			for fd := range tt.wantAnswer {
				delete(k.notification, fd)
			}
			d.cache.store(cacheEntry{id: fan.FileID{Dev: 1, Ino: 1}, stamp: fan.Stamp{CtimeNs: 1, Size: 10}, gen: 1, verdict: policy.Allow})
			var scratch [4096]byte
			err := d.handleBatch(buf, time.Now(), scratch[:])
			d.writeAnswers(d.answers.n)
			if fatal := errors.Is(err, fan.ErrMalformed); fatal != tt.wantFatal {
				t.Errorf("handleBatch: %v, want fatal %v", err, tt.wantFatal)
			}
			k.mu.Lock()
			defer k.mu.Unlock()
			for fd, allow := range tt.wantAnswer {
				if k.answers[fd] != 1 || k.allowed[fd] != allow || k.closes[fd] != 1 {
					t.Errorf("fd %d: answered %d times, allowed %v, closed %d times; want once, %v, once",
						fd, k.answers[fd], k.allowed[fd], k.closes[fd], allow)
				}
			}
			if len(k.answers) != len(tt.wantAnswer) {
				t.Errorf("answers %v, want %v", k.answers, tt.wantAnswer)
			}
			if got := d.stats.ParseErrors.Load(); got != tt.wantErrors {
				t.Errorf("parse errors %d, want %d", got, tt.wantErrors)
			}
		})
	}
}

// countingKernel answers every stat with the file of the zero FileID and
// counts answers and closes.
type countingKernel struct {
	nopKernel
	answers, closes int
}

func (k *countingKernel) Respond(int32, bool) error { k.answers++; return nil }
func (k *countingKernel) CloseFd(int32) error       { k.closes++; return nil }

// FuzzReaderBatch runs arbitrary reads through the reader's path: it
// must not panic, must answer exactly the permission events with an fd
// and the malformed records with an fd among the records that can be
// delimited, and must fail only when one cannot be.
func FuzzReaderBatch(f *testing.F) {
	f.Add(record(unix.FAN_OPEN_PERM, 5, 7, 8))
	f.Add(append(malformedRecord(5, 7), record(unix.FAN_OPEN_PERM, 6, 7, fan.NoPidfd)...))
	f.Add(append(record(unix.FAN_CLOSE_WRITE, 5, 7, 8), record(unix.FAN_Q_OVERFLOW, fan.NoFd, 0, fan.NoPidfd)...))
	f.Fuzz(func(t *testing.T, buf []byte) {
		d, _ := testDaemon(t, time.Hour)
		k := &countingKernel{}
		d.kern = k
		d.cfg.Protect = policy.ProtectConfig{}
		d.storeSettings(d.cfg)
		d.cache = testCache(t, 10, &d.stats) // every file is cached: answered at once
		d.cache.store(cacheEntry{gen: 1, verdict: policy.Allow})
		want, fatal := 0, false
		for off := 0; off < len(buf); {
			ev, n, err := fan.ParseEvent(buf[off:])
			if n == 0 {
				fatal = err != nil
				break
			}
			if ev.Fd >= 0 && (ev.IsPermission() || err != nil) {
				want++
			}
			off += n
		}
		var scratch [4096]byte
		err := d.handleBatch(buf, time.Now(), scratch[:])
		d.writeAnswers(d.answers.n)
		if (err != nil) != fatal || err != nil && !errors.Is(err, fan.ErrMalformed) {
			t.Fatalf("handleBatch: %v, want fatal %v", err, fatal)
		}
		if k.answers != want {
			t.Fatalf("%d answers, want %d", k.answers, want)
		}
	})
}

// trustAllMounts trusts every mount: exclude_paths apply everywhere.
type trustAllMounts struct{}

func (trustAllMounts) Trusted(uint64) bool { return true }

// TestNoPathOnCacheHit: with exclude_paths in force, an open answered
// from the cache reads no path; one that is not cached reads it once, for
// the exclusions.
func TestNoPathOnCacheHit(t *testing.T) {
	d, k := testDaemon(t, time.Hour)
	d.mounts = trustAllMounts{}
	d.cfg.Protect = policy.ProtectConfig{ExcludePaths: []string{"/nowhere/excluded"}}
	d.storeSettings(d.cfg)
	d.cache = testCache(t, 100, &d.stats)
	file := func(ino uint64) fan.FileInfo {
		return fan.FileInfo{ID: fan.FileID{Dev: 1, Ino: ino}, Stamp: fan.Stamp{CtimeNs: 1, Size: 10}, Mode: unix.S_IFREG | 0o644}
	}
	d.cache.store(cacheEntry{id: file(1).ID, stamp: file(1).Stamp, gen: 1, verdict: policy.Allow})
	d.cache.store(cacheEntry{id: file(2).ID, stamp: file(2).Stamp, gen: 1, verdict: policy.Deny, det: &detection{rule: "r"}})
	for _, tt := range []struct {
		name      string
		fd        int32
		ino       uint64
		wantPaths int
	}{
		{"clean verdict cached", 40, 1, 0},
		{"detection cached", 41, 2, 0},
		{"not cached", 42, 3, 1},
	} {
		k.files[tt.fd] = file(tt.ino)
		k.uids[100+tt.fd] = 1000
		var scratch [4096]byte
		d.handle(fan.Event{Mask: unix.FAN_OPEN_PERM, Fd: tt.fd, Pid: 1, Pidfd: 100 + tt.fd}, time.Now(), scratch[:])
		d.writeAnswers(d.answers.n)
		if got := k.paths[tt.fd]; got != tt.wantPaths {
			t.Errorf("%s: %d path reads, want %d", tt.name, got, tt.wantPaths)
		}
	}
	// The queued one, answered so that the fake kernel's checks hold.
	if j, _ := d.sched.pop(d.stillWaiting, nil); j != nil {
		j.finish(policy.Allow, outcomeClean)
	}
}

// statKernel is nopKernel with a real stat.
type statKernel struct {
	nopKernel
	stat func(int32) (fan.FileInfo, error)
}

func (k statKernel) Stat(fd int32) (fan.FileInfo, error) { return k.stat(fd) }

// BenchmarkReaderCacheHitTmpfs is BenchmarkReaderCacheHit with the real
// stat of a file on a tmpfs (the answers and closes faked): with
// fan.StatFd, which asks for FS_IOC_GETVERSION every time, as the daemon
// did, and with the daemon's fan.Stater, which learns that tmpfs has none.
func BenchmarkReaderCacheHitTmpfs(b *testing.B) {
	dir := testutil.MountTmpfs(b)
	path := filepath.Join(dir, "f")
	if err := os.WriteFile(path, []byte("content"), 0o644); err != nil {
		b.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	fd := int32(f.Fd())
	fi, err := fan.StatFd(fd)
	if err != nil {
		b.Fatal(err)
	}
	const events = 64
	var buf []byte
	for range events {
		buf = append(buf, record(unix.FAN_OPEN_PERM, fd, 7, fan.NoPidfd)...)
	}
	for _, bm := range []struct {
		name string
		stat func(int32) (fan.FileInfo, error)
	}{{"StatFd", fan.StatFd}, {"Stater", new(fan.Stater).Stat}} {
		b.Run(bm.name, func(b *testing.B) {
			d, _ := testDaemon(&testing.T{}, 0)
			d.kern = statKernel{stat: bm.stat}
			d.cfg.Protect = policy.ProtectConfig{}
			d.storeSettings(d.cfg)
			d.cache = testCache(b, 1000, &d.stats)
			d.cache.store(cacheEntry{id: fi.ID, stamp: fi.Stamp, gen: 1, verdict: policy.Allow})
			var scratch [4096]byte
			now := time.Now()
			b.ReportAllocs()
			for b.Loop() {
				if err := d.handleBatch(buf, now, scratch[:]); err != nil {
					b.Fatal(err)
				}
				d.writeAnswers(d.answers.n)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*events), "ns/event")
			if d.stats.CacheHits.Load() != uint64(b.N*events) {
				b.Fatalf("%d cache hits of %d", d.stats.CacheHits.Load(), b.N*events)
			}
		})
	}
}
