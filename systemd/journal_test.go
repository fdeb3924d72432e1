package systemd

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/sys/unix"
)

// fakeJournal listens where journald would, in a temporary directory.
type fakeJournal struct {
	t    *testing.T
	path string
	ln   *net.UnixConn
}

func newFakeJournal(t *testing.T) *fakeJournal {
	t.Helper()
	path := filepath.Join(t.TempDir(), "journal.sock")
	ln, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return &fakeJournal{t: t, path: path, ln: ln}
}

// entry is one journal entry as received: field names and values in order.
type entry [][2]string

// fields returns the entry as a map of values by name.
func (e entry) fields() map[string][]string {
	m := map[string][]string{}
	for _, f := range e {
		m[f[0]] = append(m[f[0]], f[1])
	}
	return m
}

// receive returns the next entry, from a datagram or a memfd, within d.
func (j *fakeJournal) receive(d time.Duration) (entry, error) {
	buf := make([]byte, 1<<20)
	oob := make([]byte, unix.CmsgSpace(4*4))
	j.ln.SetReadDeadline(time.Now().Add(d))
	n, oobn, _, _, err := j.ln.ReadMsgUnix(buf, oob)
	if err != nil {
		return nil, err
	}
	data := buf[:n]
	if oobn > 0 {
		msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err != nil {
			return nil, err
		}
		if len(msgs) != 1 {
			return nil, fmt.Errorf("%d control messages, want 1", len(msgs))
		}
		fds, err := unix.ParseUnixRights(&msgs[0])
		if err != nil {
			return nil, err
		}
		files := make([]*os.File, len(fds))
		for i, fd := range fds {
			files[i] = os.NewFile(uintptr(fd), "memfd")
			defer files[i].Close()
		}
		if len(fds) != 1 || n != 0 {
			return nil, fmt.Errorf("%d fds and %d bytes of payload, want one fd and none", len(fds), n)
		}
		seals, err := unix.FcntlInt(uintptr(fds[0]), unix.F_GET_SEALS, 0)
		if err != nil {
			return nil, err
		}
		if want := unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_WRITE | unix.F_SEAL_SEAL; seals&want != want {
			return nil, fmt.Errorf("memfd seals %#x, want %#x", seals, want)
		}
		// The sender's file offset is shared and sits at the end: read
		// from 0, as journald does.
		fi, err := files[0].Stat()
		if err != nil {
			return nil, err
		}
		if data, err = io.ReadAll(io.NewSectionReader(files[0], 0, fi.Size())); err != nil {
			return nil, err
		}
	}
	return parseNative(data)
}

// next returns the next entry or fails the test.
func (j *fakeJournal) next() entry {
	j.t.Helper()
	e, err := j.receive(5 * time.Second)
	if err != nil {
		j.t.Fatalf("receiving journal entry: %v", err)
	}
	return e
}

// parseNative parses the journal's native format: NAME=value\n, or
// NAME\n<little-endian uint64 length>value\n. It checks every name as
// journald does.
func parseNative(b []byte) (entry, error) {
	var e entry
	for len(b) > 0 {
		nl := bytes.IndexByte(b, '\n')
		if nl < 0 {
			return nil, fmt.Errorf("field %q: no newline", b)
		}
		line := b[:nl]
		var name, value []byte
		if eq := bytes.IndexByte(line, '='); eq >= 0 {
			name, value = line[:eq], line[eq+1:]
			b = b[nl+1:]
		} else {
			name, b = line, b[nl+1:]
			if len(b) < 8 {
				return nil, fmt.Errorf("field %s: short length", name)
			}
			size := binary.LittleEndian.Uint64(b)
			b = b[8:]
			if size >= uint64(len(b)) || b[size] != '\n' {
				return nil, fmt.Errorf("field %s: length %d does not fit %d bytes ending in a newline", name, size, len(b))
			}
			value, b = b[:size], b[size+1:]
		}
		if !validFieldName(string(name)) {
			return nil, fmt.Errorf("invalid field name %q", name)
		}
		e = append(e, [2]string{string(name), string(value)})
	}
	return e, nil
}

// validFieldName checks a client-supplied field name as journald does.
func validFieldName(s string) bool {
	if s == "" || len(s) > 64 || s[0] == '_' || isDigit(s[0]) {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !isUpper(c) && !isDigit(c) && c != '_' {
			return false
		}
	}
	return true
}

func newTestCore(t *testing.T, opts JournalOptions) *JournalCore {
	t.Helper()
	c, err := NewJournalCore(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Error(err)
		}
	})
	return c
}

func TestJournalDetection(t *testing.T) {
	j := newFakeJournal(t)
	core := newTestCore(t, JournalOptions{Socket: j.path, Identifier: "fanguard-test"})
	log := zap.New(core, zap.AddCaller()).With(zap.Uint64("generation", 7))

	path := "/srv/in\ncoming/\xff\xfe-not-utf8.exe"
	_, file, line, _ := runtime.Caller(0)
	log.Warn("detection", zap.String("message_id", DetectionMessageID), zap.String("rule", "EICAR_Test_File"),
		zap.String("path", path), zap.String("sha256", strings.Repeat("ab", 32)), zap.Int32("pid", 4242),
		zap.String("exe", "/usr/bin/cat"), zap.Uint32("uid", 1000))

	got := j.next().fields()
	want := map[string][]string{
		"MESSAGE":             {"detection"},
		"PRIORITY":            {"4"},
		"SYSLOG_IDENTIFIER":   {"fanguard-test"},
		"CODE_FILE":           {file},
		"CODE_LINE":           {strconv.Itoa(line + 1)},
		"CODE_FUNC":           {"github.com/fanguard/fanguard/systemd.TestJournalDetection"},
		"MESSAGE_ID":          {DetectionMessageID},
		"FANGUARD_GENERATION": {"7"},
		"FANGUARD_RULE":       {"EICAR_Test_File"},
		"FANGUARD_PATH":       {path},
		"FANGUARD_SHA256":     {strings.Repeat("ab", 32)},
		"FANGUARD_PID":        {"4242"},
		"FANGUARD_EXE":        {"/usr/bin/cat"},
		"FANGUARD_UID":        {"1000"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("detection entry (-want +got):\n%s", diff)
	}
	if core.Dropped() != 0 {
		t.Errorf("Dropped() = %d, want 0", core.Dropped())
	}
}

func TestDetectionMessageID(t *testing.T) {
	if !isID128(DetectionMessageID) || strings.ToLower(DetectionMessageID) != DetectionMessageID {
		t.Errorf("DetectionMessageID %q is not 32 lower-case hex digits", DetectionMessageID)
	}
}

func TestJournalPriorities(t *testing.T) {
	j := newFakeJournal(t)
	core := newTestCore(t, JournalOptions{Socket: j.path, Level: zapcore.DebugLevel})
	tests := []struct {
		level zapcore.Level
		want  string
	}{
		{zapcore.DebugLevel, "7"},
		{zapcore.InfoLevel, "6"},
		{zapcore.WarnLevel, "4"},
		{zapcore.ErrorLevel, "3"},
		{zapcore.DPanicLevel, "2"},
		{zapcore.PanicLevel, "2"},
		{zapcore.FatalLevel, "2"},
	}
	for _, tt := range tests {
		t.Run(tt.level.String(), func(t *testing.T) {
			ent := zapcore.Entry{Level: tt.level, Message: "at " + tt.level.String()}
			if ce := core.Check(ent, nil); ce == nil {
				t.Fatalf("Check(%v) = nil", tt.level)
			}
			if err := core.Write(ent, nil); err != nil {
				t.Fatal(err)
			}
			got := j.next().fields()
			want := map[string][]string{"MESSAGE": {ent.Message}, "PRIORITY": {tt.want}, "SYSLOG_IDENTIFIER": {"fanguard"}}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("entry (-want +got):\n%s", diff)
			}
		})
	}
}

func TestJournalLevel(t *testing.T) {
	j := newFakeJournal(t)
	core := newTestCore(t, JournalOptions{Socket: j.path, Level: zapcore.WarnLevel})
	log := zap.New(core)
	if ce := log.Check(zapcore.InfoLevel, "quiet"); ce != nil {
		t.Error("Check(info) on a warn core is not nil")
	}
	if got := zapcore.LevelOf(core); got != zapcore.WarnLevel {
		t.Errorf("LevelOf = %v, want warn", got)
	}
	log.Info("quiet")
	log.Warn("loud")
	if got := j.next().fields()["MESSAGE"]; !cmp.Equal(got, []string{"loud"}) {
		t.Errorf("MESSAGE %q, want [loud]", got)
	}
}

type stringer struct{}

func (stringer) String() string { return "stringer" }

type object struct{ name string }

func (o object) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	enc.AddString("name", o.name)
	enc.AddInt("n", 2)
	return nil
}

func TestJournalFieldTypes(t *testing.T) {
	j := newFakeJournal(t)
	core := newTestCore(t, JournalOptions{Socket: j.path})
	when := time.Date(2025, 3, 1, 12, 30, 0, 5, time.UTC)
	log := zap.New(core).With(zap.String("worker", "w1"), zap.Namespace("ctx"), zap.String("inner", "yes"))
	log.Info("multi\nline message",
		zap.Bool("cached", true),
		zap.Int("count", -3),
		zap.Uint8("small", 255),
		zap.Float64("ratio", 0.25),
		zap.Float32("f32", 1.5),
		zap.Complex128("c", complex(1, -2)),
		zap.Duration("late", 1500*time.Millisecond),
		zap.Time("when", when),
		zap.Error(errors.New("scanning: permission denied")),
		zap.Stringer("s", stringer{}),
		zap.Strings("tags", []string{"a", "b\nc"}),
		zap.Object("obj", object{name: "x"}),
		zap.Any("meta", map[string]int{"k": 1}),
		zap.Binary("raw", []byte{0, '\n', 0xff}),
		zap.ByteString("bytes", []byte("b\xffs")),
		zap.String("message_id", "not-an-id"),
		zap.String("", "empty key"),
		zap.Skip(),
	)
	got := j.next().fields()
	want := map[string][]string{
		"MESSAGE":                 {"multi\nline message"},
		"PRIORITY":                {"6"},
		"SYSLOG_IDENTIFIER":       {"fanguard"},
		"FANGUARD_WORKER":         {"w1"},
		"FANGUARD_CTX_INNER":      {"yes"},
		"FANGUARD_CTX_CACHED":     {"true"},
		"FANGUARD_CTX_COUNT":      {"-3"},
		"FANGUARD_CTX_SMALL":      {"255"},
		"FANGUARD_CTX_RATIO":      {"0.25"},
		"FANGUARD_CTX_F32":        {"1.5"},
		"FANGUARD_CTX_C":          {"(1-2i)"},
		"FANGUARD_CTX_LATE":       {"1.5s"},
		"FANGUARD_CTX_WHEN":       {"2025-03-01T12:30:00.000000005Z"},
		"FANGUARD_CTX_ERROR":      {"scanning: permission denied"},
		"FANGUARD_CTX_S":          {"stringer"},
		"FANGUARD_CTX_TAGS":       {`["a","b\nc"]`},
		"FANGUARD_CTX_OBJ":        {`{"n":2,"name":"x"}`},
		"FANGUARD_CTX_META":       {`{"k":1}`},
		"FANGUARD_CTX_RAW":        {"\x00\n\xff"},
		"FANGUARD_CTX_BYTES":      {"b\xffs"},
		"FANGUARD_CTX_MESSAGE_ID": {"not-an-id"},
		"FANGUARD_CTX":            {"empty key"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("entry (-want +got):\n%s", diff)
	}
}

func TestJournalWithDoesNotLeak(t *testing.T) {
	j := newFakeJournal(t)
	core := newTestCore(t, JournalOptions{Socket: j.path})
	base := zap.New(core)
	a := base.With(zap.String("who", "a"), zap.String("message_id", DetectionMessageID))
	b := a.With(zap.String("who", "b"))
	a.Info("from a")
	b.Info("from b")
	base.Info("from base")
	for _, want := range []map[string][]string{
		{"MESSAGE": {"from a"}, "FANGUARD_WHO": {"a"}, "MESSAGE_ID": {DetectionMessageID}},
		{"MESSAGE": {"from b"}, "FANGUARD_WHO": {"a", "b"}, "MESSAGE_ID": {DetectionMessageID}},
		{"MESSAGE": {"from base"}},
	} {
		want["PRIORITY"] = []string{"6"}
		want["SYSLOG_IDENTIFIER"] = []string{"fanguard"}
		if diff := cmp.Diff(want, j.next().fields()); diff != "" {
			t.Errorf("entry (-want +got):\n%s", diff)
		}
	}
}

func TestJournalMessageIDCase(t *testing.T) {
	j := newFakeJournal(t)
	core := newTestCore(t, JournalOptions{Socket: j.path})
	zap.New(core).Info("upper", zap.String("message_id", strings.ToUpper(DetectionMessageID)))
	if got := j.next().fields()["MESSAGE_ID"]; !cmp.Equal(got, []string{DetectionMessageID}) {
		t.Errorf("MESSAGE_ID %q, want [%s]", got, DetectionMessageID)
	}
}

// TestJournalStuck: a journal that never reads never blocks Write; every
// entry is either delivered or counted as dropped.
func TestJournalStuck(t *testing.T) {
	j := newFakeJournal(t) // never read until the end
	core, err := NewJournalCore(JournalOptions{Socket: j.path, QueueSize: 64})
	if err != nil {
		t.Fatal(err)
	}
	log := zap.New(core)
	const writers, each = 4, 5000
	const n = writers * each
	done := make(chan struct{})
	for w := range writers {
		go func() {
			defer func() { done <- struct{}{} }()
			log := log.With(zap.Int("writer", w))
			for i := range each {
				log.Info("flood", zap.Int("i", i))
			}
		}()
	}
	timeout := time.After(30 * time.Second)
	for range writers {
		select {
		case <-done:
		case <-timeout:
			t.Fatal("Write blocked on a journal that does not read")
		}
	}
	if err := core.Close(); err != nil {
		t.Fatal(err)
	}
	delivered := 0
	for {
		if _, err := j.receive(100 * time.Millisecond); err != nil {
			break
		}
		delivered++
	}
	if core.Dropped() == 0 {
		t.Error("Dropped() = 0 after a flood into a journal that does not read")
	}
	if got := uint64(delivered) + core.Dropped(); got != n {
		t.Errorf("delivered %d + dropped %d = %d, want %d", delivered, core.Dropped(), got, n)
	}
}

func TestJournalAbsent(t *testing.T) {
	core, err := NewJournalCore(JournalOptions{Socket: filepath.Join(t.TempDir(), "no-journal")})
	if err != nil {
		t.Fatal(err)
	}
	log := zap.New(core)
	for range 5 {
		log.Error("nobody listens")
	}
	if err := core.Close(); err != nil {
		t.Fatal(err)
	}
	if core.Dropped() != 5 {
		t.Errorf("Dropped() = %d, want 5", core.Dropped())
	}
	log.Error("after close")
	if core.Dropped() != 6 {
		t.Errorf("Dropped() after a write to a closed core = %d, want 6", core.Dropped())
	}
	if err := core.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// TestJournalCloseFlushes: Close sends what is queued before it returns.
func TestJournalCloseFlushes(t *testing.T) {
	j := newFakeJournal(t)
	core, err := NewJournalCore(JournalOptions{Socket: j.path})
	if err != nil {
		t.Fatal(err)
	}
	log := zap.New(core)
	for i := range 5 { // fewer than net.unix.max_dgram_qlen's default, 10
		log.Info("queued", zap.Int("i", i))
	}
	if err := core.Close(); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		e, err := j.receive(time.Second)
		if err != nil {
			t.Fatalf("entry %d after Close: %v", i, err)
		}
		if got := e.fields()["FANGUARD_I"]; !cmp.Equal(got, []string{strconv.Itoa(i)}) {
			t.Errorf("entry %d: FANGUARD_I %q", i, got)
		}
	}
}

// TestJournalOversized: an entry larger than the socket's send buffer goes
// through a sealed memfd, whole.
func TestJournalOversized(t *testing.T) {
	j := newFakeJournal(t)
	core := newTestCore(t, JournalOptions{Socket: j.path})
	sndbuf, err := unix.GetsockoptInt(core.sink.fd, unix.SOL_SOCKET, unix.SO_SNDBUF)
	if err != nil {
		t.Fatal(err)
	}
	big := strings.Repeat("x", sndbuf+1<<10)
	zap.New(core).Info("big", zap.String("blob", big+"\nend"))
	got := j.next().fields()
	want := map[string][]string{
		"MESSAGE":           {"big"},
		"PRIORITY":          {"6"},
		"SYSLOG_IDENTIFIER": {"fanguard"},
		"FANGUARD_BLOB":     {big + "\nend"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("entry (-want +got):\n%.2000s", diff)
	}
	if core.Oversized() != 1 || core.Dropped() != 0 {
		t.Errorf("Oversized() = %d, Dropped() = %d; want 1, 0", core.Oversized(), core.Dropped())
	}
}

func TestJournalSocketPathTooLong(t *testing.T) {
	_, err := NewJournalCore(JournalOptions{Socket: "/" + strings.Repeat("x", 200)})
	if err == nil {
		t.Fatal("NewJournalCore with a 201-byte socket path: no error")
	}
}

func TestFieldName(t *testing.T) {
	tests := []struct {
		ns, key string
		want    string
	}{
		{key: "rule", want: "FANGUARD_RULE"},
		{key: "rule_file", want: "FANGUARD_RULE_FILE"},
		{key: "late", want: "FANGUARD_LATE"},
		{key: "sha256", want: "FANGUARD_SHA256"},
		{key: "a-b.c", want: "FANGUARD_A_B_C"},
		{key: "errorVerbose", want: "FANGUARD_ERROR_VERBOSE"},
		{key: "errorCauses", want: "FANGUARD_ERROR_CAUSES"},
		{key: "HTTPServer", want: "FANGUARD_HTTP_SERVER"},
		{key: "userID", want: "FANGUARD_USER_ID"},
		{key: "sha256Sum", want: "FANGUARD_SHA256_SUM"},
		{key: "PID", want: "FANGUARD_PID"},
		{key: "_private__key_", want: "FANGUARD_PRIVATE_KEY"},
		{key: "a b\tc=d\ne", want: "FANGUARD_A_B_C_D_E"},
		{key: "größe", want: "FANGUARD_GR_E"},
		{key: "2fa", want: "FANGUARD_2FA"},
		{key: "", want: "FANGUARD_FIELD"},
		{key: "--", want: "FANGUARD_FIELD"},
		{ns: "scan.", key: "bytes", want: "FANGUARD_SCAN_BYTES"},
		{ns: "a.b.", key: "", want: "FANGUARD_A_B"},
		{key: strings.Repeat("x", 100), want: "FANGUARD_" + strings.Repeat("X", 55)},
		{key: strings.Repeat("x", 54) + "_y", want: "FANGUARD_" + strings.Repeat("X", 54)},
	}
	for _, tt := range tests {
		t.Run(tt.ns+tt.key, func(t *testing.T) {
			got := string(appendFieldName(nil, tt.ns, tt.key))
			if got != tt.want {
				t.Errorf("field name for %q+%q = %q, want %q", tt.ns, tt.key, got, tt.want)
			}
			if !validFieldName(got) {
				t.Errorf("field name %q is not valid for journald", got)
			}
		})
	}
}

func TestStderrIsJournal(t *testing.T) {
	var st unix.Stat_t
	if err := unix.Fstat(2, &st); err != nil {
		t.Fatal(err)
	}
	stream := fmt.Sprintf("%d:%d", st.Dev, st.Ino)
	tests := []struct {
		env  string
		want bool
	}{
		{env: stream, want: true},
		{env: fmt.Sprintf("%d:%d", st.Dev, st.Ino+1)},
		{env: fmt.Sprintf("%d:%d", st.Dev+1, st.Ino)},
		{env: ""},
		{env: "garbage"},
		{env: stream + ":1"},
		{env: "-1:5"},
	}
	for _, tt := range tests {
		t.Run(tt.env, func(t *testing.T) {
			t.Setenv("JOURNAL_STREAM", tt.env)
			if got := StderrIsJournal(); got != tt.want {
				t.Errorf("StderrIsJournal() with JOURNAL_STREAM=%q = %v, want %v", tt.env, got, tt.want)
			}
		})
	}
	if isJournalStream(stream, -1) {
		t.Error("isJournalStream on a closed fd = true")
	}
}

func BenchmarkJournalWrite(b *testing.B) {
	path := filepath.Join(b.TempDir(), "journal.sock")
	ln, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go func() { // a journal that keeps up
		buf := make([]byte, 1<<16)
		for {
			if _, err := ln.Read(buf); err != nil {
				return
			}
		}
	}()
	core, err := NewJournalCore(JournalOptions{Socket: path})
	if err != nil {
		b.Fatal(err)
	}
	defer core.Close()
	log := zap.New(core).With(zap.Uint64("generation", 3))
	b.ReportAllocs()
	for b.Loop() {
		log.Warn("detection", zap.String("message_id", DetectionMessageID), zap.String("rule", "EICAR_Test_File"),
			zap.String("path", "/srv/incoming/eicar.com"), zap.String("sha256", "275a021bbfb6489e54d471899f7db9d1663fc695ec2fe2a2c4538aabf651fd0f"),
			zap.Int32("pid", 4242), zap.String("exe", "/usr/bin/cat"), zap.Uint32("uid", 1000))
	}
	b.ReportMetric(float64(core.Dropped()), "dropped")
}
