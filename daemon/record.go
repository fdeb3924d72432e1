package daemon

import (
	"context"
	"strconv"
	"time"

	"go.uber.org/zap"

	"github.com/fanguard/fanguard/fan"
	"github.com/fanguard/fanguard/policy"
	"github.com/fanguard/fanguard/scanner"
	"github.com/fanguard/fanguard/systemd"
)

// Recorder keeps the record of detections: a durable log that an
// administrator reviews, the allow list, and the vault that quarantined
// files move into. The daemon calls Allowed from its workers (for
// detections only, before the answer) and the rest from one goroutine of
// its own, after the answer.
type Recorder interface {
	// Allowed reports whether content with this sha256 is on the allow
	// list: it is then neither denied nor recorded.
	Allowed(ctx context.Context, sha256 string) (bool, error)
	// Record stores d durably and returns its id. It returns only once the
	// record would survive a crash.
	Record(ctx context.Context, d *Detection) (int64, error)
	// Quarantine moves the detected file into the vault; the file is never
	// lost, whatever happens meanwhile.
	Quarantine(ctx context.Context, id int64, d *Detection) error
}

// Detection is what the daemon knows of one detection.
type Detection struct {
	Time            time.Time
	Action          policy.Action  // what is done: ActionAudit, ActionDeny or ActionQuarantine
	Verdict         policy.Verdict // the scan's verdict
	Answered        policy.Verdict // the answer the open got
	Late            bool           // the budget ran out first: the open got on_timeout
	Matches         []scanner.Match
	SHA256          string
	Size            int64
	Path            []byte // as the kernel gave it, bytes as they are
	File            fan.FileInfo
	PID             int32
	Exe             string
	Cmdline         []byte // NUL-separated, as /proc has it
	UID             int64  // the opener's real uid, -1 if unknown
	RulesGeneration string
}

// action is what a detection with these matches leads to: the strongest
// action of its rules (quarantine over deny over audit); audit in audit
// mode.
func (d *Daemon) action(matches []scanner.Match) policy.Action {
	if d.cfg.Mode == policy.Audit {
		return policy.ActionAudit
	}
	a := policy.ActionAudit
	for _, m := range matches {
		switch policy.Effective(m.Action, d.cfg.Quarantine.Action) {
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

// detectionQueue bounds the detections waiting to be recorded. A worker
// that finds it full waits: a detection is never dropped (the openers are
// answered already, and the deadline answers those still waiting).
const detectionQueue = 1024

// record runs the detections through the recorder, one at a time: the
// record is committed before the detection is logged, and a quarantine
// move follows the record.
func (d *Daemon) record(detections <-chan *Detection) {
	ctx := context.Background()
	for det := range detections {
		id := int64(-1)
		if d.recorder != nil {
			rid, err := d.recorder.Record(ctx, det)
			if err != nil {
				d.stats.RecordErrors.Add(1)
				d.log.Error("cannot record a detection", zap.ByteString("path", det.Path), zap.Error(err))
			} else {
				id = rid
			}
		}
		d.logDetection(det, id)
		d.stats.recent.add(det, id)
		if det.Action != policy.ActionQuarantine || d.recorder == nil || id < 0 {
			continue
		}
		if err := d.recorder.Quarantine(ctx, id, det); err != nil {
			d.stats.QuarantineErrors.Add(1)
			d.log.Warn("cannot quarantine a detected file; it stays in place, denied", zap.Int64("record", id),
				zap.ByteString("path", det.Path), zap.Error(err))
			continue
		}
		d.stats.Quarantined.Add(1)
		d.log.Info("quarantined", zap.Int64("record", id), zap.ByteString("path", det.Path), zap.String("sha256", det.SHA256))
	}
}

// logDetection logs each matching rule of a detection, after the answer
// and after its record.
func (d *Daemon) logDetection(det *Detection, id int64) {
	msg := "detection"
	if det.Late {
		msg = "late detection: the budget ran out before the scan finished, the open was answered with on_timeout"
	}
	for _, m := range det.Matches {
		strs := make([]string, 0, len(m.Strings))
		for _, s := range m.Strings {
			strs = append(strs, s.ID+"@"+strconv.FormatInt(s.Offset, 10))
		}
		d.log.Warn(msg,
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
			zap.Stringer("verdict", det.Verdict),
			zap.Stringer("answered", det.Answered),
			zap.Bool("late", det.Late),
			zap.Strings("strings", strs),
		)
	}
}
