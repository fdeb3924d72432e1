package fan

import (
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// Event is one fanotify event record.
type Event struct {
	Mask uint64 // FAN_* bits
	// Fd is the event fd opened by the kernel. Negative when there is
	// none: NoFd for a queue overflow, and in a group made with
	// FAN_REPORT_FD_ERROR (every group of this package, where the kernel
	// has it) the negated errno of the kernel's failed open — the kernel
	// then denied a permission event itself, and a notification event was
	// lost but for this record.
	Fd  int32
	Pid int32 // the process that caused the event
	// Pidfd is a pidfd of the process that caused the event, in a group
	// made with PermissionOptions.Pidfd; the caller owns it and must close
	// it. Negative when there is none (see PidfdGone).
	Pidfd int32
}

// NoFd is the Fd of events that carry no file, such as a queue overflow.
const NoFd = unix.FAN_NOFD

// NoPidfd is the Pidfd of events without a pidfd record.
const NoPidfd = -1 << 31

// MetadataSize is the size of struct fanotify_event_metadata.
const MetadataSize = 24

// pidfdInfoSize is the size of struct fanotify_event_info_pidfd: a header
// (type, pad, length) and the pidfd.
const pidfdInfoSize = 8

// ErrMalformed is returned by ParseEvent for a record that the kernel could
// not have written.
var ErrMalformed = errors.New("malformed fanotify event record")

// IsPermission reports whether the event waits for an answer.
func (e Event) IsPermission() bool {
	return e.Mask&(unix.FAN_OPEN_PERM|unix.FAN_ACCESS_PERM|unix.FAN_OPEN_EXEC_PERM) != 0
}

// IsOverflow reports whether the event is the kernel's queue overflow alarm.
func (e Event) IsOverflow() bool { return e.Mask&unix.FAN_Q_OVERFLOW != 0 }

// PidfdGone reports whether the kernel had no pidfd for the event because
// the process that caused it had exited by the time the event was read
// (FAN_NOPIDFD, or -ESRCH with FAN_REPORT_FD_ERROR): nobody waits for an
// answer any more.
func (e Event) PidfdGone() bool {
	return e.Pidfd == unix.FAN_NOPIDFD || e.Pidfd == -int32(unix.ESRCH)
}

// ParseEvent parses the record at the start of buf and returns it with the
// record's length (event_len), by which the caller advances to the next one.
// A pidfd info record is read into Event.Pidfd; other info records are
// skipped. It does not allocate.
//
// It returns an error wrapping ErrMalformed when the record does not
// parse. The length then says what can still be trusted:
//   - > 0: the record's event_len is sound, so the record is delimited
//     and the records after it can be found; only its metadata_len or
//     its info records are wrong. The Event holds the fixed fields of
//     the metadata (mask, fd, pid) and the pidfd if one was read before
//     the fault: a permission event must still be answered, and its fds
//     closed.
//   - 0: the metadata version is not the one this package knows, or
//     event_len does not fit in buf: neither this record nor any after
//     it in buf can be found.
func ParseEvent(buf []byte) (Event, int, error) {
	if len(buf) < MetadataSize {
		return Event{}, 0, fmt.Errorf("%w: %d bytes left, want at least %d", ErrMalformed, len(buf), MetadataSize)
	}
	le := binary.NativeEndian // the kernel writes the metadata in host order
	eventLen := le.Uint32(buf[0:4])
	vers := buf[4]
	metaLen := le.Uint16(buf[6:8])
	switch {
	case vers != unix.FANOTIFY_METADATA_VERSION:
		return Event{}, 0, fmt.Errorf("%w: version %d, want %d", ErrMalformed, vers, unix.FANOTIFY_METADATA_VERSION)
	case eventLen < MetadataSize || uint64(eventLen) > uint64(len(buf)):
		return Event{}, 0, fmt.Errorf("%w: event_len %d with %d bytes left", ErrMalformed, eventLen, len(buf))
	}
	ev := Event{
		Mask:  le.Uint64(buf[8:16]),
		Fd:    int32(le.Uint32(buf[16:20])),
		Pid:   int32(le.Uint32(buf[20:24])),
		Pidfd: NoPidfd,
	}
	size := int(eventLen)
	if metaLen < MetadataSize || uint32(metaLen) > eventLen {
		return ev, size, fmt.Errorf("%w: metadata_len %d with event_len %d", ErrMalformed, metaLen, eventLen)
	}
	// Info records: a header of type (1 byte), padding (1) and length (2,
	// header included), each within event_len.
	for info := buf[metaLen:eventLen]; len(info) > 0; {
		if len(info) < 4 {
			return ev, size, fmt.Errorf("%w: %d bytes of info record header", ErrMalformed, len(info))
		}
		n := int(le.Uint16(info[2:4]))
		if n < 4 || n > len(info) {
			return ev, size, fmt.Errorf("%w: info record length %d with %d bytes left", ErrMalformed, n, len(info))
		}
		if info[0] == unix.FAN_EVENT_INFO_TYPE_PIDFD {
			if n != pidfdInfoSize {
				return ev, size, fmt.Errorf("%w: pidfd info record of %d bytes", ErrMalformed, n)
			}
			ev.Pidfd = int32(le.Uint32(info[4:8]))
		}
		info = info[n:]
	}
	return ev, size, nil
}
