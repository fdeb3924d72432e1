package policy

import (
	"bytes"
	"errors"
	"math"
	"net"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"
)

// Limits checked by Parse.
const (
	minBudget      = 10 * time.Millisecond
	maxBudget      = 10 * time.Minute
	minScanTimeout = time.Second
	maxWorkers     = 1024
	minFileSize    = 1 << 10 // 1 KiB
	maxFileSize    = 4 << 30 // 4 GiB
	maxMaxPending  = 1 << 20
	maxCacheSize   = 1 << 26
)

// What each key allows, as error messages print it.
const (
	wantBudget      = `a duration from "10ms" to "10m", such as "5s"`
	wantScanTimeout = `a duration of at least "1s", such as "60s"`
	wantWorkers     = `an integer from 0 (one per CPU) to 1024`
	wantFileSize    = `a size from "1KiB" to "4GiB": an integer number of bytes or a string such as "32MiB", "512KiB", "1GiB" or "10M"`
	wantMaxPending  = `an integer from 1 to 1048576`
	wantPerUID      = `an integer from 0 (32 per worker, at least 64) to 1048576, at most max_pending`
	wantLevel       = `"debug", "info", "warn" or "error"`
	wantLogFormat   = `"console" or "json"`
	wantCache       = `an integer from 0 (no daemon cache) to 67108864`
	wantCacheDir    = `an absolute directory, such as "/var/cache/fanguard", or "" for no compiled-rules cache`
	wantSocket      = `an absolute path, such as "/run/fanguard/control.sock"`
	wantListen      = `"host:port" with a port from 1 to 65535, such as "127.0.0.1:9745", or "" for no listener`
	wantQAction     = `"audit", "deny" or "quarantine"`
	wantMaxAge      = `a duration such as "90d", "720h" or "0" (keep forever)`
	wantMaxBytes    = `a size such as "1GiB", "500MiB", or 0 (no bound)`
	wantUIDs        = `an array of integers from 0 to 4294967295, such as [0, 1000]`
	wantBool        = `true or false`
	wantCloseQueue  = `an integer from 1 to 16384`
	wantUpdateDir   = `an absolute directory listed in rules.dirs, such as "/var/lib/fanguard/feeds.d"`
	wantCanary      = `an integer from 0 (no canary) to 100000`
	wantScanCost    = `a duration from "10µs" to "10s", such as "2ms"`
	wantUpdateAge   = `a duration such as "7d", "168h" or "0" (never unhealthy)`
	wantFeedTimeout = `a duration from "1s" to "24h", such as "10m"`
	wantFeedSize    = `a size from "1KiB" to "16GiB": an integer number of bytes or a string such as "256MiB" or "1GiB"`
)

// Limits of the [update] and [[feeds]] keys.
const (
	maxCanaryFiles = 100_000
	minScanCost    = 10 * time.Microsecond
	maxScanCost    = 10 * time.Second
	minFeedTimeout = time.Second
	maxFeedTimeout = 24 * time.Hour
	minFeedSize    = 1 << 10  // 1 KiB
	maxFeedSize    = 16 << 30 // 16 GiB
)

// maxCloseQueue bounds scan.on_close_queue: each file queued holds up to
// two fds of the daemon.
const maxCloseQueue = 16384

// autoPerUID is max_pending_per_uid = 0: 32 events per worker, at least
// 64. More than the workers can scan within a budget only makes a user's
// flood time out in waves (every one of its answers waking every open
// held on the machine); fewer would refuse an ordinary parallel build.
func autoPerUID(workers int) int { return max(64, 32*workers) }

// Default returns the configuration used for every key that fanguard.toml
// leaves out. It is also what configs/fanguard.toml spells out.
func Default() Config {
	return Config{
		Mode:             Enforce,
		Budget:           5 * time.Second,
		OnTimeout:        Allow,
		OnError:          Allow,
		OnOversize:       Allow,
		OnOverload:       Allow,
		Workers:          runtime.NumCPU(),
		MaxFileSize:      32 << 20,
		MaxPending:       4096,
		MaxPendingPerUID: autoPerUID(runtime.NumCPU()),
		ScanTimeout:      60 * time.Second,
		Rules: RulesConfig{
			Dirs:     []string{"/usr/lib/fanguard/rules.d", "/var/lib/fanguard/feeds.d", "/etc/fanguard/rules.d"},
			CacheDir: "/var/cache/fanguard",
		},
		Protect: ProtectConfig{
			FSTypes: defaultFSTypes(),
		},
		Scan:    ScanConfig{OnClose: true, OnCloseQueue: 512},
		Cache:   CacheConfig{Entries: 1_000_000},
		Control: ControlConfig{Socket: "/run/fanguard/control.sock"},
		Quarantine: QuarantineConfig{
			Action:   ActionQuarantine,
			DB:       "/var/lib/fanguard/quarantine.db",
			Vault:    "/var/lib/fanguard/vault",
			MaxAge:   90 * 24 * time.Hour,
			MaxBytes: 1 << 30,
		},
		Log: LogConfig{Level: "info", Format: "console"},
		Update: UpdateConfig{
			Dir:         "/var/lib/fanguard/feeds.d",
			CanaryFiles: 2000,
			MaxScanCost: 2 * time.Millisecond,
			MaxAge:      7 * 24 * time.Hour,
			Timeout:     10 * time.Minute,
		},
	}
}

// Parse parses and validates a fanguard.toml document. name is the file
// name used in error messages. Keys the document leaves out keep their
// Default values; unknown keys are errors.
//
// Parse resolves what the file leaves to the machine: workers = 0 becomes
// runtime.NumCPU(), scan_timeout is rounded up to whole seconds (YARA counts
// its timeout in seconds), paths are cleaned with filepath.Clean,
// duplicates are dropped from the [protect] lists and from feeds' globs
// (the first one stays), and each feed gets its defaults (include,
// max_size, signature_url). Empty lists are returned as nil.
//
// Every error message starts with the file name and, where it is known, the
// line: "fanguard.toml:7: on_timeout: "maybe" is not allowed (want "allow" or
// "deny")". A key of the n-th [[feeds]] entry (from 1) is named with the
// entry's name when it has one: "fanguard.toml:12: feeds[2] ("forge").url:
// ...". When several keys are wrong the returned error joins one error
// per problem (errors.Join), one per line. On error the returned Config is
// the zero value.
func Parse(data []byte, name string) (Config, error) {
	return parse([]*document{{file: name, data: data}})
}

// parse decodes docs, applies each over the ones before it (see Load), and
// validates the result.
func parse(docs []*document) (Config, error) {
	c := checker{docs: docs, set: make(map[string]int)}
	var merged rawConfig
	decoded := true
	for i := range docs {
		var raw rawConfig
		if !c.decode(i, &raw) {
			decoded = false
			continue
		}
		c.merge(reflect.ValueOf(&merged).Elem(), reflect.ValueOf(&raw).Elem(), "", i)
	}
	if !decoded {
		return Config{}, c.err()
	}
	cfg := c.convert(&merged)
	if len(c.errs) > 0 {
		return Config{}, c.err()
	}
	return cfg, nil
}

// decode decodes document i into raw. Unknown keys are recorded and the
// known ones decoded; an error that stops go-toml (a syntax error, a
// duplicate key) is recorded and decode returns false.
func (c *checker) decode(i int, raw *rawConfig) bool {
	dec := toml.NewDecoder(bytes.NewReader(c.docs[i].data))
	dec.DisallowUnknownFields()
	err := dec.Decode(raw)
	if err == nil {
		return true
	}
	// A StrictMissingError also unwraps to DecodeErrors: test it first.
	var missing *toml.StrictMissingError
	var derr *toml.DecodeError
	switch {
	case errors.As(err, &missing):
		// The known keys were decoded: check them too.
		for j := range missing.Errors {
			c.unknownKey(i, &missing.Errors[j])
		}
		return true
	case errors.As(err, &derr):
		c.errs = append(c.errs, c.decodeError(i, derr))
	default:
		c.errs = append(c.errs, &configError{file: c.docs[i].file, doc: i, msg: "decoding TOML: " + err.Error(), err: err})
	}
	return false
}

// merge sets each value that src (a rawConfig, or one of its tables at
// the dotted prefix) holds into dst, and records in c.set that document
// doc set it. A value replaces the earlier one whole: an array, and
// feeds, are not appended to.
func (c *checker) merge(dst, src reflect.Value, prefix string, doc int) {
	t := src.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		key := prefix + f.Tag.Get("toml")
		v := src.Field(i)
		switch {
		case f.Type.Kind() == reflect.Struct:
			c.merge(dst.Field(i), v, key+".", doc)
		case !v.IsNil():
			dst.Field(i).Set(v)
			c.set[key] = doc
		}
	}
}

// rawConfig is fanguard.toml as decoded, before validation. Its shape
// (tables and key names) lets go-toml reject unknown keys; every value is
// left as decoded (string, int64, float64, bool, []any, map[string]any or a
// date) so that convert can check the types itself, name the key and the
// value, and report every wrong key rather than only the first. A nil value
// means the key is absent.
type rawConfig struct {
	Mode        any `toml:"mode"`
	Budget      any `toml:"budget"`
	OnTimeout   any `toml:"on_timeout"`
	OnError     any `toml:"on_error"`
	OnOversize  any `toml:"on_oversize"`
	OnOverload  any `toml:"on_overload"`
	Workers     any `toml:"workers"`
	MaxFileSize any `toml:"max_file_size"`
	MaxPending  any `toml:"max_pending"`
	PerUID      any `toml:"max_pending_per_uid"`
	ScanTimeout any `toml:"scan_timeout"`

	Rules      rawRules      `toml:"rules"`
	Protect    rawProtect    `toml:"protect"`
	Scan       rawScan       `toml:"scan"`
	Cache      rawCache      `toml:"cache"`
	Control    rawControl    `toml:"control"`
	Metrics    rawMetrics    `toml:"metrics"`
	Quarantine rawQuarantine `toml:"quarantine"`
	Log        rawLog        `toml:"log"`
	Update     rawUpdate     `toml:"update"`
	// Feeds is decoded as any, not as []rawFeed, so that convert sees
	// every shape it may have ([feeds], feeds = 1, inline tables) and
	// reports each unknown key with the entry it is in.
	Feeds any `toml:"feeds" array:"tables"`
}

type rawUpdate struct {
	Dir         any `toml:"dir"`
	CanaryFiles any `toml:"canary_files"`
	MaxScanCost any `toml:"max_scan_cost"`
	MaxAge      any `toml:"max_age"`
	Timeout     any `toml:"timeout"`
}

type rawQuarantine struct {
	Action   any `toml:"action"`
	DB       any `toml:"db"`
	Vault    any `toml:"vault"`
	MaxAge   any `toml:"max_age"`
	MaxBytes any `toml:"max_bytes"`
}

type rawScan struct {
	OnClose      any `toml:"on_close"`
	OnCloseQueue any `toml:"on_close_queue"`
}

type rawControl struct {
	Socket any `toml:"socket"`
}

type rawMetrics struct {
	Listen any `toml:"listen"`
}

type rawCache struct {
	Entries any `toml:"entries"`
}

type rawRules struct {
	Dirs     any `toml:"dirs"`
	CacheDir any `toml:"cache_dir"`
}

type rawProtect struct {
	Paths        any `toml:"paths"`
	FSTypes      any `toml:"fs_types"`
	ExcludePaths any `toml:"exclude_paths"`
	ExcludeExe   any `toml:"exclude_exe"`
	ExcludeUIDs  any `toml:"exclude_uids"`
}

type rawLog struct {
	Level  any `toml:"level"`
	Format any `toml:"format"`
}

// convert validates raw and returns it applied over Default. Problems are
// recorded in c.
func (c *checker) convert(raw *rawConfig) Config {
	cfg := Default()

	if s, ok := c.str("mode", raw.Mode, wantMode); ok {
		if m, err := parseMode(s); err == nil {
			cfg.Mode = m
		} else {
			c.bad("mode", -1, raw.Mode, "is not allowed", wantMode)
		}
	}
	c.verdict("on_timeout", raw.OnTimeout, &cfg.OnTimeout)
	c.verdict("on_error", raw.OnError, &cfg.OnError)
	c.verdict("on_oversize", raw.OnOversize, &cfg.OnOversize)
	c.verdict("on_overload", raw.OnOverload, &cfg.OnOverload)

	if d, ok := c.duration("budget", raw.Budget, wantBudget); ok {
		if d < minBudget || d > maxBudget {
			c.bad("budget", -1, raw.Budget, "is out of range", wantBudget)
		} else {
			cfg.Budget = d
		}
	}
	if d, ok := c.duration("scan_timeout", raw.ScanTimeout, wantScanTimeout); ok {
		if d < minScanTimeout {
			c.bad("scan_timeout", -1, raw.ScanTimeout, "is too short", wantScanTimeout)
		} else {
			cfg.ScanTimeout = roundUpSecond(d)
		}
	}

	if n, ok := c.integer("workers", raw.Workers, 0, maxWorkers, wantWorkers); ok {
		cfg.Workers = int(n)
		if n == 0 {
			cfg.Workers = runtime.NumCPU()
		}
	}
	if n, ok := c.integer("max_pending", raw.MaxPending, 1, maxMaxPending, wantMaxPending); ok {
		cfg.MaxPending = int(n)
	}
	cfg.MaxPendingPerUID = autoPerUID(cfg.Workers)
	if n, ok := c.integer("max_pending_per_uid", raw.PerUID, 0, maxMaxPending, wantPerUID); ok && n > 0 {
		cfg.MaxPendingPerUID = int(n)
	}
	if cfg.MaxPendingPerUID > cfg.MaxPending {
		if n, _ := raw.PerUID.(int64); n > 0 {
			c.bad("max_pending_per_uid", -1, raw.PerUID, "is more than max_pending", wantPerUID)
		} else {
			cfg.MaxPendingPerUID = cfg.MaxPending // a small max_pending bounds the default too
		}
	}
	if n, ok := c.size("max_file_size", raw.MaxFileSize, minFileSize, maxFileSize, wantFileSize); ok {
		cfg.MaxFileSize = n
	}

	dirsOK := raw.Rules.Dirs == nil
	if dirs, ok := c.paths("rules.dirs", raw.Rules.Dirs, `an array of absolute directories, such as ["/etc/fanguard/rules.d"]`); ok {
		if len(dirs) == 0 {
			c.fail("rules.dirs", -1, `the list is empty, so no rules would be loaded (want at least one absolute directory, such as "/etc/fanguard/rules.d")`)
		} else {
			cfg.Rules.Dirs = dirs
			dirsOK = true
		}
	}

	if dir, ok := c.path("rules.cache_dir", raw.Rules.CacheDir, wantCacheDir, true); ok {
		cfg.Rules.CacheDir = dir
	}
	if sock, ok := c.path("control.socket", raw.Control.Socket, wantSocket, false); ok {
		cfg.Control.Socket = sock
	}
	if addr, ok := c.listen("metrics.listen", raw.Metrics.Listen); ok {
		cfg.Metrics.Listen = addr
	}

	q := &cfg.Quarantine
	if s, ok := c.str("quarantine.action", raw.Quarantine.Action, wantQAction); ok {
		switch s {
		case "audit":
			q.Action = ActionAudit
		case "deny":
			q.Action = ActionDeny
		case "quarantine":
			q.Action = ActionQuarantine
		default:
			c.bad("quarantine.action", -1, raw.Quarantine.Action, "is not allowed", wantQAction)
		}
	}
	if p, ok := c.path("quarantine.db", raw.Quarantine.DB, "an absolute file path, such as \"/var/lib/fanguard/quarantine.db\"", false); ok {
		q.DB = p
	}
	if p, ok := c.path("quarantine.vault", raw.Quarantine.Vault, "an absolute directory, such as \"/var/lib/fanguard/vault\"", false); ok {
		q.Vault = p
	}
	if v := raw.Quarantine.MaxAge; v != nil {
		if d, ok := parseAge(v); ok {
			q.MaxAge = d
		} else {
			c.bad("quarantine.max_age", -1, v, "is not a duration", wantMaxAge)
		}
	}
	switch v := raw.Quarantine.MaxBytes.(type) {
	case nil:
	case int64:
		if v < 0 {
			c.bad("quarantine.max_bytes", -1, v, "is out of range", wantMaxBytes)
		} else {
			q.MaxBytes = v
		}
	case string:
		if n, ok := parseSize(v); ok {
			q.MaxBytes = n
		} else {
			c.bad("quarantine.max_bytes", -1, v, "is not a size", wantMaxBytes)
		}
	default:
		c.bad("quarantine.max_bytes", -1, v, "is not a size", wantMaxBytes)
	}

	p := &cfg.Protect
	if paths, ok := c.paths("protect.paths", raw.Protect.Paths, `an array of absolute paths, such as ["/home", "/tmp"], or [] for every local filesystem`); ok {
		p.Paths = dedupe(paths)
	}
	if types, ok := c.fsTypes("protect.fs_types", raw.Protect.FSTypes); ok {
		p.FSTypes = types
	}
	if paths, ok := c.paths("protect.exclude_paths", raw.Protect.ExcludePaths, `an array of absolute paths, such as ["/var/lib/docker"]`); ok {
		p.ExcludePaths = dedupe(paths)
	}
	if paths, ok := c.paths("protect.exclude_exe", raw.Protect.ExcludeExe, `an array of absolute executable paths, such as ["/usr/bin/rsync"]`); ok {
		p.ExcludeExe = dedupe(paths)
	}
	if uids, ok := c.uids("protect.exclude_uids", raw.Protect.ExcludeUIDs); ok {
		p.ExcludeUIDs = uids
	}

	switch v := raw.Scan.OnClose.(type) {
	case nil:
	case bool:
		cfg.Scan.OnClose = v
	default:
		c.bad("scan.on_close", -1, v, "is not a boolean", wantBool)
	}
	if n, ok := c.integer("scan.on_close_queue", raw.Scan.OnCloseQueue, 1, maxCloseQueue, wantCloseQueue); ok {
		cfg.Scan.OnCloseQueue = int(n)
	}

	if n, ok := c.integer("cache.entries", raw.Cache.Entries, 0, maxCacheSize, wantCache); ok {
		cfg.Cache.Entries = int(n)
	}

	if s, ok := c.str("log.level", raw.Log.Level, wantLevel); ok {
		switch s {
		case "debug", "info", "warn", "error":
			cfg.Log.Level = s
		default:
			c.bad("log.level", -1, raw.Log.Level, "is not allowed", wantLevel)
		}
	}
	if s, ok := c.str("log.format", raw.Log.Format, wantLogFormat); ok {
		switch s {
		case "console", "json":
			cfg.Log.Format = s
		default:
			c.bad("log.format", -1, raw.Log.Format, "is not allowed", wantLogFormat)
		}
	}

	updateDirOK := c.update(&raw.Update, &cfg.Update)
	cfg.Feeds = c.feeds(raw.Feeds)
	if len(cfg.Feeds) > 0 && dirsOK && updateDirOK && !slices.Contains(cfg.Rules.Dirs, cfg.Update.Dir) {
		c.feedsDirUnloaded(cfg.Update.Dir, raw.Update.Dir == nil)
	}
	return cfg
}

// roundUpSecond rounds d up to a whole number of seconds; a d so large that
// rounding up would overflow is rounded down instead.
func roundUpSecond(d time.Duration) time.Duration {
	r := d % time.Second
	if r == 0 {
		return d
	}
	if d > math.MaxInt64-time.Second {
		return d - r
	}
	return d - r + time.Second
}

// dedupe removes later duplicates from s, in place, and returns nil for an
// empty result.
func dedupe[T comparable](s []T) []T {
	out := s[:0]
	for i, v := range s {
		if !slices.Contains(s[:i], v) {
			out = append(out, v)
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// verdict checks key's value v and stores it in dst if it is a verdict.
func (c *checker) verdict(key string, v any, dst *Verdict) {
	s, ok := c.str(key, v, wantVerdict)
	if !ok {
		return
	}
	x, err := ParseVerdict(s)
	if err != nil {
		c.bad(key, -1, v, "is not allowed", wantVerdict)
		return
	}
	*dst = x
}

// str returns v as a string. ok is false if the key is absent or not a
// string (then the problem is recorded).
func (c *checker) str(key string, v any, want string) (s string, ok bool) {
	if v == nil {
		return "", false
	}
	s, ok = v.(string)
	if !ok {
		c.bad(key, -1, v, "is not allowed", want)
	}
	return s, ok
}

// duration returns v parsed as a Go duration string.
func (c *checker) duration(key string, v any, want string) (time.Duration, bool) {
	if v == nil {
		return 0, false
	}
	s, ok := v.(string)
	if !ok {
		c.bad(key, -1, v, "is not a duration string", want)
		return 0, false
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		c.bad(key, -1, v, "is not a duration", want)
		return 0, false
	}
	return d, true
}

// integer returns v if it is an integer from lo to hi.
func (c *checker) integer(key string, v any, lo, hi int64, want string) (int64, bool) {
	if v == nil {
		return 0, false
	}
	n, ok := v.(int64)
	if !ok {
		c.bad(key, -1, v, "is not an integer", want)
		return 0, false
	}
	if n < lo || n > hi {
		c.bad(key, -1, v, "is out of range", want)
		return 0, false
	}
	return n, true
}

// size returns v, a byte count or a size string, if it is from lo to hi.
func (c *checker) size(key string, v any, lo, hi int64, want string) (int64, bool) {
	var n int64
	switch v := v.(type) {
	case nil:
		return 0, false
	case int64:
		n = v
	case string:
		var ok bool
		if n, ok = parseSize(v); !ok {
			c.bad(key, -1, v, "is not a size", want)
			return 0, false
		}
	default:
		c.bad(key, -1, v, "is not a size", want)
		return 0, false
	}
	if n < lo || n > hi {
		c.bad(key, -1, v, "is out of range", want)
		return 0, false
	}
	return n, true
}

// array returns v as an array. ok is false if the key is absent or not an
// array (then the problem is recorded).
func (c *checker) array(key string, v any, want string) ([]any, bool) {
	if v == nil {
		return nil, false
	}
	a, ok := v.([]any)
	if !ok {
		c.bad(key, -1, v, "is not an array", want)
	}
	return a, ok
}

// paths returns v as a list of cleaned absolute paths, nil if it is empty.
// ok is false if the key is absent or any element is wrong.
func (c *checker) paths(key string, v any, want string) ([]string, bool) {
	a, ok := c.array(key, v, want)
	if !ok {
		return nil, false
	}
	var out []string
	for i, e := range a {
		s, isStr := e.(string)
		switch {
		case !isStr:
			c.bad(key, i, e, "is not a path", want)
			ok = false
		case strings.IndexByte(s, 0) >= 0:
			c.bad(key, i, e, "contains a NUL byte", want)
			ok = false
		case !filepath.IsAbs(s):
			c.bad(key, i, e, "is a relative path", want)
			ok = false
		default:
			out = append(out, filepath.Clean(s))
		}
	}
	return out, ok
}

// parseAge parses a retention age: a Go duration, a whole number of days
// ("90d"), or 0.
func parseAge(v any) (time.Duration, bool) {
	switch v := v.(type) {
	case int64:
		return 0, v == 0
	case string:
		if v == "0" {
			return 0, true
		}
		if n, ok := strings.CutSuffix(v, "d"); ok {
			days, err := strconv.ParseUint(n, 10, 16)
			return time.Duration(days) * 24 * time.Hour, err == nil
		}
		d, err := time.ParseDuration(v)
		return d, err == nil && d >= 0
	}
	return 0, false
}

// path returns v as a cleaned absolute path; "" only if allowEmpty.
func (c *checker) path(key string, v any, want string, allowEmpty bool) (string, bool) {
	s, ok := c.str(key, v, want)
	switch {
	case !ok:
		return "", false
	case s == "" && allowEmpty:
		return "", true
	case strings.IndexByte(s, 0) >= 0:
		c.bad(key, -1, v, "contains a NUL byte", want)
	case !filepath.IsAbs(s):
		c.bad(key, -1, v, "is not an absolute path", want)
	default:
		return filepath.Clean(s), true
	}
	return "", false
}

// fsTypes returns v as a non-empty list of local filesystem types without
// duplicates.
func (c *checker) fsTypes(key string, v any) ([]string, bool) {
	want := "one of " + strings.Join(LocalFSTypes(), ", ")
	a, ok := c.array(key, v, "an array of filesystem types, "+want)
	if !ok {
		return nil, false
	}
	if len(a) == 0 {
		c.fail(key, -1, "the list is empty, so nothing would be protected (want "+want+")")
		return nil, false
	}
	var out []string
	for i, e := range a {
		s, isStr := e.(string)
		if !isStr {
			c.bad(key, i, e, "is not a filesystem type", want)
			ok = false
			continue
		}
		if why := whyNotFSType(s); why != "" {
			c.bad(key, i, e, why, want)
			ok = false
			continue
		}
		out = append(out, s)
	}
	return dedupe(out), ok
}

// uids returns v as a list of user ids without duplicates.
func (c *checker) uids(key string, v any) ([]uint32, bool) {
	a, ok := c.array(key, v, wantUIDs)
	if !ok {
		return nil, false
	}
	var out []uint32
	for i, e := range a {
		n, isInt := e.(int64)
		switch {
		case !isInt:
			c.bad(key, i, e, "is not a uid", wantUIDs)
			ok = false
		case n < 0 || n > math.MaxUint32:
			c.bad(key, i, e, "is out of range", wantUIDs)
			ok = false
		default:
			out = append(out, uint32(n))
		}
	}
	return dedupe(out), ok
}

// listen returns v as a TCP listen address, "host:port" with a numeric
// port from 1 to 65535 (the host may be empty: every address), or "".
func (c *checker) listen(key string, v any) (string, bool) {
	s, ok := c.str(key, v, wantListen)
	if !ok || s == "" {
		return s, ok
	}
	_, port, err := net.SplitHostPort(s)
	if err != nil {
		c.bad(key, -1, v, "is not a host:port address", wantListen)
		return "", false
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		c.bad(key, -1, v, "has no port from 1 to 65535", wantListen)
		return "", false
	}
	return s, true
}
