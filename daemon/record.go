package daemon

import (
	"context"
	"errors"
	"strconv"
	"time"

	"go.uber.org/zap"

	"github.com/fanguard/fanguard/fan"
	"github.com/fanguard/fanguard/policy"
	"github.com/fanguard/fanguard/quarantine"
	"github.com/fanguard/fanguard/scanner"
	"github.com/fanguard/fanguard/systemd"
)

// Recorder keeps the record of detections: a durable log that an
// administrator reviews, the allow list, and the vault that quarantined
// files move into. The daemon never calls it from the event path: it
// reads the allow list into memory (allow.go) from a goroutine of its
// own, and records from another, after the answer.
type Recorder interface {
	// AllowListVersion returns a number that changes whenever the allow
	// list may have changed (it may change at other times too). It must
	// be cheap: the daemon asks it every second.
	AllowListVersion(ctx context.Context) (int64, error)
	// AllowedSums returns the sha256 sums on the allow list: content with
	// one of them is neither denied nor recorded.
	AllowedSums(ctx context.Context) ([][32]byte, error)
	// Record stores d durably and returns its id. It returns only once the
	// record would survive a crash.
	Record(ctx context.Context, d *Detection) (int64, error)
	// Quarantine moves the detected file into the vault; the file is never
	// lost, whatever happens meanwhile.
	Quarantine(ctx context.Context, id int64, d *Detection) error
	// AddRepeats adds repeats of detections recorded before to their
	// records: the same file and content, opened again by the same user
	// and program. One call for a batch.
	AddRepeats(ctx context.Context, repeats []quarantine.Repeat) error
}

// Detection is what the daemon knows of one detection.
type Detection struct {
	Time     time.Time
	Action   policy.Action  // what is done: ActionAudit, ActionDeny or ActionQuarantine
	Verdict  policy.Verdict // the scan's verdict
	Answered policy.Verdict // the answer the open got
	Late     bool           // the budget ran out first: the open got on_timeout
	// OnClose: found when a writer closed the file, by a scan on close;
	// no open was answered (Answered is what later opens get), and PID,
	// Exe, Cmdline and UID are the writer's.
	OnClose    bool
	Matches    []scanner.Match
	SHA256     string
	Size       int64
	Path       []byte // as the kernel gave it, bytes as they are
	File       fan.FileInfo
	PID        int32
	Exe        string // the opener's executable, "" if it could not be read
	Cmdline    []byte // NUL-separated, as /proc has it; at most maxCmdline bytes
	CmdlineLen int64  // the whole command line's length, ≥ len(Cmdline)
	// OpenerExited: the opener was gone before it could be described (a
	// denied program often exits at once): no Exe or Cmdline.
	OpenerExited bool
	// OpenerUnread: a read under the opener's /proc did not return in
	// time (it can hold them: see describe.go), or too many such reads
	// were still out to try.
	OpenerUnread bool
	UID          int64  // the opener's real uid (from its pidfd, at the event), -1 if unknown
	User         string // the name of UID (passwd at start-up), "" if unknown
	// Unit is the systemd unit the opener runs in ("nginx.service",
	// "session-3.scope") and Container the short id (12 hex digits) of
	// the container, from its cgroup; "" when none or unread.
	Unit            string
	Container       string
	RulesGeneration string

	pidfd int32 // the opener's pidfd, until describe closes it
	size  int64 // what it holds in the detection queue, for its bound
}

// action is what a detection with these matches leads to: the strongest
// action of its rules (quarantine over deny over audit); audit in audit
// mode.
func (d *Daemon) action(matches []scanner.Match) policy.Action {
	set := d.live()
	if set.mode == policy.Audit {
		return policy.ActionAudit
	}
	a := policy.ActionAudit
	for _, m := range matches {
		switch policy.Effective(m.Action, set.action) {
		case policy.ActionQuarantine:
			a = policy.ActionQuarantine
		case policy.ActionDeny:
			if a == policy.ActionAudit {
				a = policy.ActionDeny
			}
		}
	}
	return a
}

// record runs the described detections through the recorder, one at a
// time, until in is closed: the record is committed before the detection
// is logged, and a quarantine move follows the record. A repeat of a
// detection recorded lately (the same file and content, opened again by
// the same user with the same program, under the same rules) is not
// recorded again: it is added to the earlier record's count, in one
// transaction per second for every record repeated meanwhile.
func (d *Daemon) record(in <-chan *Detection) {
	ctx := context.Background()
	seen := newRecentRecords(recentRecords)
	var pending []quarantine.Repeat
	at := make(map[int64]int) // index in pending by record id
	flush := func() {
		if len(pending) == 0 {
			return
		}
		d.recorderBusy.Store(time.Now().UnixNano())
		if err := d.recorder.AddRepeats(ctx, pending); err != nil {
			d.recordFailed(err, "cannot count repeated detections", nil)
		}
		d.recorderBusy.Store(0)
		clear(at)
		pending = pending[:0]
	}
	tick := time.NewTicker(repeatFlush)
	defer tick.Stop()
	for {
		var det *Detection
		select {
		case <-tick.C:
			flush()
			continue
		case det = <-in:
			if det == nil {
				flush()
				return
			}
		}
		key := recordKey{file: det.File.ID, sha256: det.SHA256, uid: det.UID, exe: det.Exe,
			generation: det.RulesGeneration, action: det.Action}
		if id, ok := seen.get(key); ok && d.recorder != nil {
			d.stats.DetectionsCoalesced.Add(1)
			if i, ok := at[id]; ok {
				pending[i].N++
				pending[i].Last = det.Time
			} else {
				at[id] = len(pending)
				pending = append(pending, quarantine.Repeat{ID: id, N: 1, Last: det.Time})
			}
			continue
		}
		d.recorderBusy.Store(time.Now().UnixNano())
		d.recordOne(ctx, det, seen, key)
		d.recorderBusy.Store(0)
	}
}

// repeatFlush is how often repeats are added to their records.
const repeatFlush = time.Second

// recordOne records, logs and quarantines one detection.
func (d *Daemon) recordOne(ctx context.Context, det *Detection, seen *recentRecordsMap, key recordKey) {
	id := int64(-1)
	if d.recorder != nil {
		rid, err := d.recorder.Record(ctx, det)
		if err != nil {
			d.recordFailed(err, "cannot record a detection", det)
		} else {
			id = rid
			d.recordOK()
			seen.put(key, id)
		}
	}
	d.logDetection(det, id)
	d.stats.recent.add(det, id)
	if det.Action != policy.ActionQuarantine || d.recorder == nil || id < 0 {
		return
	}
	if err := d.recorder.Quarantine(ctx, id, det); err != nil {
		d.stats.QuarantineErrors.Add(1)
		switch {
		case errors.Is(err, quarantine.ErrVaultLimit):
			// Expected under a flood: counted, in the record, not a fault.
			d.stats.VaultFull.Add(1)
			if n := d.stats.VaultFull.Load(); n&(n-1) == 0 {
				d.log.Warn("not quarantined: "+printable(det.Path)+" (record "+strconv.FormatInt(id, 10)+
					"): the vault would pass [quarantine] max_bytes; the file stays in place, denied ("+plural(n, "time")+" so far)",
					zap.Int64("record", id), zap.ByteString("path", det.Path), zap.Uint64("count", n))
			}
		case errors.Is(err, quarantine.ErrFull):
			d.recordFailed(err, "cannot quarantine a detected file: the disk is full; it stays in place, denied", det)
		default:
			d.log.Warn("cannot quarantine a detected file; it stays in place, denied: "+printable(det.Path)+
				" (record "+strconv.FormatInt(id, 10)+"): "+err.Error(), zap.Int64("record", id),
				zap.ByteString("path", det.Path), zap.Error(err))
		}
		return
	}
	d.stats.Quarantined.Add(1)
	d.log.Info("quarantined: "+printable(det.Path)+" (record "+strconv.FormatInt(id, 10)+", sha256 "+det.SHA256+")", zap.Int64("record", id), zap.ByteString("path", det.Path), zap.String("sha256", det.SHA256))
}

// recordFailed counts a failed write of the record, logs it at error
// level (the 1st, 2nd, 4th, 8th... time: a full disk under a flood of
// detections must not flood the log too) and marks the recorder failing
// for the status until a record is written again. Opens of detected files
// are denied all the same.
func (d *Daemon) recordFailed(err error, msg string, det *Detection) {
	n := d.stats.RecordErrors.Add(1)
	e := err.Error()
	d.recordErr.Store(&e)
	if n&(n-1) != 0 {
		return
	}
	fields := []zap.Field{zap.Uint64("count", n), zap.Error(err)}
	if det != nil {
		msg += ": " + printable(det.Path)
		fields = append(fields, zap.ByteString("path", det.Path), zap.String("sha256", det.SHA256))
	}
	d.log.Error(msg+": "+err.Error()+" ("+plural(n, "failure")+" so far)", fields...)
}

// recordOK marks the recorder working again.
func (d *Daemon) recordOK() {
	if d.recordErr.Load() != nil {
		d.recordErr.Store(nil)
		d.log.Info("recording detections works again")
	}
}

// recordKey is what makes two detections the same for the record.
type recordKey struct {
	file       fan.FileID
	sha256     string
	uid        int64
	exe        string
	generation string
	action     policy.Action
}

// recentRecords bounds the detections remembered for folding repeats.
const recentRecords = 4096

// recentRecordsMap remembers the record ids of the last detections, the
// oldest forgotten first. Used by the recorder's goroutine only.
type recentRecordsMap struct {
	ids   map[recordKey]int64
	order []recordKey // ring, oldest at next
	next  int
}

func newRecentRecords(n int) *recentRecordsMap {
	return &recentRecordsMap{ids: make(map[recordKey]int64, n), order: make([]recordKey, 0, n)}
}

func (m *recentRecordsMap) get(k recordKey) (int64, bool) {
	id, ok := m.ids[k]
	return id, ok
}

func (m *recentRecordsMap) put(k recordKey, id int64) {
	if _, ok := m.ids[k]; ok {
		m.ids[k] = id
		return
	}
	if len(m.order) < cap(m.order) {
		m.order = append(m.order, k)
	} else {
		delete(m.ids, m.order[m.next])
		m.order[m.next] = k
		m.next = (m.next + 1) % len(m.order)
	}
	m.ids[k] = id
}

// logDetection logs each matching rule of a detection, after the answer
// and after its record. The message reads on its own (detectionMessage);
// the fields are for queries.
func (d *Daemon) logDetection(det *Detection, id int64) {
	for i := range det.Matches {
		m := &det.Matches[i]
		strs := make([]string, 0, len(m.Strings))
		for _, s := range m.Strings {
			strs = append(strs, s.ID+"@"+strconv.FormatInt(s.Offset, 10))
		}
		fields := []zap.Field{
			zap.String("message_id", systemd.DetectionMessageID),
			zap.Int64("record", id),
			zap.String("rule", m.Rule),
			zap.String("rule_file", m.File),
			zap.Strings("tags", m.Tags),
			zap.Stringer("action", det.Action),
			zap.ByteString("path", det.Path),
			zap.Int64("size", det.Size),
			zap.String("sha256", det.SHA256),
			zap.Int32("pid", det.PID),
			zap.String("exe", det.Exe),
			zap.Int64("uid", det.UID),
			zap.Bool("opener_exited", det.OpenerExited),
			zap.Bool("opener_unread", det.OpenerUnread),
			zap.Stringer("verdict", det.Verdict),
			zap.Stringer("answered", det.Answered),
			zap.Bool("late", det.Late),
			zap.Bool("on_close", det.OnClose),
			zap.Strings("strings", strs),
		}
		// Present only when known, so that queries on them find only
		// what they ask for.
		for _, f := range [...]struct{ key, value string }{
			{"user", det.User},
			{"unit", det.Unit},
			{"container", det.Container},
			{"severity", m.Meta["severity"]},
			{"description", m.Meta["description"]},
		} {
			if f.value != "" {
				fields = append(fields, zap.String(f.key, f.value))
			}
		}
		d.log.Warn(detectionMessage(det, m, id), fields...)
	}
}
