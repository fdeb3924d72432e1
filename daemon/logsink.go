package daemon

import (
	"fmt"
	"io"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf16"
	"unicode/utf8"

	"go.uber.org/zap/zapcore"

	"github.com/fanguard/fanguard/systemd"
)

// NewLogEncoder returns the encoder of the log on standard error ([log]
// format; the journal has its own, systemd.JournalCore):
//
//   - "console" (or ""): one line per entry, the time (ISO 8601), the
//     level, the message and the fields as one JSON object;
//   - "json": one JSON object per line with "time" (RFC 3339 with
//     nanoseconds), "priority" (the journal's syslog number, see
//     systemd.Priority), "message", "logger" if named, and the fields under
//     their own keys: the journal's names without FANGUARD_, in lower case.
//
// Either way a duration is written as Go prints it, with its unit ("1.5s",
// "250ms"), as the journal has it. Write the encoder's output through a
// LogSink: it escapes what a terminal would act on.
func NewLogEncoder(format string) (zapcore.Encoder, error) {
	switch format {
	case "", "console":
		return zapcore.NewConsoleEncoder(zapcore.EncoderConfig{
			TimeKey:          "T",
			LevelKey:         "L",
			NameKey:          "N",
			MessageKey:       "M",
			StacktraceKey:    "S",
			LineEnding:       zapcore.DefaultLineEnding,
			EncodeLevel:      zapcore.LowercaseLevelEncoder,
			EncodeTime:       zapcore.ISO8601TimeEncoder,
			EncodeDuration:   zapcore.StringDurationEncoder,
			EncodeName:       zapcore.FullNameEncoder,
			ConsoleSeparator: "\t",
		}), nil
	case "json":
		return zapcore.NewJSONEncoder(zapcore.EncoderConfig{
			TimeKey:        "time",
			LevelKey:       "priority",
			NameKey:        "logger",
			MessageKey:     "message",
			StacktraceKey:  "stacktrace",
			LineEnding:     zapcore.DefaultLineEnding,
			EncodeLevel:    func(l zapcore.Level, enc zapcore.PrimitiveArrayEncoder) { enc.AppendInt(systemd.Priority(l)) },
			EncodeTime:     zapcore.TimeEncoderOfLayout(time.RFC3339Nano),
			EncodeDuration: zapcore.StringDurationEncoder,
			EncodeName:     zapcore.FullNameEncoder,
		}), nil
	}
	return nil, fmt.Errorf("log format %q: want \"console\" or \"json\"", format)
}

// LogSink is an asynchronous, bounded zapcore.WriteSyncer. Write copies the
// entry into a queue and returns at once; one goroutine writes the queue to
// the underlying writer. When the queue is full the entry is dropped and
// counted: a log sink (journald, a pipe, a terminal) may itself be waiting
// on an open that this daemon holds, and the event path must never wait for
// it (design §1, rule 2).
//
// It also escapes, in each entry, the runes that a terminal or a log viewer
// would act on and that zap's encoders leave raw (see appendPrintable): a
// file name is the attacker's to choose.
//
// LogSink is safe for concurrent use.
type LogSink struct {
	w       io.Writer
	queue   chan *[]byte
	free    sync.Pool
	dropped atomic.Uint64
	closed  atomic.Bool
	done    chan struct{}
	close   sync.Once
}

// NewLogSink starts a sink that writes to w, holding at most size entries.
func NewLogSink(w io.Writer, size int) *LogSink {
	if size <= 0 {
		size = 4096
	}
	s := &LogSink{w: w, queue: make(chan *[]byte, size), done: make(chan struct{})}
	go s.run()
	return s
}

func (s *LogSink) run() {
	defer close(s.done)
	for b := range s.queue {
		if b == nil {
			return // Close's marker: everything before it is written
		}
		s.w.Write(*b)
		if cap(*b) <= 4096 {
			s.free.Put(b)
		}
	}
}

// Write queues a copy of p, escaped by appendPrintable. It never blocks;
// a full queue, or a closed sink, drops p.
func (s *LogSink) Write(p []byte) (int, error) {
	if s.closed.Load() {
		s.dropped.Add(1)
		return len(p), nil
	}
	b, _ := s.free.Get().(*[]byte)
	if b == nil {
		b = new([]byte)
	}
	*b = appendPrintable((*b)[:0], p)
	select {
	case s.queue <- b:
	default:
		s.dropped.Add(1)
	}
	return len(p), nil
}

// Sync does nothing: entries are written in order by the sink's goroutine,
// and waiting for them here could block the event path. Close flushes.
func (s *LogSink) Sync() error { return nil }

// Dropped returns the number of entries dropped because the queue was full.
func (s *LogSink) Dropped() uint64 { return s.dropped.Load() }

// Close writes what is queued and stops the sink; later writes are dropped.
func (s *LogSink) Close() error {
	s.close.Do(func() {
		s.closed.Store(true)
		s.queue <- nil
	})
	<-s.done
	return nil
}

// appendPrintable appends p to b, with each rune that strconv does not
// call printable (but tab and newline) written as a JSON escape such as
// \u007f (a surrogate pair above U+FFFF), and each byte that is not UTF-8
// as \ufffd. zap's JSON fields escape the C0 controls and invalid UTF-8
// but leave DEL, the C1 controls (U+009B is CSI to some terminals),
// bidirectional overrides and line separators raw. Within a JSON string
// the escape stands for the same rune: the fields decode as before.
func appendPrintable(b, p []byte) []byte {
	const hex = "0123456789abcdef"
	esc := func(b []byte, r rune) []byte {
		return append(b, '\\', 'u', hex[r>>12&0xf], hex[r>>8&0xf], hex[r>>4&0xf], hex[r&0xf])
	}
	for len(p) > 0 {
		if c := p[0]; c >= 0x20 && c < 0x7f || c == '\t' || c == '\n' {
			b = append(b, c)
			p = p[1:]
			continue
		}
		r, n := utf8.DecodeRune(p)
		switch {
		case r == utf8.RuneError && n == 1:
			b = esc(b, utf8.RuneError)
		case strconv.IsPrint(r):
			b = append(b, p[:n]...)
		case r > 0xffff:
			r1, r2 := utf16.EncodeRune(r)
			b = esc(esc(b, r1), r2)
		default:
			b = esc(b, r)
		}
		p = p[n:]
	}
	return b
}
