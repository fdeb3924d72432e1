package daemon

import (
	"io"
	"sync"
	"sync/atomic"
)

// LogSink is an asynchronous, bounded zapcore.WriteSyncer. Write copies the
// entry into a queue and returns at once; one goroutine writes the queue to
// the underlying writer. When the queue is full the entry is dropped and
// counted: a log sink (journald, a pipe, a terminal) may itself be waiting
// on an open that this daemon holds, and the event path must never wait for
// it (design §1, rule 2).
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

// Write queues a copy of p. It never blocks; a full queue, or a closed
// sink, drops p.
func (s *LogSink) Write(p []byte) (int, error) {
	if s.closed.Load() {
		s.dropped.Add(1)
		return len(p), nil
	}
	b, _ := s.free.Get().(*[]byte)
	if b == nil {
		b = new([]byte)
	}
	*b = append((*b)[:0], p...)
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
