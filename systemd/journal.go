package systemd

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap/zapcore"
	"golang.org/x/sys/unix"
)

// DetectionMessageID is the journal MESSAGE_ID of every detection, so that
// `journalctl MESSAGE_ID=b8ad2451685fd5a3e5cad5729a4f7c3d` lists them. The
// daemon adds it to a detection's log entry as zap.String("message_id",
// DetectionMessageID); JournalCore turns a "message_id" field holding 32 hex
// digits into MESSAGE_ID. It never changes: journal queries and catalogs
// depend on it.
const DetectionMessageID = "b8ad2451685fd5a3e5cad5729a4f7c3d"

// JournalOptions configures a JournalCore. The zero value means the
// defaults.
type JournalOptions struct {
	// Level decides which entries are written. Nil means zapcore.InfoLevel.
	Level zapcore.LevelEnabler

	// Socket is journald's native-protocol socket. Empty means
	// /run/systemd/journal/socket.
	Socket string

	// QueueSize is how many encoded entries may wait for the sending
	// goroutine; beyond that, entries are dropped and counted. Zero or less
	// means 4096.
	QueueSize int

	// Identifier is SYSLOG_IDENTIFIER, the name journalctl shows and
	// `journalctl -t` selects. Empty means "fanguard".
	Identifier string
}

const (
	defaultJournalSocket = "/run/systemd/journal/socket"
	defaultQueueSize     = 4096
	defaultIdentifier    = "fanguard"

	// sendBuffer is the SO_SNDBUF asked for (the kernel caps it at
	// net.core.wmem_max): a bigger buffer absorbs bursts before the socket
	// says EAGAIN, as the native protocol's documentation advises.
	sendBuffer = 8 << 20

	// flushTimeout bounds how long a Panic or Fatal entry waits to reach
	// the journal before zap ends the process.
	flushTimeout = time.Second

	// maxPooled is the largest buffer kept for reuse.
	maxPooled = 64 << 10
)

// JournalCore is a zapcore.Core that writes each entry to journald as one
// native-protocol datagram with structured fields: MESSAGE, PRIORITY,
// SYSLOG_IDENTIFIER, CODE_FILE/CODE_LINE/CODE_FUNC when the logger adds the
// caller (zap.AddCaller), MESSAGE_ID from a "message_id" field, and every
// other field as FANGUARD_<KEY> with the key in upper snake case (see
// Write).
//
// Logging is asynchronous and lossy under pressure (design §1, rule 2):
// Write encodes the entry, queues it and returns at once; one goroutine sends
// the queue on a non-blocking socket. When the queue is full, or the
// journal's socket is full (EAGAIN) or absent, the entry is dropped and
// counted by Dropped. Entries too large for one datagram go through a sealed
// memfd, as journald allows, and are counted by Oversized.
//
// Cores made by With share the queue, the socket and the counters with the
// core they come from; Close on any of them stops them all. JournalCore is
// safe for concurrent use.
type JournalCore struct {
	enab   zapcore.LevelEnabler
	sink   *journalSink
	fields []byte // the fields added by With, encoded
	ns     string // the namespace the With fields left open, "" for none
}

var _ zapcore.Core = (*JournalCore)(nil)

// NewJournalCore opens a socket towards the journal and starts the goroutine
// that sends to it. It does not check that journald listens: entries sent
// to an absent journal are dropped and counted. Close stops it.
func NewJournalCore(opts JournalOptions) (*JournalCore, error) {
	if opts.Level == nil {
		opts.Level = zapcore.InfoLevel
	}
	if opts.Socket == "" {
		opts.Socket = defaultJournalSocket
	}
	if opts.QueueSize <= 0 {
		opts.QueueSize = defaultQueueSize
	}
	if opts.Identifier == "" {
		opts.Identifier = defaultIdentifier
	}
	if len(opts.Socket) >= len(unix.RawSockaddrUnix{}.Path) {
		return nil, fmt.Errorf("opening journal socket %s: path longer than %d bytes", opts.Socket, len(unix.RawSockaddrUnix{}.Path)-1)
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("opening journal socket: %w", err)
	}
	// Best effort: without it the kernel default applies.
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, sendBuffer)

	s := &journalSink{
		fd:    fd,
		addr:  &unix.SockaddrUnix{Name: opts.Socket},
		queue: make(chan *record, opts.QueueSize),
		done:  make(chan struct{}),
	}
	s.ident = appendValue([]byte("SYSLOG_IDENTIFIER"), opts.Identifier)
	go s.run()
	return &JournalCore{enab: opts.Level, sink: s}, nil
}

// Enabled reports whether entries at level l are written.
func (c *JournalCore) Enabled(l zapcore.Level) bool { return c.enab.Enabled(l) }

// Level returns the minimum level written, for zapcore.LevelOf.
func (c *JournalCore) Level() zapcore.Level { return zapcore.LevelOf(c.enab) }

// With returns a core that adds fields to every entry it writes. It shares
// the queue and socket of c.
func (c *JournalCore) With(fields []zapcore.Field) zapcore.Core {
	r := &record{b: append([]byte(nil), c.fields...), ns: c.ns}
	for _, f := range fields {
		f.AddTo(r)
	}
	return &JournalCore{enab: c.enab, sink: c.sink, fields: r.b, ns: r.ns}
}

// Check adds c to ce when entries at ent's level are written.
func (c *JournalCore) Check(ent zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(ent.Level) {
		return ce.AddCore(ent, c)
	}
	return ce
}

// Write encodes ent with its fields and queues it; it does not wait for the
// journal. It returns nil even when the entry is dropped: zap reports write
// errors to its error output, stderr, which may be the journal that is not
// keeping up. Dropped counts the losses.
//
// Field values are written as they are: strings and byte strings byte for
// byte (newlines and invalid UTF-8 included), numbers in decimal, durations
// and times as Go prints them (time in RFC 3339), bools as true or false,
// errors by Error(), arrays, objects and other values as JSON. A namespace
// (zap.Namespace) prefixes the keys after it.
//
// Entries at PanicLevel and above wait up to a second for the queue to
// reach the journal, since zap ends the process after writing them.
func (c *JournalCore) Write(ent zapcore.Entry, fields []zapcore.Field) error {
	r := c.sink.get()
	r.b = appendValue(append(r.b, "MESSAGE"...), ent.Message)
	r.b = append(r.b, priorityLine(ent.Level)...)
	r.b = append(r.b, c.sink.ident...)
	if ent.Caller.Defined {
		r.b = appendValue(append(r.b, "CODE_FILE"...), ent.Caller.File)
		r.b = strconv.AppendInt(append(r.b, "CODE_LINE="...), int64(ent.Caller.Line), 10)
		r.b = append(r.b, '\n')
		if ent.Caller.Function != "" {
			r.b = appendValue(append(r.b, "CODE_FUNC"...), ent.Caller.Function)
		}
	}
	if ent.LoggerName != "" {
		r.b = appendValue(append(r.b, "FANGUARD_LOGGER"...), ent.LoggerName)
	}
	if ent.Stack != "" {
		r.b = appendValue(append(r.b, "FANGUARD_STACKTRACE"...), ent.Stack)
	}
	r.b = append(r.b, c.fields...)
	r.ns = c.ns
	for _, f := range fields {
		f.AddTo(r)
	}
	c.sink.enqueue(r)
	if ent.Level >= zapcore.PanicLevel {
		c.sink.flush(flushTimeout)
	}
	return nil
}

// Sync returns at once: waiting for the queue could block the event path.
// Close flushes.
func (c *JournalCore) Sync() error { return nil }

// Dropped returns the number of entries lost: queue full, journal socket
// full or absent, or closed core.
func (c *JournalCore) Dropped() uint64 { return c.sink.dropped.Load() }

// Oversized returns the number of entries too large for one datagram. They
// were sent through a memfd; those that could not be are counted by Dropped
// as well.
func (c *JournalCore) Oversized() uint64 { return c.sink.oversized.Load() }

// Close sends what is queued, stops the sending goroutine and closes the
// socket. It waits for the queue, not for the journal: a journal that does
// not read makes the remaining entries drop. Entries written during or after
// Close are dropped. Calling Close again returns nil.
func (c *JournalCore) Close() error { return c.sink.close() }

// Priority returns the syslog priority the journal gives entries of zap
// level l: debug 7 (and below), info 6, warn 4, error 3, dpanic, panic
// and fatal 2 (critical). Logs written elsewhere use the same numbers.
func Priority(l zapcore.Level) int {
	switch {
	case l <= zapcore.DebugLevel:
		return 7
	case l == zapcore.InfoLevel:
		return 6
	case l == zapcore.WarnLevel:
		return 4
	case l == zapcore.ErrorLevel:
		return 3
	default:
		return 2
	}
}

// priorityLine returns the PRIORITY field for a zap level (see Priority).
func priorityLine(l zapcore.Level) string {
	return priorityLines[Priority(l)]
}

var priorityLines = [...]string{
	0: "PRIORITY=0\n", 1: "PRIORITY=1\n", 2: "PRIORITY=2\n", 3: "PRIORITY=3\n",
	4: "PRIORITY=4\n", 5: "PRIORITY=5\n", 6: "PRIORITY=6\n", 7: "PRIORITY=7\n",
}

// journalSink owns the socket and the goroutine that sends to it; the cores
// of one NewJournalCore share it.
type journalSink struct {
	fd    int // owned by run until done is closed, then by close
	addr  *unix.SockaddrUnix
	ident []byte // the SYSLOG_IDENTIFIER field, encoded
	queue chan *record
	free  sync.Pool // of *record
	done  chan struct{}
	stuck bool // the last send found the journal full after waiting; owned by run

	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error

	dropped   atomic.Uint64
	oversized atomic.Uint64
}

func (s *journalSink) get() *record {
	r, _ := s.free.Get().(*record)
	if r == nil {
		r = &record{b: make([]byte, 0, 1024)}
	}
	r.b, r.ns = r.b[:0], ""
	return r
}

func (s *journalSink) put(r *record) {
	if cap(r.b) <= maxPooled {
		s.free.Put(r)
	}
}

func (s *journalSink) enqueue(r *record) {
	if s.closed.Load() {
		s.dropped.Add(1)
		s.put(r)
		return
	}
	select {
	case s.queue <- r:
	default:
		s.dropped.Add(1)
		s.put(r)
	}
}

// flush waits up to timeout for everything queued so far to be sent.
func (s *journalSink) flush(timeout time.Duration) {
	if s.closed.Load() {
		return
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	m := &record{mark: make(chan struct{})}
	select {
	case s.queue <- m:
	case <-t.C:
		return
	}
	select {
	case <-m.mark:
	case <-t.C:
	}
}

func (s *journalSink) run() {
	defer close(s.done)
	for r := range s.queue {
		switch {
		case r.stop:
			return
		case r.mark != nil:
			close(r.mark)
			continue
		}
		s.send(r.b)
		s.put(r)
	}
}

// send sends one entry. When the journal's queue is full (EAGAIN: a burst,
// and net.unix.max_dgram_qlen is small on many hosts) it retries for up to
// sendPatience, backing off; only this goroutine waits, never a writer —
// they go on filling the bounded queue, or dropping when it is full.
//
// A journal that stays full for all that time is taken as stuck: later
// entries get one try each, without waiting, until one goes through.
func (s *journalSink) send(b []byte) {
	patience := sendPatience
	if s.stuck {
		patience = 0
	}
	err := unix.Sendto(s.fd, b, 0, s.addr)
	for wait, waited := time.Millisecond, time.Duration(0); err == unix.EINTR || err == unix.EAGAIN && waited < patience; {
		if err == unix.EAGAIN {
			time.Sleep(wait)
			waited += wait
			wait = min(2*wait, 50*time.Millisecond)
		}
		err = unix.Sendto(s.fd, b, 0, s.addr)
	}
	s.stuck = err == unix.EAGAIN
	switch {
	case err == nil:
	case err == unix.EMSGSIZE || err == unix.ENOBUFS:
		s.oversized.Add(1)
		if err := s.sendMemfd(b); err != nil {
			s.dropped.Add(1)
		}
	default: // EAGAIN: the journal does not keep up; ENOENT, ECONNREFUSED: it is gone
		s.dropped.Add(1)
	}
}

// sendPatience bounds how long the sender waits for room in the journal's
// queue before it drops an entry.
const sendPatience = 250 * time.Millisecond

// sendMemfd sends b as the content of a sealed memfd, the native protocol's
// way for entries larger than a datagram.
func (s *journalSink) sendMemfd(b []byte) error {
	mfd, err := unix.MemfdCreate("fanguard-journal", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return fmt.Errorf("creating memfd: %w", err)
	}
	defer unix.Close(mfd)
	for rest := b; len(rest) > 0; {
		n, err := unix.Write(mfd, rest)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("writing memfd: %w", err)
		}
		rest = rest[n:]
	}
	seals := unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_WRITE | unix.F_SEAL_SEAL
	if _, err := unix.FcntlInt(uintptr(mfd), unix.F_ADD_SEALS, seals); err != nil {
		return fmt.Errorf("sealing memfd: %w", err)
	}
	err = unix.Sendmsg(s.fd, nil, unix.UnixRights(mfd), s.addr, 0)
	for err == unix.EINTR {
		err = unix.Sendmsg(s.fd, nil, unix.UnixRights(mfd), s.addr, 0)
	}
	if err != nil {
		return fmt.Errorf("sending memfd: %w", err)
	}
	return nil
}

func (s *journalSink) close() error {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		s.queue <- &record{stop: true} // the sender never waits, so room comes
		<-s.done
		for drained := false; !drained; {
			select {
			case r := <-s.queue: // written while closing
				if r.mark != nil {
					close(r.mark)
				} else {
					s.dropped.Add(1)
				}
			default:
				drained = true
			}
		}
		if err := unix.Close(s.fd); err != nil {
			s.closeErr = fmt.Errorf("closing journal socket: %w", err)
		}
	})
	return s.closeErr
}

// StderrIsJournal reports whether standard error is connected to the
// journal: $JOURNAL_STREAM, set by the service manager, names the device and
// inode of the stream it connected, and fd 2 still is that stream (not
// redirected by a wrapper). Then logging through JournalCore loses nothing
// that stderr would have shown, and gains priorities and fields.
func StderrIsJournal() bool {
	return isJournalStream(os.Getenv("JOURNAL_STREAM"), 2)
}

func isJournalStream(env string, fd int) bool {
	devText, inoText, ok := strings.Cut(env, ":")
	if !ok {
		return false
	}
	dev, errDev := strconv.ParseUint(devText, 10, 64)
	ino, errIno := strconv.ParseUint(inoText, 10, 64)
	if errDev != nil || errIno != nil {
		return false
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return false
	}
	return uint64(st.Dev) == dev && uint64(st.Ino) == ino
}
