package policy

import (
	"fmt"
	"reflect"
	"strings"
	"time"
)

// Change is one key whose value differs between two configurations, as a
// reload reports it: the key as fanguard.toml spells it ("mode",
// "protect.exclude_paths") and both values as text.
type Change struct {
	Key string `json:"key"`
	Old string `json:"old"`
	New string `json:"new"`
}

// String returns "key (old → new)".
func (c Change) String() string { return c.Key + " (" + c.Old + " → " + c.New + ")" }

// configKey is one key of Config for Changes: its name, whether a running
// daemon applies a new value on reload, and how to read it.
type configKey struct {
	name string
	live bool
	get  func(*Config) any
	set  func(dst, src *Config) // copies the key from src to dst; live keys only
}

// configKeys lists every key of Config, in the order of fanguard.toml.
// A key is live when a reload puts its new value in force; the others
// take a restart: they size the daemon's queues, buffers and caches, name
// files it holds open, or decide its fanotify marks, which are never
// removed (protect.paths, protect.fs_types). TestChangesCoversConfig fails
// when a field of Config is missing here.
var configKeys = []configKey{
	{"mode", true, func(c *Config) any { return c.Mode }, func(d, s *Config) { d.Mode = s.Mode }},
	{"budget", true, func(c *Config) any { return c.Budget }, func(d, s *Config) { d.Budget = s.Budget }},
	{"on_timeout", true, func(c *Config) any { return c.OnTimeout }, func(d, s *Config) { d.OnTimeout = s.OnTimeout }},
	{"on_error", true, func(c *Config) any { return c.OnError }, func(d, s *Config) { d.OnError = s.OnError }},
	{"on_oversize", true, func(c *Config) any { return c.OnOversize }, func(d, s *Config) { d.OnOversize = s.OnOversize }},
	{"on_overload", true, func(c *Config) any { return c.OnOverload }, func(d, s *Config) { d.OnOverload = s.OnOverload }},
	{"workers", false, func(c *Config) any { return c.Workers }, nil},
	{"max_file_size", true, func(c *Config) any { return c.MaxFileSize }, func(d, s *Config) { d.MaxFileSize = s.MaxFileSize }},
	{"max_pending", false, func(c *Config) any { return c.MaxPending }, nil},
	{"max_pending_per_uid", false, func(c *Config) any { return c.MaxPendingPerUID }, nil},
	{"scan_timeout", false, func(c *Config) any { return c.ScanTimeout }, nil},
	{"rules.dirs", false, func(c *Config) any { return c.Rules.Dirs }, nil},
	{"rules.cache_dir", false, func(c *Config) any { return c.Rules.CacheDir }, nil},
	{"protect.paths", false, func(c *Config) any { return c.Protect.Paths }, nil},
	{"protect.fs_types", false, func(c *Config) any { return c.Protect.FSTypes }, nil},
	{"protect.exclude_paths", true, func(c *Config) any { return c.Protect.ExcludePaths }, func(d, s *Config) { d.Protect.ExcludePaths = s.Protect.ExcludePaths }},
	{"protect.exclude_exe", true, func(c *Config) any { return c.Protect.ExcludeExe }, func(d, s *Config) { d.Protect.ExcludeExe = s.Protect.ExcludeExe }},
	{"protect.exclude_uids", true, func(c *Config) any { return c.Protect.ExcludeUIDs }, func(d, s *Config) { d.Protect.ExcludeUIDs = s.Protect.ExcludeUIDs }},
	{"scan.on_close", false, func(c *Config) any { return c.Scan.OnClose }, nil},
	{"scan.on_close_queue", false, func(c *Config) any { return c.Scan.OnCloseQueue }, nil},
	{"cache.entries", false, func(c *Config) any { return c.Cache.Entries }, nil},
	{"control.socket", false, func(c *Config) any { return c.Control.Socket }, nil},
	{"quarantine.action", true, func(c *Config) any { return c.Quarantine.Action }, func(d, s *Config) { d.Quarantine.Action = s.Quarantine.Action }},
	{"quarantine.db", false, func(c *Config) any { return c.Quarantine.DB }, nil},
	{"quarantine.vault", false, func(c *Config) any { return c.Quarantine.Vault }, nil},
	{"quarantine.max_age", true, func(c *Config) any { return c.Quarantine.MaxAge }, func(d, s *Config) { d.Quarantine.MaxAge = s.Quarantine.MaxAge }},
	// The vault's bound is checked by the mover the daemon opened at its
	// start; the purge would apply a new one, the moves not.
	{"quarantine.max_bytes", false, func(c *Config) any { return c.Quarantine.MaxBytes }, nil},
	{"log.level", true, func(c *Config) any { return c.Log.Level }, func(d, s *Config) { d.Log.Level = s.Log.Level }},
	// The encoder is made once, with the logger, at the start.
	{"log.format", false, func(c *Config) any { return c.Log.Format }, nil},
	// The listener is bound once, at the start.
	{"metrics.listen", false, func(c *Config) any { return c.Metrics.Listen }, nil},
	// `fanguard rules update` reads these itself, at each run; the daemon
	// only reads update.max_age (status) and the feeds' names and
	// directory (status, from its start).
	{"update.dir", false, func(c *Config) any { return c.Update.Dir }, nil},
	{"update.canary_files", true, func(c *Config) any { return c.Update.CanaryFiles }, func(d, s *Config) { d.Update.CanaryFiles = s.Update.CanaryFiles }},
	{"update.max_scan_cost", true, func(c *Config) any { return c.Update.MaxScanCost }, func(d, s *Config) { d.Update.MaxScanCost = s.Update.MaxScanCost }},
	{"update.max_age", true, func(c *Config) any { return c.Update.MaxAge }, func(d, s *Config) { d.Update.MaxAge = s.Update.MaxAge }},
	{"update.timeout", true, func(c *Config) any { return c.Update.Timeout }, func(d, s *Config) { d.Update.Timeout = s.Update.Timeout }},
	{"feeds", false, func(c *Config) any { return c.Feeds }, nil},
}

// Changes compares two configurations key by key and returns the keys
// that differ, in the order of fanguard.toml: live are those a reload
// puts in force, restart those that take effect only when the daemon
// starts again. Both are nil when nothing differs.
func Changes(old, new Config) (live, restart []Change) {
	for _, k := range configKeys {
		o, n := k.get(&old), k.get(&new)
		if reflect.DeepEqual(o, n) {
			continue
		}
		c := Change{Key: k.name, Old: formatValue(o), New: formatValue(n)}
		if c.Old == c.New { // feeds of the same names, changed inside
			c.New += " (changed)"
		}
		if k.live {
			live = append(live, c)
		} else {
			restart = append(restart, c)
		}
	}
	return live, restart
}

// WithLive returns inForce with the live keys of next (those a reload
// puts in force; see Changes): what a running daemon's configuration is
// after a reload. The other keys keep inForce's values, so that the next
// reload reports them again.
func WithLive(inForce, next Config) Config {
	for _, k := range configKeys {
		if k.live {
			k.set(&inForce, &next)
		}
	}
	return inForce
}

// formatValue spells a value of Config as fanguard.toml would, near
// enough for a person: strings quoted, lists in brackets, feeds by name.
func formatValue(v any) string {
	switch v := v.(type) {
	case string:
		return fmt.Sprintf("%q", v)
	case time.Duration:
		return fmt.Sprintf("%q", v.String())
	case Mode, Verdict, Action:
		return fmt.Sprintf("%q", v)
	case []string:
		q := make([]string, len(v))
		for i, s := range v {
			q[i] = fmt.Sprintf("%q", s)
		}
		return "[" + strings.Join(q, ", ") + "]"
	case []uint32:
		q := make([]string, len(v))
		for i, u := range v {
			q[i] = fmt.Sprint(u)
		}
		return "[" + strings.Join(q, ", ") + "]"
	case []FeedConfig:
		q := make([]string, len(v))
		for i, f := range v {
			q[i] = fmt.Sprintf("%q", f.Name)
		}
		return "[" + strings.Join(q, ", ") + "]"
	}
	return fmt.Sprint(v)
}
