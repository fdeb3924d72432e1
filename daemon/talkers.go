package daemon

import (
	"cmp"
	"slices"
	"sync"
	"time"

	"github.com/fanguard/fanguard/fan"
)

// talkers counts, per executable and per directory, the scans and the scan
// time of the last few minutes: the first question during a slow build is
// which process makes the daemon work. Fed by the workers after their
// answer, through drainTalkers; read by the status. Safe for concurrent
// use.
type talkers struct {
	mu    sync.Mutex // guards slots
	slots [talkerMinutes]talkerSlot
}

// talkerMinutes is the window: one slot per minute.
const talkerMinutes = 5

// talkerKeys bounds the names one slot keeps per kind; beyond it, scans
// count under talkerOther.
const talkerKeys = 1024

const talkerOther = "(other)"

type talkerSlot struct {
	minute int64
	exe    map[string]*Talker
	dir    map[string]*Talker
}

// Talker is one executable's or one directory's share of the work.
type Talker struct {
	Name            string  `json:"name"`
	Scans           int64   `json:"scans"`
	ScanTimeSeconds float64 `json:"scan_time_seconds"`
}

func (t *talkers) add(now time.Time, exe, dir string, took time.Duration) {
	minute := now.Unix() / 60
	t.mu.Lock()
	defer t.mu.Unlock()
	s := &t.slots[minute%talkerMinutes]
	if s.minute != minute || s.exe == nil {
		*s = talkerSlot{minute: minute, exe: make(map[string]*Talker), dir: make(map[string]*Talker)}
	}
	count(s.exe, exe, took)
	count(s.dir, dir, took)
}

func count(m map[string]*Talker, name string, took time.Duration) {
	tl := m[name]
	if tl == nil {
		if len(m) >= talkerKeys {
			name = talkerOther
			tl = m[name]
		}
		if tl == nil {
			tl = &Talker{Name: name}
			m[name] = tl
		}
	}
	tl.Scans++
	tl.ScanTimeSeconds += took.Seconds()
}

// top returns the n executables and the n directories with the most scan
// time over the window.
func (t *talkers) top(now time.Time, n int) (exes, dirs []Talker) {
	minute := now.Unix() / 60
	sumExe, sumDir := map[string]*Talker{}, map[string]*Talker{}
	t.mu.Lock()
	for i := range t.slots {
		s := &t.slots[i]
		if s.exe == nil || minute-s.minute >= talkerMinutes {
			continue
		}
		merge(sumExe, s.exe)
		merge(sumDir, s.dir)
	}
	t.mu.Unlock()
	return topOf(sumExe, n), topOf(sumDir, n)
}

func merge(dst, src map[string]*Talker) {
	for name, tl := range src {
		d := dst[name]
		if d == nil {
			d = &Talker{Name: name}
			dst[name] = d
		}
		d.Scans += tl.Scans
		d.ScanTimeSeconds += tl.ScanTimeSeconds
	}
}

func topOf(m map[string]*Talker, n int) []Talker {
	out := make([]Talker, 0, len(m))
	for _, tl := range m {
		out = append(out, *tl)
	}
	slices.SortFunc(out, func(a, b Talker) int {
		if c := cmp.Compare(b.ScanTimeSeconds, a.ScanTimeSeconds); c != 0 {
			return c
		}
		if c := cmp.Compare(b.Scans, a.Scans); c != 0 {
			return c
		}
		return cmp.Compare(a.Name, b.Name)
	})
	return out[:min(n, len(out))]
}

// talkSample is one scan for the talkers: whose, where, how long.
type talkSample struct {
	pid  int32
	dir  string
	took time.Duration
}

// talkSamples bounds the scans a worker keeps for the talkers between two
// counts; beyond it, they are not kept: the talkers are a view for the
// status, not a record.
const talkSamples = 4096

// talkEvery is how often the workers' samples are counted.
const talkEvery = 250 * time.Millisecond

// talkBuffer is a worker's samples not counted yet. A worker adds to it
// after each answer, without waking anyone; drainTalkers takes them in
// turn (every talkEvery, and before the status reads the talkers). Safe
// for concurrent use.
type talkBuffer struct {
	mu      sync.Mutex // guards samples
	samples []talkSample
}

func (b *talkBuffer) add(s talkSample) {
	b.mu.Lock()
	if len(b.samples) < talkSamples {
		b.samples = append(b.samples, s)
	}
	b.mu.Unlock()
}

// take returns the samples and gives the buffer spare for the next ones.
func (b *talkBuffer) take(spare []talkSample) []talkSample {
	b.mu.Lock()
	s := b.samples
	b.samples = spare[:0]
	b.mu.Unlock()
	return s
}

// talkDrain is what drainTalkers keeps between calls.
type talkDrain struct {
	mu    sync.Mutex // guards following; one drain at a time
	spare []talkSample
	exes  map[int32]string
	buf   [4096]byte
}

// drainTalkers counts the samples the workers took since the last time,
// naming each scan's executable from /proc/<pid>/exe (once per pid and
// drain). That read takes no lock the process could hold (the link is
// read under the task's lock), and is never made on a worker: were it
// ever to wait, the workers would drop their samples, and nothing else
// would be held.
func (d *Daemon) drainTalkers() {
	t := &d.talkDrain
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.exes == nil {
		t.exes = make(map[int32]string)
	}
	now := time.Now()
	for _, w := range d.workers {
		samples := w.talk.take(t.spare)
		for _, s := range samples {
			exe, ok := t.exes[s.pid]
			if !ok {
				exe = "(exited)"
				if p, err := fan.ExePath(s.pid, t.buf[:]); err == nil {
					exe = string(p)
				}
				t.exes[s.pid] = exe
			}
			d.talkers.add(now, exe, s.dir, s.took)
		}
		t.spare = samples
	}
	clear(t.exes)
}
