package daemon

import (
	"sync/atomic"

	"go.uber.org/zap"
)

// Stats are the daemon's counters. Each is updated with one atomic add on
// the event path, no lock; read them at any time.
type Stats struct {
	Events         atomic.Uint64 // permission events read
	OwnPid         atomic.Uint64 // allowed at once: opened by the daemon itself
	Excluded       atomic.Uint64 // allowed at once: exclude_paths/exe/uids
	Overloaded     atomic.Uint64 // answered at once with on_overload: max_pending reached
	Overflows      atomic.Uint64 // FAN_Q_OVERFLOW alarms from the kernel
	NotRegular     atomic.Uint64 // allowed without a scan: not a regular file
	Oversize       atomic.Uint64 // answered with on_oversize: above max_file_size
	Scans          atomic.Uint64 // YARA scans run
	BytesScanned   atomic.Uint64
	Detections     atomic.Uint64 // scans with at least one matching rule
	LateDetections atomic.Uint64 // detections that came after the budget ran out
	TimedOut       atomic.Uint64 // answered with on_timeout by the deadline
	Errors         atomic.Uint64 // answered with on_error: unreadable or unscannable
	AnswerErrors   atomic.Uint64 // the kernel refused an answer
	ParseErrors    atomic.Uint64 // malformed event records (fatal)
	KernelDenied   atomic.Uint64 // events the kernel denied itself: it could not open an fd for us
}

func (s *Stats) fields() []zap.Field {
	return []zap.Field{
		zap.Uint64("events", s.Events.Load()),
		zap.Uint64("own_pid", s.OwnPid.Load()),
		zap.Uint64("excluded", s.Excluded.Load()),
		zap.Uint64("overloaded", s.Overloaded.Load()),
		zap.Uint64("overflows", s.Overflows.Load()),
		zap.Uint64("not_regular", s.NotRegular.Load()),
		zap.Uint64("oversize", s.Oversize.Load()),
		zap.Uint64("scans", s.Scans.Load()),
		zap.Uint64("bytes_scanned", s.BytesScanned.Load()),
		zap.Uint64("detections", s.Detections.Load()),
		zap.Uint64("late_detections", s.LateDetections.Load()),
		zap.Uint64("timed_out", s.TimedOut.Load()),
		zap.Uint64("errors", s.Errors.Load()),
		zap.Uint64("answer_errors", s.AnswerErrors.Load()),
		zap.Uint64("parse_errors", s.ParseErrors.Load()),
		zap.Uint64("kernel_denied", s.KernelDenied.Load()),
	}
}
