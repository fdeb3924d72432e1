// Package policy holds fanguard's configuration and the decisions it implies:
// how a configuration file is read and validated, which opens are excluded
// from scanning, and which verdict a scan result leads to.
//
// It must never touch the kernel or the file system beyond reading the
// configuration file it is given and the drop-ins beside it (Load): the
// daemon calls it on the event path.
package policy

import "time"

// Verdict is the answer given to an open.
type Verdict uint8

const (
	// Allow lets the open go ahead.
	Allow Verdict = iota
	// Deny makes the open fail (with EPERM).
	Deny
)

// Mode says whether detections deny opens or are only logged.
type Mode uint8

const (
	// Enforce denies opens of files that match a rule (unless the rule's
	// metadata says action = "audit").
	Enforce Mode = iota
	// Audit logs detections and allows every open.
	Audit
)

// Action is what a matching rule asks for, from its metadata "action".
type Action uint8

const (
	// ActionDefault: the rule has no action metadata; treated as ActionDeny.
	ActionDefault Action = iota
	// ActionAudit: only log the match, even in enforce mode.
	ActionAudit
	// ActionDeny: deny the open ("deny" or "block").
	ActionDeny
	// ActionQuarantine: deny the open and quarantine the file.
	ActionQuarantine
)

// Config is the daemon's configuration, as read from fanguard.toml and its
// drop-ins (see configs/fanguard.toml for what each key means). The zero value is not
// valid; start from Default, or get one from Parse or Load, which return
// only valid configurations.
type Config struct {
	Mode        Mode          // mode: "enforce" | "audit"
	Budget      time.Duration // budget: longest time an open waits for its verdict
	OnTimeout   Verdict       // on_timeout: verdict when the budget runs out
	OnError     Verdict       // on_error: verdict when a file cannot be read or scanned
	OnOversize  Verdict       // on_oversize: verdict for files above MaxFileSize
	OnOverload  Verdict       // on_overload: verdict when MaxPending events (or MaxPendingPerUID of one uid) are in flight
	Workers     int           // workers: scan workers; 0 in the file means one per CPU (resolved by Parse)
	MaxFileSize int64         // max_file_size: bytes; larger files are not scanned
	MaxPending  int           // max_pending: events held at once (queued or scanning)
	// MaxPendingPerUID bounds the events held at once for the processes
	// of one (real) uid: the excess is answered at once with OnOverload,
	// so that one user's flood cannot fill MaxPending for everyone.
	MaxPendingPerUID int           // max_pending_per_uid; 0 in the file means 32 per worker, at least 64 (resolved by Parse)
	ScanTimeout      time.Duration // scan_timeout: CPU bound for one YARA scan, whole seconds (Parse rounds up)

	Rules      RulesConfig
	Protect    ProtectConfig
	Scan       ScanConfig
	Cache      CacheConfig
	Control    ControlConfig
	Metrics    MetricsConfig
	Quarantine QuarantineConfig
	Log        LogConfig
	Update     UpdateConfig
	Feeds      []FeedConfig // [[feeds]] entries, in file order; nil when none
}

// RulesConfig is the [rules] table.
type RulesConfig struct {
	Dirs     []string // dirs: rule directories, later ones override earlier ones by file name
	CacheDir string   // cache_dir: compiled-rules cache; "" for none
}

// ControlConfig is the [control] table.
type ControlConfig struct {
	Socket string // socket: the root-only control socket (fanguard reload, status)
}

// MetricsConfig is the [metrics] table.
type MetricsConfig struct {
	// Listen is the TCP address ("host:port") of a read-only HTTP listener
	// serving GET /metrics for Prometheus, and nothing else; "" (the
	// default): no listener.
	Listen string
}

// ProtectConfig is the [protect] table.
type ProtectConfig struct {
	Paths        []string // paths: protect only the filesystems holding these paths (and mounts below them); empty: every local filesystem
	FSTypes      []string // fs_types: filesystem types that are protected
	ExcludePaths []string // exclude_paths: files at or below these paths are not scanned
	ExcludeExe   []string // exclude_exe: opens by these executables are not scanned
	ExcludeUIDs  []uint32 // exclude_uids: opens by processes with these real uids are not scanned
}

// ScanConfig is the [scan] table.
type ScanConfig struct {
	// OnClose scans a regular file in the background when a writer
	// closes it, while the workers have no open to scan, so that its
	// first open finds the verdict cached and a detection is acted on
	// before anyone reads the file.
	OnClose bool // on_close
	// OnCloseQueue bounds the files waiting for a scan on close, the
	// newest kept; each holds up to two fds of the daemon (the file's
	// and the writer's pidfd).
	OnCloseQueue int // on_close_queue
}

// CacheConfig is the [cache] table.
type CacheConfig struct {
	// Entries bounds the daemon's verdict cache (files it has judged, by
	// device and inode). 0 disables the daemon cache; the kernel cache
	// (ignore marks) works either way.
	Entries int // entries
}

// QuarantineConfig is the [quarantine] table.
type QuarantineConfig struct {
	// Action is what a detection leads to when its rule's metadata names
	// none: ActionAudit (log, allow), ActionDeny (deny, record) or
	// ActionQuarantine (deny, record, move the file into the vault).
	Action   Action        // action
	DB       string        // db: the quarantine log (SQLite)
	Vault    string        // vault: where quarantined content is kept
	MaxAge   time.Duration // max_age: records' vault content older than this is purged; 0: kept
	MaxBytes int64         // max_bytes: the vault is purged, oldest first, above this size; 0: no bound
}

// UpdateConfig is the [update] table: how `fanguard rules update` installs
// the feeds. Like every part of Config it is a plain value, safe for
// concurrent reads.
type UpdateConfig struct {
	// Dir is the rules directory the feeds are installed into (dir). Parse
	// makes sure it is one of Rules.Dirs when Feeds is non-empty.
	Dir string
	// CanaryFiles is how many of the host's trusted files (owned by
	// installed packages, unchanged since) the gate scans with a new
	// version of a feed (canary_files); a rule that matches one is held
	// back. 0: no canary.
	CanaryFiles int
	// MaxScanCost is the mean scan time per canary file above which a
	// new version of a feed is held back (max_scan_cost).
	MaxScanCost time.Duration
	// MaxAge is how long a feed may go without a successful check
	// before status reports it unhealthy (max_age). 0: never.
	MaxAge time.Duration
	// Timeout bounds one feed's download, body included (timeout).
	Timeout time.Duration
}

// FeedConfig is one [[feeds]] entry: a source of rules that `fanguard
// rules update` installs into UpdateConfig.Dir. Parse returns only entries
// whose every field is valid and resolved (defaults filled in).
type FeedConfig struct {
	// Name names the feed (name): its directory below UpdateConfig.Dir,
	// and how commands and status refer to it. 1 to 64 characters among
	// a-z, 0-9, ".", "_", "-", starting with a letter or digit; unique
	// among the feeds.
	Name string
	// URL is where the feed comes from (url): an "https://" address of an
	// archive, or an absolute, cleaned local path of a directory or an
	// archive file.
	URL string
	// Subdir, if not "", is the slash-separated relative path inside the
	// archive or directory whose content is installed (subdir); cleaned,
	// without "." or ".." elements.
	Subdir string
	// SHA256, if not "", is the pinned digest of the archive, 64
	// lowercase hex digits (sha256).
	SHA256 string
	// MinisignKey, if not "", is the minisign public key (base64, as on
	// the second line of a .pub file) that must have signed the archive
	// (minisign_key).
	MinisignKey string
	// SignatureURL is where the archive's minisign signature is
	// (signature_url): an "https://" address or an absolute path. Parse
	// sets it to URL + ".minisig" when MinisignKey is set and the file
	// leaves it out; it is "" only when MinisignKey is "".
	SignatureURL string
	// Include holds the globs (path.Match syntax) of the files installed:
	// a pattern without "/" matches a file's base name, one with "/" its
	// path relative to Subdir (include). Parse sets the default,
	// {"*.yar", "*.yara"}, when the file leaves it out; never empty.
	Include []string
	// Exclude holds globs, same syntax, of files left out even if
	// Include matches them (exclude); nil for none.
	Exclude []string
	// CAFile, if not "", is a PEM file of CA certificates trusted for
	// this feed's downloads besides the system's (ca_file); only with an
	// "https://" URL.
	CAFile string
	// MaxSize bounds the download, in bytes (max_size).
	MaxSize int64
}

// LogConfig is the [log] table.
type LogConfig struct {
	Level string // level: "debug" | "info" | "warn" | "error"
	// Format is the format of the log on standard error, when it is not
	// the journal's stream (format): "console" (a line of time, level,
	// message, then the fields as JSON) or "json" (one JSON object a line,
	// with the journal's field names). The journal gets structured
	// entries either way.
	Format string
}
