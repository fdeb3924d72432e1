package quarantine

import (
	"errors"
	"fmt"
	"time"
)

// Actions: what the daemon did about a detection (Record.Action).
const (
	ActionAudit      = "audit"      // logged, the open allowed
	ActionDeny       = "deny"       // the open denied, the file left in place
	ActionQuarantine = "quarantine" // the open denied, the file moved into the vault
)

// States of a record (Record.State).
const (
	// StateRecorded: the detection is recorded; the file was not moved (audit
	// and deny, or a quarantine that could not be done or was rolled back).
	StateRecorded = "recorded"
	// StateQuarantining: a move into the vault is under way, or was
	// interrupted (Mover.Recover finishes or rolls it back).
	StateQuarantining = "quarantining"
	// StateQuarantined: the content is in the vault, the original is gone.
	StateQuarantined = "quarantined"
	// StateRestored: the content was written back (Mover.Restore).
	StateRestored = "restored"
	// StateDeleted: the vault content was deleted (Mover.Delete, or Purge).
	StateDeleted = "deleted"
)

// What of the history events this package writes (Event.What).
const (
	EventQuarantined = "quarantined" // the move into the vault completed
	EventRestored    = "restored"    // written back; Detail names the path
	EventDeleted     = "deleted"     // the vault content deleted on request
	EventPurged      = "purged"      // the vault content deleted by retention
	EventAllowed     = "allowed"     // the sha256 added to the allow list
	EventNotMoved    = "not-moved"   // a quarantine move gave up; Detail says why
	EventRecovered   = "recovered"   // Mover.Recover settled an interrupted move
)

// Errors returned by this package, to be tested with errors.Is.
var (
	// ErrNotFound: no record with that id (or no such vault file).
	ErrNotFound = errors.New("not found")
	// ErrState: the record is not in a state that allows the operation
	// (restoring a record that is not quarantined, for example).
	ErrState = errors.New("wrong state for this operation")
	// ErrChanged: the file is not the detected one any more: another inode
	// at its path, or content whose sha256 differs from the record's.
	ErrChanged = errors.New("file changed since its detection")
	// ErrExist: a restore would overwrite an existing file (use force).
	ErrExist = errors.New("target exists")
	// ErrSymlink: a restore target path has a symbolic link in it.
	ErrSymlink = errors.New("symbolic link in the target path")
	// ErrCorrupt: a vault file or its header is damaged.
	ErrCorrupt = errors.New("vault file corrupt")
	// ErrFull: the disk (or the quota) holding the database or the vault
	// is full: SQLite could not grow the database or its WAL (SQLITE_FULL),
	// or a write failed with ENOSPC or EDQUOT. What failed was not written;
	// the same call can succeed once there is room.
	ErrFull = errors.New("no space left for the quarantine")
	// ErrVaultLimit: a move into the vault was refused because the vault
	// would then hold more than Mover.MaxBytes bytes; the file stays in
	// place.
	ErrVaultLimit = errors.New("vault at its size limit (max_bytes)")
	// ErrNotLocal: a move was refused because looking up the file's path
	// could have waited on a filesystem that is not a local one (FUSE,
	// NFS, SMB, 9p, Ceph, overlay, proc...), whose server may never
	// answer, or on a mount point that is not in the kernel's cache (an
	// automount); the file stays in place.
	ErrNotLocal = errors.New("path not resolvable without waiting on a filesystem that is not local")
)

// Record is one detection: what was found, in which file, opened by whom,
// and what became of it. It is a plain value.
type Record struct {
	ID     int64     // assigned by Store.Add
	Time   time.Time // time of the detection
	Action string    // ActionAudit, ActionDeny or ActionQuarantine
	State  string    // StateRecorded, ...; Add takes "" as StateRecorded
	Late   bool      // detected after the budget ran out (the open was already answered)
	// OnClose: detected when a writer closed the file (a scan on close),
	// not at an open: PID, Exe, Cmdline and ProcUID are the writer's.
	OnClose bool

	SHA256 string    // lower-case hex sha256 of the scanned content
	Size   int64     // size of the scanned content
	Path   []byte    // the original path, bytes exactly as the kernel gave them
	Dev    uint64    // device of the file (st_dev)
	Ino    uint64    // inode number
	Mode   uint32    // st_mode, with the file type bits
	UID    uint32    // owner
	GID    uint32    // group
	Mtime  time.Time // modification time, nanoseconds kept

	PID     int32  // the opening process
	Exe     []byte // its executable (readlink of /proc/PID/exe), at most MaxPath bytes
	Cmdline []byte // its argv, NUL-separated as in /proc/PID/cmdline: the first MaxCmdline bytes
	// CmdlineLen is the whole command line's length in bytes: more than
	// len(Cmdline) when Cmdline holds only its start (Add cut it, or the
	// caller read no more). Add takes the larger of CmdlineLen and
	// len(Cmdline).
	CmdlineLen int64
	ProcUID    uint32 // its (real) uid
	ProcUser   string // the name of ProcUID when recorded; "" if unknown
	// Unit is the systemd unit the process ran in ("nginx.service",
	// "session-3.scope"), Container the short id of its container, both
	// from its cgroup; "" when none or unknown.
	Unit      string
	Container string

	// Count is how many times this detection was seen: the same file with
	// the same change stamp, opened by the same uid and program. Add takes
	// 0 as 1; Store.AddRepeats adds to it.
	Count int64
	// LastSeen is when the detection was last seen (Time is the first).
	// Add takes a LastSeen before Time (the zero time, say) as Time.
	LastSeen time.Time

	RulesGeneration string  // generation of the rules that matched
	VaultName       string  // name of the content in the vault; "" if none
	Matches         []Match // the rules that matched: at most MaxMatches
	// MatchesOmitted counts the matching rules the record does not keep
	// (beyond MaxMatches or MaxMatchesBytes).
	MatchesOmitted int

	History []Event // filled by Store.Get; ignored by Store.Add
}

// Match is one matching rule of a Record.
type Match struct {
	Rule      string            `json:"rule"`
	Namespace string            `json:"namespace,omitempty"`
	RuleFile  string            `json:"rule_file,omitempty"`
	Tags      []string          `json:"tags,omitempty"`
	Meta      map[string]string `json:"meta,omitempty"`
	Strings   []StringMatch     `json:"strings,omitempty"`
	// StringsOmitted counts the matched strings not kept (beyond
	// MaxStrings, or already left out by the scanner).
	StringsOmitted int `json:"strings_omitted,omitempty"`
}

// StringMatch is one matched string of a Match.
type StringMatch struct {
	ID     string `json:"id"`             // such as "$a"
	Offset int64  `json:"offset"`         // in the file
	Data   []byte `json:"data,omitempty"` // the matched bytes: the first MaxMatchData (base64 in JSON)
	// Len is the whole length of the matched bytes: more than len(Data)
	// when Data holds only their start. Add takes the larger of Len and
	// len(Data).
	Len int64 `json:"len,omitempty"`
}

// Repeat is one record's share of a batch for Store.AddRepeats: the
// detection was seen N more times, the last of them at Last.
type Repeat struct {
	ID   int64     // the record
	N    int64     // times seen again, at least 1
	Last time.Time // when last seen
}

// Actor is who did something: a user by uid and name ("root", "alice
// (sudo)"), or the daemon.
type Actor struct {
	UID  uint32
	Name string
}

// String gives "name (uid N)".
func (a Actor) String() string { return fmt.Sprintf("%s (uid %d)", a.Name, a.UID) }

// Event is one entry of a record's history.
type Event struct {
	Time   time.Time // zero: AddEvent uses the current time
	What   string    // EventRestored, EventDeleted, ...
	By     Actor
	Detail string // free text: a path, a reason
}

// Allowed is one entry of the allow list.
type Allowed struct {
	SHA256  string
	Comment string
	AddedAt time.Time
	AddedBy Actor
}

// Filter selects records for Store.List. Its zero value selects every
// record.
type Filter struct {
	Since time.Time // records at or after Since (zero: no bound)
	Until time.Time // records before Until (zero: no bound)
	Rule  string    // records with a match of this rule name (exact)
	// PathGlob selects by the original path, compared byte by byte: "*"
	// matches any bytes except "/", "**" any bytes including "/", "?" one
	// byte except "/", "[...]" one byte of a class ("[!...]" or "[^...]"
	// negated, ranges "a-z"), and "\" quotes the next byte. The whole path
	// must match.
	PathGlob string
	Action   string // ActionAudit, ActionDeny or ActionQuarantine; "" any
	Limit    int    // at most this many records; 0 no limit
}

// validSHA256 reports whether s is 64 lower-case hex digits.
func validSHA256(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// ValidSHA256 reports whether s is a sha256 sum in hex (64 digits, either
// case). Store methods take the lower-case form.
func ValidSHA256(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i] | 0x20
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// matchGlob reports whether name matches pattern (see Filter.PathGlob).
// A malformed pattern (an unclosed "[" or a trailing "\") matches nothing.
func matchGlob(pattern, name []byte) bool {
	for len(pattern) > 0 {
		switch c := pattern[0]; c {
		case '*':
			cross := len(pattern) > 1 && pattern[1] == '*'
			rest := pattern[1:]
			if cross {
				rest = pattern[2:]
			}
			for i := 0; i <= len(name); i++ {
				if matchGlob(rest, name[i:]) {
					return true
				}
				if i < len(name) && name[i] == '/' && !cross {
					return false
				}
			}
			return false
		case '?':
			if len(name) == 0 || name[0] == '/' {
				return false
			}
			pattern, name = pattern[1:], name[1:]
		case '[':
			if len(name) == 0 {
				return false
			}
			ok, n, valid := matchClass(pattern, name[0])
			if !valid || !ok {
				return false
			}
			pattern, name = pattern[n:], name[1:]
		case '\\':
			if len(pattern) < 2 {
				return false
			}
			if len(name) == 0 || name[0] != pattern[1] {
				return false
			}
			pattern, name = pattern[2:], name[1:]
		default:
			if len(name) == 0 || name[0] != c {
				return false
			}
			pattern, name = pattern[1:], name[1:]
		}
	}
	return len(name) == 0
}

// matchClass matches b against the class that starts pattern ("[...]"),
// and returns the class's length in the pattern.
func matchClass(pattern []byte, b byte) (matched bool, n int, valid bool) {
	i := 1
	negate := false
	if i < len(pattern) && (pattern[i] == '!' || pattern[i] == '^') {
		negate = true
		i++
	}
	first := true
	for i < len(pattern) {
		if pattern[i] == ']' && !first {
			if b == '/' {
				return false, i + 1, true
			}
			return matched != negate, i + 1, true
		}
		first = false
		lo, ok := classByte(pattern, &i)
		if !ok {
			return false, 0, false
		}
		hi := lo
		if i+1 < len(pattern) && pattern[i] == '-' && pattern[i+1] != ']' {
			i++
			if hi, ok = classByte(pattern, &i); !ok {
				return false, 0, false
			}
		}
		if lo <= b && b <= hi {
			matched = true
		}
	}
	return false, 0, false
}

func classByte(pattern []byte, i *int) (byte, bool) {
	if pattern[*i] == '\\' {
		*i++
	}
	if *i >= len(pattern) {
		return 0, false
	}
	b := pattern[*i]
	*i++
	return b, true
}
