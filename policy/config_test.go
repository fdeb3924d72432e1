package policy

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

const shippedConfig = "../configs/fanguard.toml"

func TestDefault(t *testing.T) {
	want := Config{
		Mode:             Enforce,
		Budget:           5 * time.Second,
		OnTimeout:        Allow,
		OnError:          Allow,
		OnOversize:       Allow,
		OnOverload:       Allow,
		Workers:          runtime.NumCPU(),
		MaxFileSize:      32 << 20,
		MaxPending:       4096,
		MaxPendingPerUID: max(64, 32*runtime.NumCPU()),
		ScanTimeout:      60 * time.Second,
		Rules: RulesConfig{
			Dirs:     []string{"/usr/lib/fanguard/rules.d", "/var/lib/fanguard/feeds.d", "/etc/fanguard/rules.d"},
			CacheDir: "/var/cache/fanguard",
		},
		Protect: ProtectConfig{
			FSTypes: []string{"ext2", "ext3", "ext4", "xfs", "btrfs", "tmpfs", "vfat", "exfat", "f2fs", "iso9660"},
		},
		Scan:    ScanConfig{OnClose: true, OnCloseQueue: 512},
		Cache:   CacheConfig{Entries: 1_000_000},
		Control: ControlConfig{Socket: "/run/fanguard/control.sock"},
		Quarantine: QuarantineConfig{Action: ActionQuarantine, DB: "/var/lib/fanguard/quarantine.db",
			Vault: "/var/lib/fanguard/vault", MaxAge: 90 * 24 * time.Hour, MaxBytes: 1 << 30},
		Log: LogConfig{Level: "info", Format: "console"},
		Update: UpdateConfig{Dir: "/var/lib/fanguard/feeds.d", CanaryFiles: 2000, MaxScanCost: 2 * time.Millisecond,
			MaxAge: 7 * 24 * time.Hour, Timeout: 10 * time.Minute},
	}
	if diff := cmp.Diff(want, Default()); diff != "" {
		t.Errorf("Default() mismatch (-want +got):\n%s", diff)
	}
	// Each call returns fresh slices.
	d := Default()
	d.Rules.Dirs[0] = "/changed"
	d.Protect.FSTypes[0] = "changed"
	if diff := cmp.Diff(want, Default()); diff != "" {
		t.Errorf("Default() shares slices between calls (-want +got):\n%s", diff)
	}
}

// TestShippedConfig checks that configs/fanguard.toml spells out Default.
func TestShippedConfig(t *testing.T) {
	got, err := Load(shippedConfig)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(Default(), got); diff != "" {
		t.Errorf("%s differs from Default() (-want +got):\n%s", shippedConfig, diff)
	}
}

// TestShippedConfigDocumentsEveryKey checks that every key Parse knows is
// set, with a comment, in configs/fanguard.toml.
func TestShippedConfigDocumentsEveryKey(t *testing.T) {
	data, err := os.ReadFile(shippedConfig)
	if err != nil {
		t.Fatal(err)
	}
	pos := keyPositions(data)
	lines := strings.Split(string(data), "\n")
	for _, key := range []string{
		"mode", "budget", "on_timeout", "on_error", "on_oversize", "on_overload",
		"workers", "max_file_size", "max_pending", "max_pending_per_uid", "scan_timeout", "rules.dirs",
		"protect.paths", "protect.fs_types", "protect.exclude_paths",
		"protect.exclude_exe", "protect.exclude_uids", "scan.on_close", "scan.on_close_queue", "cache.entries", "rules.cache_dir", "control.socket",
		"metrics.listen",
		"quarantine.action", "quarantine.db", "quarantine.vault", "quarantine.max_age", "quarantine.max_bytes", "log.level", "log.format",
		"update.dir", "update.canary_files", "update.max_scan_cost", "update.max_age", "update.timeout",
	} {
		p, ok := pos[key]
		if !ok {
			t.Errorf("%s does not set %s", shippedConfig, key)
			continue
		}
		name := key[strings.LastIndex(key, ".")+1:]
		documented := false
		for i := p.line - 2; i >= 0 && strings.HasPrefix(lines[i], "#"); i-- {
			if strings.HasPrefix(lines[i], "# "+name+":") {
				documented = true
			}
		}
		if !documented {
			t.Errorf("%s:%d: %s has no comment starting %q above it", shippedConfig, p.line, key, "# "+name+":")
		}
	}
}

// feedsExample returns the commented-out [[feeds]] example of
// configs/fanguard.toml, uncommented, and the lines documenting its keys.
func feedsExample(t *testing.T, data []byte) (example, doc string) {
	t.Helper()
	lines := strings.Split(string(data), "\n")
	start := slices.Index(lines, "# [[feeds]]")
	if start < 0 {
		t.Fatalf("%s has no line %q starting the example feed", shippedConfig, "# [[feeds]]")
	}
	var b strings.Builder
	for _, l := range lines[start:] {
		l, ok := strings.CutPrefix(l, "# ")
		if !ok {
			break
		}
		b.WriteString(l + "\n")
	}
	return b.String(), strings.Join(lines[:start], "\n")
}

// TestShippedConfigFeedsExample checks that the [[feeds]] example in
// configs/fanguard.toml is valid once uncommented, in the shipped file
// itself (so with its rules.dirs and update.dir), sets every key a feed
// has, and that each key is documented.
func TestShippedConfigFeedsExample(t *testing.T) {
	data, err := os.ReadFile(shippedConfig)
	if err != nil {
		t.Fatal(err)
	}
	example, doc := feedsExample(t, data)
	got, err := Parse([]byte(string(data)+"\n"+example), shippedConfig+" (example uncommented)")
	if err != nil {
		t.Fatal(err)
	}
	want := Default()
	want.Feeds = []FeedConfig{{
		Name:    "yara-forge-core",
		URL:     "https://github.com/YARAHQ/yara-forge/releases/latest/download/yara-forge-rules-core.zip",
		Include: []string{"*.yar", "*.yara"},
		MaxSize: 256 << 20,
	}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("the example feed parses differently (-want +got):\n%s", diff)
	}
	set := keyPositions([]byte(example))
	for f := range reflect.TypeFor[rawFeed]().Fields() {
		key := f.Tag.Get("toml")
		if _, ok := set["feeds[1]."+key]; !ok {
			t.Errorf("the example feed does not set %s", key)
		}
		if !strings.Contains(doc, "\n#   "+key+": ") {
			t.Errorf("%s does not document the feed key %s (a line starting %q)", shippedConfig, key, "#   "+key+": ")
		}
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()

	t.Run("missing", func(t *testing.T) {
		path := filepath.Join(dir, "missing.toml")
		_, err := Load(path)
		if !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("Load(%q) error = %v, want one wrapping fs.ErrNotExist", path, err)
		}
		if !strings.Contains(err.Error(), path) {
			t.Errorf("Load(%q) error %q does not name the file", path, err)
		}
	})

	t.Run("good", func(t *testing.T) {
		path := filepath.Join(dir, "good.toml")
		if err := os.WriteFile(path, []byte("mode = \"audit\"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		got, err := Load(path)
		if err != nil {
			t.Fatal(err)
		}
		want := Default()
		want.Mode = Audit
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("Load mismatch (-want +got):\n%s", diff)
		}
	})

	t.Run("bad", func(t *testing.T) {
		path := filepath.Join(dir, "bad.toml")
		if err := os.WriteFile(path, []byte("\nmode = \"maybe\"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := Load(path)
		if err == nil || !strings.HasPrefix(err.Error(), path+":2: mode: ") {
			t.Errorf("Load(%q) error = %v, want one starting %q", path, err, path+":2: mode: ")
		}
	})
}

func TestParse(t *testing.T) {
	for _, tt := range []struct {
		name string
		doc  string
		want func(*Config)
	}{
		{
			name: "empty",
			doc:  "",
		},
		{
			name: "comments only",
			doc:  "# nothing here\n\n[protect]\n# nor here\n",
		},
		{
			name: "everything",
			doc: `
mode = "audit"
budget = "250ms"
on_timeout = "deny"
on_error = "deny"
on_oversize = "deny"
on_overload = "deny"
workers = 3
max_file_size = 1048576
max_pending = 10
scan_timeout = "90s"

[rules]
dirs = ["/opt/rules/", "/etc/fanguard/rules.d"]

[protect]
paths = ["/home", "/tmp//x/.."]
fs_types = ["ext4", "xfs", "bcachefs"]
exclude_paths = ["/var/lib/docker"]
exclude_exe = ["/usr/bin/rsync"]
exclude_uids = [0, 1000]

[log]
level = "debug"
`,
			want: func(c *Config) {
				c.Mode = Audit
				c.Budget = 250 * time.Millisecond
				c.OnTimeout = Deny
				c.OnError = Deny
				c.OnOversize = Deny
				c.OnOverload = Deny
				c.Workers = 3
				c.MaxFileSize = 1 << 20
				c.MaxPending = 10
				c.MaxPendingPerUID = 10 // the default, bounded by max_pending
				c.ScanTimeout = 90 * time.Second
				c.Rules.Dirs = []string{"/opt/rules", "/etc/fanguard/rules.d"}
				c.Protect = ProtectConfig{
					Paths:        []string{"/home", "/tmp"},
					FSTypes:      []string{"ext4", "xfs", "bcachefs"},
					ExcludePaths: []string{"/var/lib/docker"},
					ExcludeExe:   []string{"/usr/bin/rsync"},
					ExcludeUIDs:  []uint32{0, 1000},
				}
				c.Log.Level = "debug"
			},
		},
		{
			name: "scan on close off, queue bound",
			doc:  "[scan]\non_close = false\non_close_queue = 64",
			want: func(c *Config) { c.Scan = ScanConfig{OnClose: false, OnCloseQueue: 64} },
		},
		{
			name: "workers 0 is one per CPU",
			doc:  "workers = 0",
			want: func(c *Config) { c.Workers = runtime.NumCPU() },
		},
		{
			name: "workers 1024",
			doc:  "workers = 1024",
			want: func(c *Config) { c.Workers, c.MaxPendingPerUID = 1024, 4096 }, // 32 per worker, bounded by max_pending
		},
		{
			name: "budget lowest",
			doc:  `budget = "10ms"`,
			want: func(c *Config) { c.Budget = 10 * time.Millisecond },
		},
		{
			name: "budget highest",
			doc:  `budget = "10m"`,
			want: func(c *Config) { c.Budget = 10 * time.Minute },
		},
		{
			name: "scan_timeout rounded up",
			doc:  `scan_timeout = "1500ms"`,
			want: func(c *Config) { c.ScanTimeout = 2 * time.Second },
		},
		{
			name: "scan_timeout lowest",
			doc:  `scan_timeout = "1s"`,
			want: func(c *Config) { c.ScanTimeout = time.Second },
		},
		{
			name: "max_file_size MiB",
			doc:  `max_file_size = "32MiB"`,
			want: func(c *Config) { c.MaxFileSize = 32 << 20 },
		},
		{
			name: "max_file_size KiB",
			doc:  `max_file_size = "512KiB"`,
			want: func(c *Config) { c.MaxFileSize = 512 << 10 },
		},
		{
			name: "max_file_size GiB",
			doc:  `max_file_size = "1GiB"`,
			want: func(c *Config) { c.MaxFileSize = 1 << 30 },
		},
		{
			name: "max_file_size M",
			doc:  `max_file_size = "10M"`,
			want: func(c *Config) { c.MaxFileSize = 10 << 20 },
		},
		{
			name: "max_file_size MB",
			doc:  `max_file_size = "10MB"`,
			want: func(c *Config) { c.MaxFileSize = 10_000_000 },
		},
		{
			name: "max_file_size lower case with blank",
			doc:  `max_file_size = "64 kib"`,
			want: func(c *Config) { c.MaxFileSize = 64 << 10 },
		},
		{
			name: "max_file_size bytes string",
			doc:  `max_file_size = "2048"`,
			want: func(c *Config) { c.MaxFileSize = 2048 },
		},
		{
			name: "max_file_size lowest",
			doc:  `max_file_size = 1024`,
			want: func(c *Config) { c.MaxFileSize = 1024 },
		},
		{
			name: "max_file_size highest",
			doc:  `max_file_size = "4GiB"`,
			want: func(c *Config) { c.MaxFileSize = 4 << 30 },
		},
		{
			name: "max_pending bounds",
			doc:  "max_pending = 1048576",
			want: func(c *Config) { c.MaxPending = 1 << 20 },
		},
		{
			name: "max_pending_per_uid",
			doc:  "max_pending = 100\nmax_pending_per_uid = 100",
			want: func(c *Config) { c.MaxPending, c.MaxPendingPerUID = 100, 100 },
		},
		{
			name: "max_pending_per_uid lowest",
			doc:  "max_pending_per_uid = 1",
			want: func(c *Config) { c.MaxPendingPerUID = 1 },
		},
		{
			name: "max_pending_per_uid 0: 32 per worker",
			doc:  "workers = 4\nmax_pending_per_uid = 0",
			want: func(c *Config) { c.Workers, c.MaxPendingPerUID = 4, 128 },
		},
		{
			name: "max_pending_per_uid 0: at least 64",
			doc:  "workers = 1\nmax_pending_per_uid = 0",
			want: func(c *Config) { c.Workers, c.MaxPendingPerUID = 1, 64 },
		},
		{
			name: "duplicates removed",
			doc: `[protect]
paths = ["/home", "/home/"]
fs_types = ["ext4", "xfs", "ext4"]
exclude_paths = ["/var/lib/docker", "/var/lib/docker/", "/srv"]
exclude_exe = ["/usr/bin/rsync", "/usr/bin/../bin/rsync"]
exclude_uids = [0, 1000, 0]
`,
			want: func(c *Config) {
				c.Protect = ProtectConfig{
					Paths:        []string{"/home"},
					FSTypes:      []string{"ext4", "xfs"},
					ExcludePaths: []string{"/var/lib/docker", "/srv"},
					ExcludeExe:   []string{"/usr/bin/rsync"},
					ExcludeUIDs:  []uint32{0, 1000},
				}
			},
		},
		{
			name: "empty lists",
			doc:  "[protect]\npaths = []\nexclude_paths = []\nexclude_exe = []\nexclude_uids = []\n",
		},
		{
			name: "root and highest uid",
			doc:  "[protect]\nexclude_paths = [\"/\"]\nexclude_uids = [4294967295]\n",
			want: func(c *Config) {
				c.Protect.ExcludePaths = []string{"/"}
				c.Protect.ExcludeUIDs = []uint32{4294967295}
			},
		},
		{
			name: "dotted keys and inline tables",
			doc:  "protect.fs_types = [\"ext4\"]\nlog = { level = \"warn\" }\n",
			want: func(c *Config) {
				c.Protect.FSTypes = []string{"ext4"}
				c.Log.Level = "warn"
			},
		},
		{
			name: "literal strings",
			doc:  "mode = 'audit'\n[rules]\ndirs = ['/r']\n",
			want: func(c *Config) {
				c.Mode = Audit
				c.Rules.Dirs = []string{"/r"}
			},
		},
		{
			name: "update",
			doc:  "[update]\ndir = \"/usr/lib/fanguard/rules.d/\"\ncanary_files = 0\nmax_scan_cost = \"10µs\"\nmax_age = \"0\"\ntimeout = \"24h\"\n",
			want: func(c *Config) {
				c.Update = UpdateConfig{Dir: "/usr/lib/fanguard/rules.d", CanaryFiles: 0, MaxScanCost: 10 * time.Microsecond, MaxAge: 0, Timeout: 24 * time.Hour}
			},
		},
		{
			name: "update highest",
			doc:  "[update]\ncanary_files = 100000\nmax_scan_cost = \"10s\"\nmax_age = \"30d\"\ntimeout = \"1s\"\n",
			want: func(c *Config) {
				c.Update.CanaryFiles, c.Update.MaxScanCost, c.Update.MaxAge, c.Update.Timeout = 100000, 10*time.Second, 30*24*time.Hour, time.Second
			},
		},
		{
			name: "update.max_age in hours, max_scan_cost in us",
			doc:  "[update]\nmax_age = \"36h\"\nmax_scan_cost = \"500us\"\n",
			want: func(c *Config) { c.Update.MaxAge, c.Update.MaxScanCost = 36*time.Hour, 500*time.Microsecond },
		},
		{
			name: "feed from https, defaults",
			doc:  "[[feeds]]\nname = \"yara-forge-core\"\nurl = \"https://github.com/YARAHQ/yara-forge/releases/latest/download/yara-forge-rules-core.zip\"\n",
			want: func(c *Config) {
				c.Feeds = []FeedConfig{{
					Name:    "yara-forge-core",
					URL:     "https://github.com/YARAHQ/yara-forge/releases/latest/download/yara-forge-rules-core.zip",
					Include: []string{"*.yar", "*.yara"},
					MaxSize: 256 << 20,
				}}
			},
		},
		{
			name: "feed with every key",
			doc: `[[feeds]]
name = "mirror_1.x"
url = "https://mirror.example.com:8443/rules/forge.tar.xz?v=2"
subdir = "packages//core/"
sha256 = "9F86D081884C7D659A2FEAF0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08"
minisign_key = "RWQf6LRCGA9i53mlYecO4IzT51TGPpvWucNSCh1CBM0QTaLn73Y7GFO3"
signature_url = "https://mirror.example.com/sigs/forge.minisig"
include = ["*.yar", "apt/*.yara", "*.yar"]
exclude = ["*_test.yar"]
ca_file = "/etc/fanguard/mirror-ca.pem"
max_size = "1GiB"
`,
			want: func(c *Config) {
				c.Feeds = []FeedConfig{{
					Name:         "mirror_1.x",
					URL:          "https://mirror.example.com:8443/rules/forge.tar.xz?v=2",
					Subdir:       "packages/core",
					SHA256:       "9f86d081884c7d659a2feaf0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
					MinisignKey:  "RWQf6LRCGA9i53mlYecO4IzT51TGPpvWucNSCh1CBM0QTaLn73Y7GFO3",
					SignatureURL: "https://mirror.example.com/sigs/forge.minisig",
					Include:      []string{"*.yar", "apt/*.yara"},
					Exclude:      []string{"*_test.yar"},
					CAFile:       "/etc/fanguard/mirror-ca.pem",
					MaxSize:      1 << 30,
				}}
			},
		},
		{
			name: "feeds from local paths, signature derived, in file order",
			doc: `[[feeds]]
name = "local"
url = "/srv/rules//team/"
exclude = []

[[feeds]]
name = "0signed"
url = "/srv/mirror/forge.zip"
minisign_key = "RWQf6LRCGA9i53mlYecO4IzT51TGPpvWucNSCh1CBM0QTaLn73Y7GFO3"
max_size = 1024
`,
			want: func(c *Config) {
				c.Feeds = []FeedConfig{
					{Name: "local", URL: "/srv/rules/team", Include: []string{"*.yar", "*.yara"}, MaxSize: 256 << 20},
					{Name: "0signed", URL: "/srv/mirror/forge.zip", MinisignKey: "RWQf6LRCGA9i53mlYecO4IzT51TGPpvWucNSCh1CBM0QTaLn73Y7GFO3",
						SignatureURL: "/srv/mirror/forge.zip.minisig", Include: []string{"*.yar", "*.yara"}, MaxSize: 1024},
				}
			},
		},
		{
			name: "feed signature from https url derived",
			doc:  "[[feeds]]\nname = \"s\"\nurl = \"https://h.example/r.zip\"\nminisign_key = \" RWQf6LRCGA9i53mlYecO4IzT51TGPpvWucNSCh1CBM0QTaLn73Y7GFO3\\n\"\nmax_size = \"16GiB\"\n",
			want: func(c *Config) {
				c.Feeds = []FeedConfig{{Name: "s", URL: "https://h.example/r.zip", MinisignKey: "RWQf6LRCGA9i53mlYecO4IzT51TGPpvWucNSCh1CBM0QTaLn73Y7GFO3",
					SignatureURL: "https://h.example/r.zip.minisig", Include: []string{"*.yar", "*.yara"}, MaxSize: 16 << 30}}
			},
		},
		{
			name: "feeds as inline tables, own update.dir",
			doc: `feeds = [
  { name = "a", url = "/a" },
  { name = "b", url = "https://b.example/b.tar.gz", include = ["*"] },
]
[rules]
dirs = ["/etc/fanguard/feeds", "/etc/fanguard/rules.d"]
[update]
dir = "/etc/fanguard/feeds/"
`,
			want: func(c *Config) {
				c.Rules.Dirs = []string{"/etc/fanguard/feeds", "/etc/fanguard/rules.d"}
				c.Update.Dir = "/etc/fanguard/feeds"
				c.Feeds = []FeedConfig{
					{Name: "a", URL: "/a", Include: []string{"*.yar", "*.yara"}, MaxSize: 256 << 20},
					{Name: "b", URL: "https://b.example/b.tar.gz", Include: []string{"*"}, MaxSize: 256 << 20},
				}
			},
		},
		{
			name: "no feeds: update.dir need not be in rules.dirs",
			doc:  "feeds = []\n[rules]\ndirs = [\"/etc/fanguard/rules.d\"]\n",
			want: func(c *Config) { c.Rules.Dirs = []string{"/etc/fanguard/rules.d"} },
		},
		{
			name: "metrics listener",
			doc:  "[metrics]\nlisten = \"127.0.0.1:9745\"\n",
			want: func(c *Config) { c.Metrics.Listen = "127.0.0.1:9745" },
		},
		{
			name: "metrics listener on IPv6 loopback",
			doc:  "[metrics]\nlisten = \"[::1]:65535\"\n",
			want: func(c *Config) { c.Metrics.Listen = "[::1]:65535" },
		},
		{
			name: "metrics listener on every address",
			doc:  "[metrics]\nlisten = \":1\"\n",
			want: func(c *Config) { c.Metrics.Listen = ":1" },
		},
		{
			name: "metrics listener off",
			doc:  "[metrics]\nlisten = \"\"\n",
		},
		{
			name: "every log level",
			doc:  "[log]\nlevel = \"error\"\n",
			want: func(c *Config) { c.Log.Level = "error" },
		},
		{
			name: "json log",
			doc:  "[log]\nformat = \"json\"\n",
			want: func(c *Config) { c.Log.Format = "json" },
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse([]byte(tt.doc), "test.toml")
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			want := Default()
			if tt.want != nil {
				tt.want(&want)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("Parse mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	for _, tt := range []struct {
		name string
		doc  string
		// want holds the messages expected, one per error, in order; each
		// must appear in its error's text.
		want []string
	}{
		// Syntax and structure, reported by go-toml.
		{
			name: "syntax",
			doc:  "mode = \"audit\"\nbudget = \n",
			want: []string{"test.toml:2:"},
		},
		{
			name: "unterminated string",
			doc:  "\n\nmode = \"audit\n",
			want: []string{"test.toml:3:"},
		},
		{
			name: "duplicate key",
			doc:  "mode = \"audit\"\nmode = \"enforce\"\n",
			want: []string{"test.toml:2:1: key mode is already defined"},
		},
		{
			name: "table given a value",
			doc:  "workers = 1\nprotect = 1\n",
			want: []string{"test.toml:2:11: protect: is a TOML integer (want a table, written [protect])"},
		},
		{
			name: "array of tables",
			doc:  "[[log]]\nlevel = \"info\"\n",
			want: []string{"test.toml:1:3: log: is an array of tables (want a table, written [log])"},
		},

		// Unknown keys, reported together with everything else.
		{
			name: "unknown key",
			doc:  "mode = \"audit\"\n\n[protect]\nfs_type = [\"ext4\"]\n",
			want: []string{`test.toml:4: unknown key "protect.fs_type" (want one of paths, fs_types, exclude_paths, exclude_exe, exclude_uids in [protect])`},
		},
		{
			name: "unknown top-level key",
			doc:  "mdoe = \"audit\"\n",
			want: []string{`test.toml:1: unknown key "mdoe" (want one of mode, budget, on_timeout, on_error, on_oversize, on_overload, workers, max_file_size, max_pending, max_pending_per_uid, scan_timeout at the top level, or the tables [rules], [protect], [scan], [cache], [control], [metrics], [quarantine], [log], [update], [[feeds]])`},
		},
		{
			name: "top-level key below a table",
			doc:  "[rules]\ndirs = [\"/r\"]\nworkers = 4\n",
			want: []string{`test.toml:3: unknown key "rules.workers" (workers is a top-level key: move it above the first [table])`},
		},
		{
			name: "unknown table",
			doc:  "[protection]\npaths = []\n",
			want: []string{`test.toml:1: unknown table "protection" (want one of mode,`},
		},
		{
			name: "unknown subtable",
			doc:  "[protect.more]\n",
			want: []string{`test.toml:1: unknown table "protect.more" (want one of paths,`},
		},
		{
			name: "unknown keys and bad values",
			doc:  "foo = 1\nmode = \"maybe\"\n[log]\nlevel = \"loud\"\nbar = 2\n",
			want: []string{
				`test.toml:1: unknown key "foo"`,
				`test.toml:2: mode: "maybe" is not allowed (want "enforce" or "audit")`,
				`test.toml:4: log.level: "loud" is not allowed (want "debug", "info", "warn" or "error")`,
				`test.toml:5: unknown key "log.bar"`,
			},
		},

		// mode and verdicts.
		{
			name: "mode",
			doc:  `mode = "maybe"`,
			want: []string{`test.toml:1: mode: "maybe" is not allowed (want "enforce" or "audit")`},
		},
		{
			name: "mode not a string",
			doc:  `mode = 1`,
			want: []string{`test.toml:1: mode: 1 is not allowed (want "enforce" or "audit")`},
		},
		{
			name: "mode case",
			doc:  `mode = "Enforce"`,
			want: []string{`mode: "Enforce" is not allowed`},
		},
		{
			name: "on_timeout",
			doc:  "# one\n# two\n\nmode = \"audit\"\n\n\non_timeout = \"maybe\"\n",
			want: []string{`test.toml:7: on_timeout: "maybe" is not allowed (want "allow" or "deny")`},
		},
		{
			name: "every verdict",
			doc:  "on_timeout = true\non_error = \"yes\"\non_oversize = \"block\"\non_overload = []\n",
			want: []string{
				`test.toml:1: on_timeout: true is not allowed (want "allow" or "deny")`,
				`test.toml:2: on_error: "yes" is not allowed (want "allow" or "deny")`,
				`test.toml:3: on_oversize: "block" is not allowed (want "allow" or "deny")`,
				`test.toml:4: on_overload: an array is not allowed (want "allow" or "deny")`,
			},
		},

		// Durations.
		{
			name: "budget without unit",
			doc:  `budget = "5"`,
			want: []string{`test.toml:1: budget: "5" is not a duration (want a duration from "10ms" to "10m", such as "5s")`},
		},
		{
			name: "budget integer",
			doc:  `budget = 5`,
			want: []string{`test.toml:1: budget: 5 is not a duration string (want a duration from "10ms" to "10m"`},
		},
		{
			name: "budget too short",
			doc:  `budget = "5ms"`,
			want: []string{`test.toml:1: budget: "5ms" is out of range (want a duration from "10ms" to "10m"`},
		},
		{
			name: "budget too long",
			doc:  `budget = "11m"`,
			want: []string{`budget: "11m" is out of range`},
		},
		{
			name: "budget negative",
			doc:  `budget = "-5s"`,
			want: []string{`budget: "-5s" is out of range`},
		},
		{
			name: "scan_timeout too short",
			doc:  `scan_timeout = "500ms"`,
			want: []string{`test.toml:1: scan_timeout: "500ms" is too short (want a duration of at least "1s", such as "60s")`},
		},
		{
			name: "scan_timeout integer",
			doc:  `scan_timeout = 60`,
			want: []string{`scan_timeout: 60 is not a duration string (want a duration of at least "1s"`},
		},
		{
			name: "scan_timeout garbage",
			doc:  `scan_timeout = "a minute"`,
			want: []string{`scan_timeout: "a minute" is not a duration (want`},
		},

		// Integers.
		{
			name: "workers negative",
			doc:  `workers = -1`,
			want: []string{`test.toml:1: workers: -1 is out of range (want an integer from 0 (one per CPU) to 1024)`},
		},
		{
			name: "workers too many",
			doc:  `workers = 1025`,
			want: []string{`workers: 1025 is out of range (want an integer from 0 (one per CPU) to 1024)`},
		},
		{
			name: "workers string",
			doc:  `workers = "4"`,
			want: []string{`workers: "4" is not an integer (want an integer from 0 (one per CPU) to 1024)`},
		},
		{
			name: "workers float",
			doc:  `workers = 1.5`,
			want: []string{`workers: 1.5 is not an integer`},
		},
		{
			name: "quarantine.action",
			doc:  "[quarantine]\naction = \"shred\"",
			want: []string{`test.toml:2: quarantine.action: "shred" is not allowed (want "audit", "deny" or "quarantine")`},
		},
		{
			name: "quarantine.max_age",
			doc:  "[quarantine]\nmax_age = \"ninety days\"",
			want: []string{`test.toml:2: quarantine.max_age: "ninety days" is not a duration (want a duration such as "90d", "720h" or "0" (keep forever))`},
		},
		{
			name: "control.socket relative",
			doc:  "[control]\nsocket = \"control.sock\"",
			want: []string{`test.toml:2: control.socket: "control.sock" is not an absolute path (want an absolute path, such as "/run/fanguard/control.sock")`},
		},
		{
			name: "metrics.listen without a port",
			doc:  "[metrics]\nlisten = \"127.0.0.1\"",
			want: []string{`test.toml:2: metrics.listen: "127.0.0.1" is not a host:port address (want "host:port" with a port from 1 to 65535, such as "127.0.0.1:9745", or "" for no listener)`},
		},
		{
			name: "metrics.listen port 0",
			doc:  "\n[metrics]\nlisten = \"127.0.0.1:0\"",
			want: []string{`test.toml:3: metrics.listen: "127.0.0.1:0" has no port from 1 to 65535`},
		},
		{
			name: "metrics.listen port too large",
			doc:  "[metrics]\nlisten = \"localhost:65536\"",
			want: []string{`test.toml:2: metrics.listen: "localhost:65536" has no port from 1 to 65535`},
		},
		{
			name: "metrics.listen named port",
			doc:  "[metrics]\nlisten = \"localhost:http\"",
			want: []string{`test.toml:2: metrics.listen: "localhost:http" has no port from 1 to 65535`},
		},
		{
			name: "metrics.listen not a string",
			doc:  "[metrics]\nlisten = 9745",
			want: []string{`test.toml:2: metrics.listen: 9745 is not allowed (want "host:port"`},
		},
		{
			name: "metrics unknown key",
			doc:  "[metrics]\npath = \"/metrics\"",
			want: []string{`test.toml:2: unknown key "metrics.path" (want one of listen in [metrics])`},
		},
		{
			name: "scan.on_close not a boolean",
			doc:  "[scan]\non_close = \"yes\"",
			want: []string{`test.toml:2: scan.on_close: "yes" is not a boolean (want true or false)`},
		},
		{
			name: "scan.on_close_queue zero",
			doc:  "[scan]\non_close_queue = 0",
			want: []string{`test.toml:2: scan.on_close_queue: 0 is out of range (want an integer from 1 to 16384)`},
		},
		{
			name: "scan.on_close_queue too many",
			doc:  "[scan]\non_close = false\non_close_queue = 16385",
			want: []string{`test.toml:3: scan.on_close_queue: 16385 is out of range (want an integer from 1 to 16384)`},
		},
		{
			name: "cache.entries negative",
			doc:  "[cache]\nentries = -1",
			want: []string{`test.toml:2: cache.entries: -1 is out of range (want an integer from 0 (no daemon cache) to 67108864)`},
		},
		{
			name: "max_pending zero",
			doc:  `max_pending = 0`,
			want: []string{`test.toml:1: max_pending: 0 is out of range (want an integer from 1 to 1048576)`},
		},
		{
			name: "max_pending too many",
			doc:  `max_pending = 1048577`,
			want: []string{`max_pending: 1048577 is out of range (want an integer from 1 to 1048576)`},
		},
		{
			name: "max_pending_per_uid negative",
			doc:  `max_pending_per_uid = -1`,
			want: []string{`test.toml:1: max_pending_per_uid: -1 is out of range (want an integer from 0 (32 per worker, at least 64) to 1048576, at most max_pending)`},
		},
		{
			name: "max_pending_per_uid above max_pending",
			doc:  "max_pending = 10\nmax_pending_per_uid = 11",
			want: []string{`test.toml:2: max_pending_per_uid: 11 is more than max_pending (want an integer from 0 (32 per worker, at least 64) to 1048576, at most max_pending)`},
		},

		// Sizes.
		{
			name: "max_file_size unit",
			doc:  `max_file_size = "32XB"`,
			want: []string{`test.toml:1: max_file_size: "32XB" is not a size (want a size from "1KiB" to "4GiB"`},
		},
		{
			name: "max_file_size fraction",
			doc:  `max_file_size = "1.5GiB"`,
			want: []string{`max_file_size: "1.5GiB" is not a size`},
		},
		{
			name: "max_file_size too small",
			doc:  `max_file_size = 512`,
			want: []string{`max_file_size: 512 is out of range (want a size from "1KiB" to "4GiB"`},
		},
		{
			name: "max_file_size negative",
			doc:  `max_file_size = -1`,
			want: []string{`max_file_size: -1 is out of range`},
		},
		{
			name: "max_file_size too large",
			doc:  `max_file_size = "5GiB"`,
			want: []string{`max_file_size: "5GiB" is out of range`},
		},
		{
			name: "max_file_size overflow",
			doc:  `max_file_size = "99999999999999999999GiB"`,
			want: []string{`max_file_size: "99999999999999999999GiB" is out of range`},
		},
		{
			name: "max_file_size bool",
			doc:  `max_file_size = true`,
			want: []string{`max_file_size: true is not a size`},
		},

		// Paths.
		{
			name: "rules.dirs empty",
			doc:  "[rules]\ndirs = []\n",
			want: []string{`test.toml:2: rules.dirs: the list is empty, so no rules would be loaded (want at least one absolute directory`},
		},
		{
			name: "rules.dirs relative",
			doc:  "[rules]\ndirs = [\n  \"/etc/fanguard/rules.d\",\n  \"rules.d\",\n]\n",
			want: []string{`test.toml:4: rules.dirs: "rules.d" is a relative path (want an array of absolute directories`},
		},
		{
			name: "rules.dirs not an array",
			doc:  "[rules]\ndirs = \"/etc/fanguard/rules.d\"\n",
			want: []string{`test.toml:2: rules.dirs: "/etc/fanguard/rules.d" is not an array (want an array of absolute directories`},
		},
		{
			name: "rules.dirs as a table",
			doc:  "[rules.dirs]\na = 1\n",
			want: []string{`test.toml:1: rules.dirs: a table is not an array`},
		},
		{
			name: "protect.paths relative",
			doc:  "[protect]\npaths = [\"home\"]\n",
			want: []string{`test.toml:2: protect.paths: "home" is a relative path (want an array of absolute paths`},
		},
		{
			name: "protect.paths empty string",
			doc:  "[protect]\npaths = [\"\"]\n",
			want: []string{`protect.paths: "" is a relative path`},
		},
		{
			name: "protect.paths NUL",
			doc:  "[protect]\npaths = [\"/a\\u0000b\"]\n",
			want: []string{`protect.paths: "/a\x00b" contains a NUL byte`},
		},
		{
			name: "protect.paths number",
			doc:  "[protect]\npaths = [1]\n",
			want: []string{`protect.paths: 1 is not a path`},
		},
		{
			name: "exclude_paths relative",
			doc:  "[protect]\nexclude_paths = [\"./docker\"]\n",
			want: []string{`test.toml:2: protect.exclude_paths: "./docker" is a relative path (want an array of absolute paths`},
		},
		{
			name: "exclude_exe relative",
			doc:  "[protect]\nexclude_exe = [\"rsync\"]\n",
			want: []string{`test.toml:2: protect.exclude_exe: "rsync" is a relative path (want an array of absolute executable paths`},
		},

		// Filesystem types.
		{
			name: "fs_types network",
			doc:  "[protect]\nfs_types = [\"ext4\", \"nfs\"]\n",
			want: []string{`test.toml:2: protect.fs_types: "nfs" is a network filesystem: a server that hangs would freeze every open on it (want one of ext2, ext3, ext4, xfs, btrfs, tmpfs, vfat, exfat, f2fs, iso9660, jfs, ntfs3, udf, msdos, squashfs, erofs, ramfs, hfsplus, nilfs2, bcachefs)`},
		},
		{
			name: "fs_types fuse",
			doc:  "[protect]\nfs_types = [\"fuse.sshfs\", \"fuseblk\"]\n",
			want: []string{
				`protect.fs_types: "fuse.sshfs" is a FUSE filesystem: a FUSE server that hangs would freeze every open on it (want one of ext2,`,
				`protect.fs_types: "fuseblk" is a FUSE filesystem`,
			},
		},
		{
			name: "fs_types pseudo",
			doc:  "[protect]\nfs_types = [\"proc\", \"cgroup2\"]\n",
			want: []string{
				`protect.fs_types: "proc" is a pseudo filesystem: it holds no files to scan (want one of ext2,`,
				`protect.fs_types: "cgroup2" is a pseudo filesystem`,
			},
		},
		{
			name: "fs_types overlay",
			doc:  "[protect]\nfs_types = [\"overlay\"]\n",
			want: []string{`protect.fs_types: "overlay" is an overlay: its files live on the filesystems below it, protect those instead (want one of ext2,`},
		},
		{
			name: "fs_types unknown",
			doc:  "[protect]\nfs_types = [\"EXT4\"]\n",
			want: []string{`protect.fs_types: "EXT4" is not a supported filesystem type (want one of ext2,`},
		},
		{
			name: "fs_types empty",
			doc:  "[protect]\nfs_types = []\n",
			want: []string{`test.toml:2: protect.fs_types: the list is empty, so nothing would be protected (want one of ext2,`},
		},
		{
			name: "fs_types element lines",
			doc:  "[protect]\nfs_types = [\n  \"ext4\",\n  \"nfs4\",\n  \"cifs\",\n]\n",
			want: []string{
				`test.toml:4: protect.fs_types: "nfs4" is a network filesystem`,
				`test.toml:5: protect.fs_types: "cifs" is a network filesystem`,
			},
		},

		// User ids.
		{
			name: "exclude_uids negative",
			doc:  "[protect]\nexclude_uids = [-1]\n",
			want: []string{`test.toml:2: protect.exclude_uids: -1 is out of range (want an array of integers from 0 to 4294967295`},
		},
		{
			name: "exclude_uids too large",
			doc:  "[protect]\nexclude_uids = [4294967296]\n",
			want: []string{`protect.exclude_uids: 4294967296 is out of range`},
		},
		{
			name: "exclude_uids name",
			doc:  "[protect]\nexclude_uids = [\"root\"]\n",
			want: []string{`protect.exclude_uids: "root" is not a uid (want an array of integers from 0 to 4294967295`},
		},
		{
			name: "exclude_uids not an array",
			doc:  "[protect]\nexclude_uids = 0\n",
			want: []string{`protect.exclude_uids: 0 is not an array`},
		},

		// Log level.
		{
			name: "log.level",
			doc:  "[log]\nlevel = \"INFO\"\n",
			want: []string{`test.toml:2: log.level: "INFO" is not allowed (want "debug", "info", "warn" or "error")`},
		},
		{
			name: "log.level inline table",
			doc:  "log = { level = \"trace\" }\n",
			want: []string{`test.toml:1: log.level: "trace" is not allowed`},
		},
		{
			name: "log.format",
			doc:  "[log]\nlevel = \"info\"\nformat = \"logfmt\"\n",
			want: []string{`test.toml:3: log.format: "logfmt" is not allowed (want "console" or "json")`},
		},
		{
			name: "log.format not a string",
			doc:  "[log]\nformat = 1\n",
			want: []string{`test.toml:2: log.format: 1 is not allowed (want "console" or "json")`},
		},
		{
			name: "dotted key",
			doc:  "\nprotect.fs_types = [\"nfs\"]\n",
			want: []string{`test.toml:2: protect.fs_types: "nfs" is a network filesystem`},
		},
		{
			name: "date",
			doc:  "mode = 1979-05-27\n",
			want: []string{`mode: the date 1979-05-27 is not allowed`},
		},
		{
			name: "long value cut short",
			doc:  "mode = \"" + strings.Repeat("x", 500) + "\"\n",
			want: []string{`mode: "` + strings.Repeat("x", 64) + `"… is not allowed`},
		},

		// [update].
		{
			name: "update values",
			doc:  "[update]\ndir = \"feeds.d\"\ncanary_files = 100001\nmax_scan_cost = \"9us\"\nmax_age = \"a week\"\ntimeout = \"25h\"\n",
			want: []string{
				`test.toml:2: update.dir: "feeds.d" is not an absolute path (want an absolute directory listed in rules.dirs, such as "/var/lib/fanguard/feeds.d")`,
				`test.toml:3: update.canary_files: 100001 is out of range (want an integer from 0 (no canary) to 100000)`,
				`test.toml:4: update.max_scan_cost: "9us" is out of range (want a duration from "10µs" to "10s", such as "2ms")`,
				`test.toml:5: update.max_age: "a week" is not a duration (want a duration such as "7d", "168h" or "0" (never unhealthy))`,
				`test.toml:6: update.timeout: "25h" is out of range (want a duration from "1s" to "24h", such as "10m")`,
			},
		},
		{
			name: "update types",
			doc:  "[update]\ncanary_files = \"2000\"\nmax_scan_cost = 2\nmax_age = -1\ntimeout = \"0.5s\"\n",
			want: []string{
				`test.toml:2: update.canary_files: "2000" is not an integer (want an integer from 0 (no canary) to 100000)`,
				`test.toml:3: update.max_scan_cost: 2 is not a duration string (want a duration from "10µs" to "10s", such as "2ms")`,
				`test.toml:4: update.max_age: -1 is not a duration (want a duration such as "7d", "168h" or "0" (never unhealthy))`,
				`test.toml:5: update.timeout: "0.5s" is out of range (want a duration from "1s" to "24h", such as "10m")`,
			},
		},
		{
			name: "update.canary_files negative, max_scan_cost too long",
			doc:  "[update]\ncanary_files = -1\nmax_scan_cost = \"11s\"\n",
			want: []string{
				`test.toml:2: update.canary_files: -1 is out of range (want an integer from 0 (no canary) to 100000)`,
				`test.toml:3: update.max_scan_cost: "11s" is out of range (want a duration from "10µs" to "10s", such as "2ms")`,
			},
		},
		{
			name: "update unknown key",
			doc:  "[update]\ndirs = [\"/x\"]\n",
			want: []string{`test.toml:2: unknown key "update.dirs" (want one of dir, canary_files, max_scan_cost, max_age, timeout in [update])`},
		},
		{
			name: "update.dir not in rules.dirs",
			doc:  "[update]\ndir = \"/var/lib/feeds\"\n\n[[feeds]]\nname = \"x\"\nurl = \"/srv/x\"\n",
			want: []string{`test.toml:2: update.dir: "/var/lib/feeds" is not one of rules.dirs, so the feeds would never load: add it to rules.dirs, between the shipped and your directories (want an absolute directory listed in rules.dirs, such as "/var/lib/fanguard/feeds.d")`},
		},
		{
			name: "default update.dir not in rules.dirs",
			doc:  "[rules]\ndirs = [\"/usr/lib/fanguard/rules.d\", \"/etc/fanguard/rules.d\"]\n\n[[feeds]]\nname = \"x\"\nurl = \"/srv/x\"\n",
			want: []string{`test.toml:2: update.dir: "/var/lib/fanguard/feeds.d" (the default) is not one of rules.dirs, so the feeds would never load: add it to rules.dirs, between the shipped and your directories (want`},
		},

		// [[feeds]].
		{
			name: "feed name",
			doc:  "[[feeds]]\nname = \"YARA Forge\"\nurl = \"/srv/x\"\n[[feeds]]\nname = \"-x\"\nurl = \"/srv/x\"\n[[feeds]]\nname = \"" + strings.Repeat("a", 65) + "\"\nurl = \"/srv/x\"\n[[feeds]]\nname = 1\nurl = \"/srv/x\"\n",
			want: []string{
				`test.toml:2: feeds[1] ("YARA Forge").name: "YARA Forge" is not allowed (want 1 to 64 characters among a-z, 0-9, ".", "_" and "-", starting with a letter or digit, such as "yara-forge-core")`,
				`test.toml:5: feeds[2] ("-x").name: "-x" is not allowed (want 1 to 64 characters`,
				`test.toml:8: feeds[3] ("` + strings.Repeat("a", 64) + `"…).name: "` + strings.Repeat("a", 64) + `"… is not allowed (want 1 to 64 characters`,
				`test.toml:11: feeds[4].name: 1 is not allowed (want 1 to 64 characters`,
			},
		},
		{
			name: "feed name duplicate",
			doc:  "[[feeds]]\nname = \"forge\"\nurl = \"/srv/a\"\n\n[[feeds]]\nname = \"other\"\nurl = \"/srv/b\"\n\n[[feeds]]\nname = \"forge\"\nurl = \"/srv/c\"\n",
			want: []string{`test.toml:10: feeds[3] ("forge").name: "forge" is already the name of feeds[1] ("forge") (want a name unique among the feeds)`},
		},
		{
			name: "feed without name and url",
			doc:  "mode = \"audit\"\n\n[[feeds]]\nsubdir = \"x\"\n",
			want: []string{
				`test.toml:3: feeds[1]: name is missing (want 1 to 64 characters among a-z, 0-9, ".", "_" and "-", starting with a letter or digit, such as "yara-forge-core")`,
				`test.toml:3: feeds[1]: url is missing (want an "https://" address, or an absolute path of a directory or an archive, such as "/srv/mirror/rules.zip")`,
			},
		},
		{
			name: "feed without url",
			doc:  "[[feeds]]\nname = \"a\"\nurl = \"/a\"\n[[feeds]]\nname = \"b\"\n",
			want: []string{`test.toml:4: feeds[2] ("b"): url is missing (want an "https://" address`},
		},
		{
			name: "feed url http",
			doc:  "[[feeds]]\nname = \"forge\"\nurl = \"http://example.com/rules.zip\"\n",
			want: []string{`test.toml:3: feeds[1] ("forge").url: "http://example.com/rules.zip" is not an https address: rules must come over a connection that authenticates the server (want an "https://" address, or an absolute path of a directory or an archive, such as "/srv/mirror/rules.zip")`},
		},
		{
			name: "feed url relative path",
			doc:  "[[feeds]]\nname = \"forge\"\nurl = \"rules/forge.zip\"\n",
			want: []string{`test.toml:3: feeds[1] ("forge").url: "rules/forge.zip" is a relative path (want an "https://" address, or an absolute path of a directory or an archive, such as "/srv/mirror/rules.zip")`},
		},
		{
			name: "feed url others",
			doc: `feeds = [
  { name = "a", url = "https:///rules.zip" },
  { name = "b", url = "https://bad host/rules.zip" },
  { name = "c", url = "file:///srv/rules.zip" },
  { name = "d", url = "" },
  { name = "e", url = ["/a"] },
]`,
			want: []string{
				`test.toml:2: feeds[1] ("a").url: "https:///rules.zip" has no host (want an "https://" address`,
				`test.toml:3: feeds[2] ("b").url: "https://bad host/rules.zip" is not a valid address (want an "https://" address`,
				`test.toml:4: feeds[3] ("c").url: "file:///srv/rules.zip" is not an https address: rules must come over a connection that authenticates the server (want`,
				`test.toml:5: feeds[4] ("d").url: "" is empty (want an "https://" address`,
				`test.toml:6: feeds[5] ("e").url: an array is not allowed (want an "https://" address`,
			},
		},
		{
			name: "feed subdir",
			doc:  "[[feeds]]\nname = \"a\"\nurl = \"/a\"\nsubdir = \"packages/../../etc\"\n[[feeds]]\nname = \"b\"\nurl = \"/b\"\nsubdir = \"/packages\"\n[[feeds]]\nname = \"c\"\nurl = \"/c\"\nsubdir = \"./packages\"\n",
			want: []string{
				`test.toml:4: feeds[1] ("a").subdir: "packages/../../etc" has a ".." element (want a relative path inside the feed, with "/" between names and no "." or ".." element, such as "packages/core", or "" for all of it)`,
				`test.toml:8: feeds[2] ("b").subdir: "/packages" is an absolute path (want a relative path inside the feed`,
				`test.toml:12: feeds[3] ("c").subdir: "./packages" has a "." element (want a relative path inside the feed`,
			},
		},
		{
			name: "feed sha256",
			doc:  "[[feeds]]\nname = \"a\"\nurl = \"/a\"\nsha256 = \"9f86d081884c7d659a2feaf0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a0\"\n[[feeds]]\nname = \"b\"\nurl = \"/b\"\nsha256 = \"zf86d081884c7d659a2feaf0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\"\n",
			want: []string{
				`test.toml:4: feeds[1] ("a").sha256: "9f86d081884c7d659a2feaf0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a0" is not a sha256 digest (want 64 hexadecimal digits, as sha256sum prints them, or "" for no pinned digest)`,
				`test.toml:8: feeds[2] ("b").sha256: "zf86d081884c7d659a2feaf0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08" is not a sha256 digest`,
			},
		},
		{
			name: "feed minisign_key",
			doc: `feeds = [
  { name = "a", url = "/a", minisign_key = "RWQ not base64" },
  { name = "b", url = "/b", minisign_key = "RWQf6LRCGA9i53mlYecO4IzT51TGPpvWucNSCh1CBM0Q" },
  { name = "c", url = "/c", minisign_key = "UWQf6LRCGA9i53mlYecO4IzT51TGPpvWucNSCh1CBM0QTaLn73Y7GFO3" },
  { name = "d", url = "/d", minisign_key = "untrusted comment: minisign public key\nRWQf6LRCGA9i53mlYecO4IzT51TGPpvWucNSCh1CBM0QTaLn73Y7GFO3" },
]`,
			want: []string{
				`test.toml:2: feeds[1] ("a").minisign_key: "RWQ not base64" is not base64 (want a minisign public key: the base64 line of its .pub file, such as "RWQ…" (56 characters), or "")`,
				`test.toml:3: feeds[2] ("b").minisign_key: "RWQf6LRCGA9i53mlYecO4IzT51TGPpvWucNSCh1CBM0Q" decodes to 33 bytes, not 42 (want a minisign public key`,
				`test.toml:4: feeds[3] ("c").minisign_key: "UWQf6LRCGA9i53mlYecO4IzT51TGPpvWucNSCh1CBM0QTaLn73Y7GFO3" is not an Ed25519 key (its algorithm is not "Ed") (want a minisign public key`,
				`test.toml:5: feeds[4] ("d").minisign_key: "untrusted comment: minisign public key\nRWQf6LRCGA9i53mlYecO4IzT5"… is a whole .pub file: keep only its second line, the key (want a minisign public key: the base64 line of its .pub file`,
			},
		},
		{
			name: "feed signature_url without minisign_key",
			doc:  "[[feeds]]\nname = \"forge\"\nurl = \"https://example.com/r.zip\"\nsignature_url = \"https://example.com/r.zip.minisig\"\n",
			want: []string{`test.toml:4: feeds[1] ("forge").signature_url: "https://example.com/r.zip.minisig" is set but minisign_key is not, so there is no key to check the signature with (want minisign_key set too, or no signature_url)`},
		},
		{
			name: "feed signature_url with a wrong minisign_key: one error",
			doc:  "[[feeds]]\nname = \"forge\"\nurl = \"https://example.com/r.zip\"\nminisign_key = \"RWQ\"\nsignature_url = \"https://example.com/r.zip.minisig\"\n",
			want: []string{`test.toml:4: feeds[1] ("forge").minisign_key: "RWQ" is not base64`},
		},
		{
			name: "feed signature_url http",
			doc:  "[[feeds]]\nname = \"forge\"\nurl = \"https://example.com/r.zip\"\nminisign_key = \"RWQf6LRCGA9i53mlYecO4IzT51TGPpvWucNSCh1CBM0QTaLn73Y7GFO3\"\nsignature_url = \"http://example.com/r.zip.minisig\"\n",
			want: []string{`test.toml:5: feeds[1] ("forge").signature_url: "http://example.com/r.zip.minisig" is not an https address: rules must come over a connection that authenticates the server (want an "https://" address or an absolute path of the .minisig file, or "" for url + ".minisig")`},
		},
		{
			name: "feed globs",
			doc:  "[[feeds]]\nname = \"forge\"\nurl = \"/a\"\ninclude = [\n  \"*.yar\",\n  \"[a-\",\n]\nexclude = [\"\", 1, \"x\\\\\"]\n",
			want: []string{
				`test.toml:6: feeds[1] ("forge").include: "[a-" is not a valid pattern (want an array of glob patterns (path.Match syntax), such as ["*.yar", "*.yara"])`,
				`test.toml:8: feeds[1] ("forge").exclude: "" matches no file (want an array of glob patterns`,
				`test.toml:8: feeds[1] ("forge").exclude: 1 is not a glob pattern (want an array of glob patterns`,
				`test.toml:8: feeds[1] ("forge").exclude: "x\\" is not a valid pattern (want an array of glob patterns`,
			},
		},
		{
			name: "feed include empty or not an array",
			doc:  "[[feeds]]\nname = \"a\"\nurl = \"/a\"\ninclude = []\n[[feeds]]\nname = \"b\"\nurl = \"/b\"\ninclude = \"*.yar\"\n",
			want: []string{
				`test.toml:4: feeds[1] ("a").include: the list is empty, so no file of the feed would be installed (want at least one glob pattern, such as "*.yar", or no include for ["*.yar", "*.yara"])`,
				`test.toml:8: feeds[2] ("b").include: "*.yar" is not an array (want an array of glob patterns`,
			},
		},
		{
			name: "feed ca_file with a local url",
			doc:  "[[feeds]]\nname = \"mirror\"\nurl = \"/srv/mirror/rules.zip\"\nca_file = \"/etc/fanguard/ca.pem\"\n",
			want: []string{`test.toml:4: feeds[1] ("mirror").ca_file: "/etc/fanguard/ca.pem" is set but url is a local path, read without TLS (want "" with a local url)`},
		},
		{
			name: "feed ca_file relative",
			doc:  "[[feeds]]\nname = \"mirror\"\nurl = \"https://mirror/rules.zip\"\nca_file = \"ca.pem\"\n",
			want: []string{`test.toml:4: feeds[1] ("mirror").ca_file: "ca.pem" is not an absolute path (want an absolute path of a PEM file of CA certificates, or "" for the system's only)`},
		},
		{
			name: "feed max_size",
			doc:  "[[feeds]]\nname = \"a\"\nurl = \"/a\"\nmax_size = \"17GiB\"\n[[feeds]]\nname = \"b\"\nurl = \"/b\"\nmax_size = 1023\n[[feeds]]\nname = \"c\"\nurl = \"/c\"\nmax_size = \"lots\"\n",
			want: []string{
				`test.toml:4: feeds[1] ("a").max_size: "17GiB" is out of range (want a size from "1KiB" to "16GiB": an integer number of bytes or a string such as "256MiB" or "1GiB")`,
				`test.toml:8: feeds[2] ("b").max_size: 1023 is out of range (want a size from "1KiB" to "16GiB"`,
				`test.toml:12: feeds[3] ("c").max_size: "lots" is not a size (want a size from "1KiB" to "16GiB"`,
			},
		},
		{
			name: "feed unknown keys",
			doc:  "[[feeds]]\nname = \"forge\"\nurl = \"/a\"\nsha = \"x\"\nmode = \"audit\"\n[feeds.more]\nx = 1\n",
			want: []string{
				`test.toml:4: feeds[1] ("forge"): unknown key "sha" (want one of name, url, subdir, sha256, minisign_key, signature_url, include, exclude, ca_file, max_size in a [[feeds]] entry)`,
				`test.toml:5: feeds[1] ("forge"): unknown key "mode" (mode is a top-level key: move it above the first [table])`,
				`test.toml:6: feeds[1] ("forge"): unknown table "more" (want one of name, url,`,
			},
		},
		{
			name: "feeds not an array of tables",
			doc:  "[feeds]\nname = \"forge\"\nurl = \"/a\"\n",
			want: []string{`test.toml:1: feeds: a table is not an array of tables (want [[feeds]] entries, each a table with at least name and url)`},
		},
		{
			name: "feeds elements not tables",
			doc:  "feeds = [\n  \"forge\",\n  { name = \"a\", url = \"/a\", urls = [] },\n]\n",
			want: []string{
				`test.toml:2: feeds: "forge" is not a table (want [[feeds]] entries, each a table with at least name and url)`,
				`test.toml:3: feeds[2] ("a"): unknown key "urls" (want one of name, url,`,
			},
		},
		{
			name: "feeds inside a table",
			doc:  "[update]\nfeeds = []\n",
			want: []string{`test.toml:2: unknown key "update.feeds" (want one of dir, canary_files, max_scan_cost, max_age, timeout in [update])`},
		},
		{
			name: "feed duplicate key",
			doc:  "[[feeds]]\nname = \"a\"\nname = \"b\"\n",
			want: []string{`test.toml:3:1: key name is already defined`},
		},
		{
			name: "feeds: every error of every entry",
			doc: `[[feeds]]
name = "Forge"
url = "http://example.com/x.zip"

[[feeds]]
name = "a"
url = "/srv/a"
subdir = "../b"
ca_file = "/ca.pem"
foo = 1

[update]
canary_files = -5
`,
			want: []string{
				`test.toml:2: feeds[1] ("Forge").name: "Forge" is not allowed`,
				`test.toml:3: feeds[1] ("Forge").url: "http://example.com/x.zip" is not an https address`,
				`test.toml:8: feeds[2] ("a").subdir: "../b" has a ".." element`,
				`test.toml:9: feeds[2] ("a").ca_file: "/ca.pem" is set but url is a local path`,
				`test.toml:10: feeds[2] ("a"): unknown key "foo"`,
				`test.toml:13: update.canary_files: -5 is out of range`,
			},
		},

		// Everything at once.
		{
			name: "many",
			doc: `mode = "on"
budget = "forever"
workers = -2
[rules]
dirs = ["rules.d"]
[protect]
fs_types = ["nfs", "ext4", "proc"]
exclude_uids = [-1]
`,
			want: []string{
				`test.toml:1: mode: "on" is not allowed`,
				`test.toml:2: budget: "forever" is not a duration`,
				`test.toml:3: workers: -2 is out of range`,
				`test.toml:5: rules.dirs: "rules.d" is a relative path`,
				`test.toml:7: protect.fs_types: "nfs" is a network filesystem`,
				`test.toml:7: protect.fs_types: "proc" is a pseudo filesystem`,
				`test.toml:8: protect.exclude_uids: -1 is out of range`,
			},
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse([]byte(tt.doc), "test.toml")
			if err == nil {
				t.Fatalf("Parse succeeded, want errors %q", tt.want)
			}
			if diff := cmp.Diff(Config{}, got); diff != "" {
				t.Errorf("Parse returned a config with its error (-want +got):\n%s", diff)
			}
			errs := splitErrors(err)
			if len(errs) != len(tt.want) {
				t.Fatalf("Parse returned %d errors, want %d:\n%v", len(errs), len(tt.want), err)
			}
			for i, e := range errs {
				msg := e.Error()
				if !strings.HasPrefix(msg, "test.toml:") {
					t.Errorf("error %q does not start with the file name", msg)
				}
				if strings.Contains(msg, "\n") {
					t.Errorf("error %q spans several lines", msg)
				}
				if !strings.Contains(msg, tt.want[i]) {
					t.Errorf("error %d:\n got: %s\nwant: …%s…", i, msg, tt.want[i])
				}
			}
		})
	}
}

// splitErrors returns the errors joined in err, or err alone.
func splitErrors(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

func TestParseSize(t *testing.T) {
	for _, tt := range []struct {
		in     string
		want   int64
		wantOK bool
	}{
		{"0", 0, true},
		{"1024", 1024, true},
		{"1024B", 1024, true},
		{"1k", 1 << 10, true},
		{"1K", 1 << 10, true},
		{"1KiB", 1 << 10, true},
		{"1kb", 1000, true},
		{"3M", 3 << 20, true},
		{"3MiB", 3 << 20, true},
		{"3MB", 3_000_000, true},
		{"2G", 2 << 30, true},
		{"2GiB", 2 << 30, true},
		{"2GB", 2_000_000_000, true},
		{"1T", 1 << 40, true},
		{"1TB", 1e12, true},
		{" 7 MiB ", 7 << 20, true},
		{"9223372036854775807", 9223372036854775807, true},
		{"9223372036854775808", 9223372036854775807, true},
		{"9000000000G", 9223372036854775807, true},
		{"", 0, false},
		{"MiB", 0, false},
		{"-1", 0, false},
		{"+1", 0, false},
		{"1.5M", 0, false},
		{"1 M B", 0, false},
		{"1Mi", 0, false},
		{"0x10", 0, false},
	} {
		t.Run(tt.in, func(t *testing.T) {
			got, ok := parseSize(tt.in)
			if ok != tt.wantOK || (ok && got != tt.want) {
				t.Errorf("parseSize(%q) = %d, %v; want %d, %v", tt.in, got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

func TestRoundUpSecond(t *testing.T) {
	const maxDuration = time.Duration(1<<63 - 1)
	for _, tt := range []struct{ in, want time.Duration }{
		{time.Second, time.Second},
		{1500 * time.Millisecond, 2 * time.Second},
		{time.Second + 1, 2 * time.Second},
		{time.Hour, time.Hour},
		{maxDuration, maxDuration - maxDuration%time.Second},
	} {
		if got := roundUpSecond(tt.in); got != tt.want {
			t.Errorf("roundUpSecond(%v) = %v, want %v", tt.in, got, tt.want)
		}
	}
}
