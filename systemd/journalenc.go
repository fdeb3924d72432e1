package systemd

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"go.uber.org/zap/zapcore"
)

// record is one entry in the journal's native format on its way to the
// sending goroutine, or a marker in the queue (mark, stop). As a
// zapcore.ObjectEncoder it appends fields to b. A record belongs to one
// goroutine at a time: the writer until queued, then the sender.
type record struct {
	b    []byte
	ns   string        // open namespaces, each key followed by '.'
	mark chan struct{} // a flush marker: closed once all before it is sent
	stop bool          // Close's marker: everything before it is sent
}

var _ zapcore.ObjectEncoder = (*record)(nil)

// appendValue appends a field's value to b, which ends with the field's
// name: NAME=value\n when the value has no newline, else the binary form
// NAME\n<little-endian uint64 length>value\n. Either carries any bytes.
func appendValue[T ~string | ~[]byte](b []byte, v T) []byte {
	for i := 0; i < len(v); i++ {
		if v[i] == '\n' {
			b = append(b, '\n')
			b = binary.LittleEndian.AppendUint64(b, uint64(len(v)))
			b = append(b, v...)
			return append(b, '\n')
		}
	}
	b = append(b, '=')
	b = append(b, v...)
	return append(b, '\n')
}

// name appends the journal field name for key, opened for a plain value:
// the caller appends the value and '\n'.
func (r *record) name(key string) {
	r.b = appendFieldName(r.b, r.ns, key)
	r.b = append(r.b, '=')
}

func (r *record) addBytes(key string, v []byte) {
	r.b = appendValue(appendFieldName(r.b, r.ns, key), v)
}

func (r *record) addJSON(key string, v any) error {
	j, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encoding %s as JSON: %w", key, err)
	}
	r.addBytes(key, j)
	return nil
}

// AddString adds a string byte for byte. A top-level "message_id" holding
// 32 hex digits becomes the journal's MESSAGE_ID.
func (r *record) AddString(key, v string) {
	if key == "message_id" && r.ns == "" && isID128(v) {
		r.b = append(r.b, "MESSAGE_ID="...)
		for i := 0; i < len(v); i++ {
			c := v[i]
			if 'A' <= c && c <= 'F' {
				c += 'a' - 'A'
			}
			r.b = append(r.b, c)
		}
		r.b = append(r.b, '\n')
		return
	}
	r.b = appendValue(appendFieldName(r.b, r.ns, key), v)
}

func (r *record) AddByteString(key string, v []byte) { r.addBytes(key, v) }
func (r *record) AddBinary(key string, v []byte)     { r.addBytes(key, v) }

func (r *record) AddBool(key string, v bool) {
	r.name(key)
	r.b = append(strconv.AppendBool(r.b, v), '\n')
}

func (r *record) AddInt(key string, v int)     { r.AddInt64(key, int64(v)) }
func (r *record) AddInt32(key string, v int32) { r.AddInt64(key, int64(v)) }
func (r *record) AddInt16(key string, v int16) { r.AddInt64(key, int64(v)) }
func (r *record) AddInt8(key string, v int8)   { r.AddInt64(key, int64(v)) }
func (r *record) AddInt64(key string, v int64) {
	r.name(key)
	r.b = append(strconv.AppendInt(r.b, v, 10), '\n')
}

func (r *record) AddUint(key string, v uint)       { r.AddUint64(key, uint64(v)) }
func (r *record) AddUint32(key string, v uint32)   { r.AddUint64(key, uint64(v)) }
func (r *record) AddUint16(key string, v uint16)   { r.AddUint64(key, uint64(v)) }
func (r *record) AddUint8(key string, v uint8)     { r.AddUint64(key, uint64(v)) }
func (r *record) AddUintptr(key string, v uintptr) { r.AddUint64(key, uint64(v)) }
func (r *record) AddUint64(key string, v uint64) {
	r.name(key)
	r.b = append(strconv.AppendUint(r.b, v, 10), '\n')
}

func (r *record) AddFloat64(key string, v float64) {
	r.name(key)
	r.b = append(strconv.AppendFloat(r.b, v, 'g', -1, 64), '\n')
}

func (r *record) AddFloat32(key string, v float32) {
	r.name(key)
	r.b = append(strconv.AppendFloat(r.b, float64(v), 'g', -1, 32), '\n')
}

func (r *record) AddComplex128(key string, v complex128) {
	r.name(key)
	r.b = append(append(r.b, strconv.FormatComplex(v, 'g', -1, 128)...), '\n')
}

func (r *record) AddComplex64(key string, v complex64) {
	r.name(key)
	r.b = append(append(r.b, strconv.FormatComplex(complex128(v), 'g', -1, 64)...), '\n')
}

func (r *record) AddDuration(key string, v time.Duration) {
	r.name(key)
	r.b = append(append(r.b, v.String()...), '\n')
}

func (r *record) AddTime(key string, v time.Time) {
	r.name(key)
	r.b = append(v.AppendFormat(r.b, time.RFC3339Nano), '\n')
}

func (r *record) AddArray(key string, v zapcore.ArrayMarshaler) error {
	m := zapcore.NewMapObjectEncoder()
	if err := m.AddArray(key, v); err != nil {
		return err
	}
	return r.addJSON(key, m.Fields[key])
}

func (r *record) AddObject(key string, v zapcore.ObjectMarshaler) error {
	m := zapcore.NewMapObjectEncoder()
	if err := m.AddObject(key, v); err != nil {
		return err
	}
	return r.addJSON(key, m.Fields[key])
}

func (r *record) AddReflected(key string, v any) error { return r.addJSON(key, v) }

// OpenNamespace prefixes the keys that follow: zap.Namespace("scan") then
// zap.Int("bytes", 1) gives FANGUARD_SCAN_BYTES.
func (r *record) OpenNamespace(key string) { r.ns += key + "." }

// isID128 reports whether s is a 128-bit id in 32 hex digits, the form of
// MESSAGE_ID.
func isID128(s string) bool {
	if len(s) != 32 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}

const (
	fieldPrefix = "FANGUARD_"
	// maxFieldName is journald's limit on a field name's length.
	maxFieldName = 64
)

// appendFieldName appends the journal field name for the zap key ns+key:
// FANGUARD_ followed by the key in upper snake case. Lower-case letters are
// raised; an upper-case letter that starts a word in camelCase gets an
// underscore before it ("errorVerbose" → ERROR_VERBOSE, "HTTPServer" →
// HTTP_SERVER); every run of other bytes (punctuation, spaces, non-ASCII)
// becomes one underscore, none at either end. The name is cut to journald's
// 64 bytes. A key with no letter or digit gives FANGUARD_FIELD.
func appendFieldName(b []byte, ns, key string) []byte {
	n := len(ns) + len(key)
	at := func(i int) byte {
		if i < len(ns) {
			return ns[i]
		}
		return key[i-len(ns)]
	}
	start := len(b)
	b = append(b, fieldPrefix...)
	wrote, sep := 0, false
	for i := 0; i < n; i++ {
		c := at(i)
		switch {
		case 'a' <= c && c <= 'z':
			c -= 'a' - 'A'
		case 'A' <= c && c <= 'Z':
			if i > 0 {
				p := at(i - 1)
				if isLower(p) || isDigit(p) || isUpper(p) && i+1 < n && isLower(at(i+1)) {
					sep = true
				}
			}
		case isDigit(c):
		default:
			sep = true
			continue
		}
		if sep && wrote > 0 {
			if len(b)-start+2 > maxFieldName {
				break
			}
			b = append(b, '_')
		}
		sep = false
		if len(b)-start+1 > maxFieldName {
			break
		}
		b = append(b, c)
		wrote++
	}
	if wrote == 0 {
		b = append(b, "FIELD"...)
	}
	return b
}

func isLower(c byte) bool { return 'a' <= c && c <= 'z' }
func isUpper(c byte) bool { return 'A' <= c && c <= 'Z' }
func isDigit(c byte) bool { return '0' <= c && c <= '9' }
