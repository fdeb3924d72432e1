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
	Fd   int32  // event fd opened by the kernel, or NoFd
	Pid  int32  // the process that caused the event
}

// NoFd is the Fd of events that carry no file, such as a queue overflow.
const NoFd = unix.FAN_NOFD

// MetadataSize is the size of struct fanotify_event_metadata.
const MetadataSize = 24

// ErrMalformed is returned by ParseEvent for a record that the kernel could
// not have written: the buffer after it cannot be trusted.
var ErrMalformed = errors.New("malformed fanotify event record")

// IsPermission reports whether the event waits for an answer.
func (e Event) IsPermission() bool {
	return e.Mask&(unix.FAN_OPEN_PERM|unix.FAN_ACCESS_PERM|unix.FAN_OPEN_EXEC_PERM) != 0
}

// IsOverflow reports whether the event is the kernel's queue overflow alarm.
func (e Event) IsOverflow() bool { return e.Mask&unix.FAN_Q_OVERFLOW != 0 }

// ParseEvent parses the record at the start of buf and returns it with the
// record's length (event_len), by which the caller advances to the next one.
// Info records after the metadata are skipped. It returns an error wrapping
// ErrMalformed when the length fields do not fit or the metadata version is
// not the one this package knows. It does not allocate.
func ParseEvent(buf []byte) (Event, int, error) {
	if len(buf) < MetadataSize {
		return Event{}, 0, fmt.Errorf("%w: %d bytes left, want at least %d", ErrMalformed, len(buf), MetadataSize)
	}
	le := binary.NativeEndian // the kernel writes the metadata in host order
	eventLen := le.Uint32(buf[0:4])
	vers := buf[4]
	metaLen := le.Uint16(buf[6:8])
	ev := Event{
		Mask: le.Uint64(buf[8:16]),
		Fd:   int32(le.Uint32(buf[16:20])),
		Pid:  int32(le.Uint32(buf[20:24])),
	}
	switch {
	case vers != unix.FANOTIFY_METADATA_VERSION:
		return ev, 0, fmt.Errorf("%w: version %d, want %d", ErrMalformed, vers, unix.FANOTIFY_METADATA_VERSION)
	case eventLen < MetadataSize || uint64(eventLen) > uint64(len(buf)):
		return ev, 0, fmt.Errorf("%w: event_len %d with %d bytes left", ErrMalformed, eventLen, len(buf))
	case metaLen < MetadataSize || uint32(metaLen) > eventLen:
		return ev, 0, fmt.Errorf("%w: metadata_len %d with event_len %d", ErrMalformed, metaLen, eventLen)
	}
	return ev, int(eventLen), nil
}
