package fan

import (
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
)

// record builds one event record as the kernel writes it, followed by
// the info records infos.
func record(mask uint64, fd, pid int32, infos ...[]byte) []byte {
	b := make([]byte, MetadataSize)
	for _, in := range infos {
		b = append(b, in...)
	}
	ne := binary.NativeEndian
	ne.PutUint32(b[0:], uint32(len(b)))
	b[4] = unix.FANOTIFY_METADATA_VERSION
	ne.PutUint16(b[6:], MetadataSize)
	ne.PutUint64(b[8:], mask)
	ne.PutUint32(b[16:], uint32(fd))
	ne.PutUint32(b[20:], uint32(pid))
	return b
}

// info builds an info record of type typ with body.
func info(typ byte, body ...byte) []byte {
	b := append([]byte{typ, 0, 0, 0}, body...)
	binary.NativeEndian.PutUint16(b[2:], uint16(len(b)))
	return b
}

// pidfdInfo is the pidfd info record for pidfd.
func pidfdInfo(pidfd int32) []byte {
	return info(unix.FAN_EVENT_INFO_TYPE_PIDFD, binary.NativeEndian.AppendUint32(nil, uint32(pidfd))...)
}

func TestParseEvent(t *testing.T) {
	bad := func(mod func(b []byte) []byte) []byte { return mod(record(unix.FAN_OPEN_PERM, 5, 7)) }
	tests := []struct {
		name    string
		buf     []byte
		want    Event
		wantLen int
		wantErr bool
	}{
		{"open perm", record(unix.FAN_OPEN_PERM, 5, 7), Event{Mask: unix.FAN_OPEN_PERM, Fd: 5, Pid: 7, Pidfd: NoPidfd}, 24, false},
		{"pidfd", record(unix.FAN_OPEN_PERM, 5, 7, pidfdInfo(9)), Event{Mask: unix.FAN_OPEN_PERM, Fd: 5, Pid: 7, Pidfd: 9}, 32, false},
		{"pidfd gone", record(unix.FAN_OPEN_PERM, 5, 7, pidfdInfo(-3)), Event{Mask: unix.FAN_OPEN_PERM, Fd: 5, Pid: 7, Pidfd: -3}, 32, false},
		{"fd error", record(unix.FAN_OPEN_PERM, -11, 7, pidfdInfo(4)), Event{Mask: unix.FAN_OPEN_PERM, Fd: -11, Pid: 7, Pidfd: 4}, 32, false},
		{"other info records skipped", record(unix.FAN_OPEN_PERM, 9, 1, info(0x7f, make([]byte, 12)...), pidfdInfo(3)),
			Event{Mask: unix.FAN_OPEN_PERM, Fd: 9, Pid: 1, Pidfd: 3}, 48, false},
		{"overflow without fd", record(unix.FAN_Q_OVERFLOW, NoFd, 0), Event{Mask: unix.FAN_Q_OVERFLOW, Fd: NoFd, Pidfd: NoPidfd}, 24, false},
		{"two records, first parsed", append(record(unix.FAN_OPEN_PERM, 3, 4), record(unix.FAN_OPEN_PERM, 5, 6)...),
			Event{Mask: unix.FAN_OPEN_PERM, Fd: 3, Pid: 4, Pidfd: NoPidfd}, 24, false},
		{"short buffer", make([]byte, 23), Event{}, 0, true},
		{"empty", nil, Event{}, 0, true},
		{"wrong version", bad(func(b []byte) []byte { b[4] = 2; return b }), Event{}, 0, true},
		{"event_len too small", bad(func(b []byte) []byte { binary.NativeEndian.PutUint32(b, 8); return b }), Event{}, 0, true},
		{"event_len past buffer", bad(func(b []byte) []byte { binary.NativeEndian.PutUint32(b, 25); return b }), Event{}, 0, true},
		{"metadata_len too small: delimited", bad(func(b []byte) []byte { binary.NativeEndian.PutUint16(b[6:], 4); return b }),
			Event{Mask: unix.FAN_OPEN_PERM, Fd: 5, Pid: 7, Pidfd: NoPidfd}, 24, true},
		{"metadata_len past event_len: delimited", bad(func(b []byte) []byte { binary.NativeEndian.PutUint16(b[6:], 32); return b }),
			Event{Mask: unix.FAN_OPEN_PERM, Fd: 5, Pid: 7, Pidfd: NoPidfd}, 24, true},
		{"info header cut short: delimited", record(unix.FAN_OPEN_PERM, 5, 7, []byte{4, 0}), Event{Mask: unix.FAN_OPEN_PERM, Fd: 5, Pid: 7, Pidfd: NoPidfd}, 26, true},
		{"info length zero: delimited", record(unix.FAN_OPEN_PERM, 5, 7, []byte{4, 0, 0, 0}), Event{Mask: unix.FAN_OPEN_PERM, Fd: 5, Pid: 7, Pidfd: NoPidfd}, 28, true},
		{"info length past event: delimited", record(unix.FAN_OPEN_PERM, 5, 7, []byte{4, 0, 12, 0, 1, 0, 0, 0}), Event{Mask: unix.FAN_OPEN_PERM, Fd: 5, Pid: 7, Pidfd: NoPidfd}, 32, true},
		{"pidfd record of the wrong size: delimited", record(unix.FAN_OPEN_PERM, 5, 7, info(unix.FAN_EVENT_INFO_TYPE_PIDFD, 1, 0, 0, 0, 0, 0, 0, 0)),
			Event{Mask: unix.FAN_OPEN_PERM, Fd: 5, Pid: 7, Pidfd: NoPidfd}, 36, true},
		{"pidfd read before a bad record: kept", record(unix.FAN_OPEN_PERM, 5, 7, pidfdInfo(9), []byte{4, 0, 2, 0}),
			Event{Mask: unix.FAN_OPEN_PERM, Fd: 5, Pid: 7, Pidfd: 9}, 36, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, n, err := ParseEvent(tt.buf)
			if tt.wantErr != errors.Is(err, ErrMalformed) || !tt.wantErr && err != nil {
				t.Fatalf("ParseEvent: err = %v, want ErrMalformed: %v", err, tt.wantErr)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("event (-want +got):\n%s", diff)
			}
			if n != tt.wantLen {
				t.Errorf("length = %d, want %d", n, tt.wantLen)
			}
		})
	}
}

func TestEventKinds(t *testing.T) {
	if !(Event{Mask: unix.FAN_OPEN_PERM}).IsPermission() {
		t.Error("FAN_OPEN_PERM is not a permission event")
	}
	if (Event{Mask: unix.FAN_CLOSE_WRITE}).IsPermission() {
		t.Error("FAN_CLOSE_WRITE is a permission event")
	}
	if !(Event{Mask: unix.FAN_Q_OVERFLOW}).IsOverflow() {
		t.Error("FAN_Q_OVERFLOW is not an overflow")
	}
}

// FuzzParseEvent walks a buffer record by record as the reader does,
// past malformed records it can still delimit: it must never panic, never
// return a length that does not advance or that runs past the buffer.
func FuzzParseEvent(f *testing.F) {
	f.Add(record(unix.FAN_OPEN_PERM, 5, 7))
	f.Add(append(record(unix.FAN_OPEN_PERM, 5, 7, pidfdInfo(8)), record(unix.FAN_Q_OVERFLOW, NoFd, 0)...))
	f.Add(record(unix.FAN_OPEN_PERM, -11, 7, info(0x7f, 1, 2, 3, 4), pidfdInfo(-3)))
	f.Add(make([]byte, 24))
	f.Fuzz(func(t *testing.T, buf []byte) {
		for off := 0; off < len(buf); {
			ev, n, err := ParseEvent(buf[off:])
			if err != nil && !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			if err != nil && n == 0 {
				return // the rest cannot be delimited
			}
			if n < MetadataSize || off+n > len(buf) {
				t.Fatalf("length %d at offset %d of %d", n, off, len(buf))
			}
			_ = ev
			off += n
		}
	})
}

func BenchmarkParseEvent(b *testing.B) {
	var buf []byte
	for i := range 100 {
		buf = append(buf, record(unix.FAN_OPEN_PERM, int32(i), 1, pidfdInfo(int32(i+1)))...)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		for off := 0; off < len(buf); {
			_, n, err := ParseEvent(buf[off:])
			if err != nil {
				b.Fatal(err)
			}
			off += n
		}
	}
}

func TestParseEventAllocs(t *testing.T) {
	buf := record(unix.FAN_OPEN_PERM, 5, 7, pidfdInfo(8))
	if a := testing.AllocsPerRun(100, func() { ParseEvent(buf) }); a != 0 {
		t.Errorf("ParseEvent allocates %v times per event, want 0", a)
	}
}

func TestParseArgArea(t *testing.T) {
	fields := func(comm string, start, end string) string {
		f := make([]string, 47)
		for i := range f {
			f[i] = "0"
		}
		f[45], f[46] = start, end
		return "42 (" + comm + ") " + strings.Join(f, " ") + " 0 0\n"
	}
	tests := []struct {
		name       string
		stat       string
		start, end int64
		ok         bool
	}{
		{"plain", fields("cat", "1000", "1100"), 1000, 1100, true},
		{"name with parentheses and spaces", fields("a) 1 2 (b", "7", "9"), 7, 9, true},
		{"too few fields", "42 (cat) R 1 2 3\n", 0, 0, false},
		{"end before start", fields("cat", "9", "7"), 0, 0, false},
		{"no parenthesis", "42 cat R", 0, 0, false},
	}
	for _, tt := range tests {
		start, end, ok := parseArgArea([]byte(tt.stat))
		if start != tt.start || end != tt.end || ok != tt.ok {
			t.Errorf("%s: parseArgArea = %d, %d, %v; want %d, %d, %v", tt.name, start, end, ok, tt.start, tt.end, tt.ok)
		}
	}
}
