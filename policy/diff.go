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
}

// configKeys lists every key of Config, in the order of fanguard.toml.
// A key is live when a reload puts its new value in force; the others
// take a restart: they size the daemon's queues, buffers and caches, name
// files it holds open, or decide its fanotify marks, which are never
// removed (protect.paths, protect.fs_types). TestChangesCoversConfig fails
// when a field of Config is missing here.
var configKeys = []configKey{
	{"mode", true, func(c *Config) any { return c.Mode }},
	{"budget", true, func(c *Config) any { return c.Budget }},
	{"on_timeout", true, func(c *Config) any { return c.OnTimeout }},
	{"on_error", true, func(c *Config) any { return c.OnError }},
	{"on_oversize", true, func(c *Config) any { return c.OnOversize }},
	{"on_overload", true, func(c *Config) any { return c.OnOverload }},
	{"workers", false, func(c *Config) any { return c.Workers }},
	{"max_file_size", true, func(c *Config) any { return c.MaxFileSize }},
	{"max_pending", false, func(c *Config) any { return c.MaxPending }},
	{"max_pending_per_uid", false, func(c *Config) any { return c.MaxPendingPerUID }},
	{"scan_timeout", false, func(c *Config) any { return c.ScanTimeout }},
	{"rules.dirs", false, func(c *Config) any { return c.Rules.Dirs }},
	{"rules.cache_dir", false, func(c *Config) any { return c.Rules.CacheDir }},
	{"protect.paths", false, func(c *Config) any { return c.Protect.Paths }},
	{"protect.fs_types", false, func(c *Config) any { return c.Protect.FSTypes }},
	{"protect.exclude_paths", true, func(c *Config) any { return c.Protect.ExcludePaths }},
	{"protect.exclude_exe", true, func(c *Config) any { return c.Protect.ExcludeExe }},
	{"protect.exclude_uids", true, func(c *Config) any { return c.Protect.ExcludeUIDs }},
	{"scan.on_close", false, func(c *Config) any { return c.Scan.OnClose }},
	{"scan.on_close_queue", false, func(c *Config) any { return c.Scan.OnCloseQueue }},
	{"cache.entries", false, func(c *Config) any { return c.Cache.Entries }},
	{"control.socket", false, func(c *Config) any { return c.Control.Socket }},
	{"quarantine.action", true, func(c *Config) any { return c.Quarantine.Action }},
	{"quarantine.db", false, func(c *Config) any { return c.Quarantine.DB }},
	{"quarantine.vault", false, func(c *Config) any { return c.Quarantine.Vault }},
	{"quarantine.max_age", true, func(c *Config) any { return c.Quarantine.MaxAge }},
	// The vault's bound is checked by the mover the daemon opened at its
	// start; the purge would apply a new one, the moves not.
	{"quarantine.max_bytes", false, func(c *Config) any { return c.Quarantine.MaxBytes }},
	{"log.level", true, func(c *Config) any { return c.Log.Level }},
	// The encoder is made once, with the logger, at the start.
	{"log.format", false, func(c *Config) any { return c.Log.Format }},
	// The listener is bound once, at the start.
	{"metrics.listen", false, func(c *Config) any { return c.Metrics.Listen }},
	// `fanguard rules update` reads these itself, at each run; the daemon
	// only reads update.max_age (status) and the feeds' names and
	// directory (status, from its start).
	{"update.dir", false, func(c *Config) any { return c.Update.Dir }},
	{"update.canary_files", true, func(c *Config) any { return c.Update.CanaryFiles }},
	{"update.max_scan_cost", true, func(c *Config) any { return c.Update.MaxScanCost }},
	{"update.max_age", true, func(c *Config) any { return c.Update.MaxAge }},
	{"update.timeout", true, func(c *Config) any { return c.Update.Timeout }},
	{"feeds", false, func(c *Config) any { return c.Feeds }},
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
