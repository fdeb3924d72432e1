package policy

import (
	"encoding/base64"
	"encoding/hex"
	"io/fs"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// FuzzParse checks that Parse never panics, that every error it returns
// names the file, and that a configuration it accepts is valid.
func FuzzParse(f *testing.F) {
	shipped, err := os.ReadFile(shippedConfig)
	if err != nil {
		f.Fatal(err)
	}
	// The shipped file with its [[feeds]] example uncommented.
	var withFeed strings.Builder
	withFeed.Write(shipped)
	if i := strings.Index(string(shipped), "\n# [[feeds]]\n"); i >= 0 {
		for _, l := range strings.Split(string(shipped[i+1:]), "\n") {
			withFeed.WriteString(strings.TrimPrefix(l, "# ") + "\n")
		}
	} else {
		f.Fatalf("%s has no [[feeds]] example", shippedConfig)
	}
	for _, seed := range []string{
		string(shipped),
		withFeed.String(),
		"[update]\ndir = \"/var/lib/fanguard/feeds.d\"\ncanary_files = 0\nmax_scan_cost = \"10µs\"\nmax_age = \"0\"\ntimeout = \"24h\"\n",
		"[update]\ndir = \"x\"\ncanary_files = -1\nmax_scan_cost = \"1ns\"\nmax_age = \"65536d\"\ntimeout = 5\n",
		"[[feeds]]\nname = \"a\"\nurl = \"/srv/a\"\n[[feeds]]\nname = \"b\"\nurl = \"https://h.example/b.zip\"\nsubdir = \"x//y/\"\nsha256 = \"9F86D081884C7D659A2FEAF0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08\"\nminisign_key = \"RWQf6LRCGA9i53mlYecO4IzT51TGPpvWucNSCh1CBM0QTaLn73Y7GFO3\"\ninclude = [\"*.yar\", \"a/*.yara\"]\nexclude = [\"x*\"]\nca_file = \"/ca.pem\"\nmax_size = \"1GiB\"\n",
		"[[feeds]]\nname = \"a\"\nurl = \"/a\"\n[[feeds]]\nname = \"a\"\nurl = \"http://a\"\nsubdir = \"../x\"\nsignature_url = \"/s\"\ninclude = [\"[\"]\nca_file = \"/ca\"\nfoo = 1\n[feeds.x]\n",
		"feeds = [{name = \"a\", url = \"/a\"}, 1, {url = \"https://\"}]\n[rules]\ndirs = [\"/r\"]\n",
		"[feeds]\nname = \"a\"\n",
		"[[feeds]]\n[[feeds.x]]\n[[feeds]]\nmode = 1\n",
		"",
		"mode = ",
		"mode = \"audit\"\nmode = \"enforce\"\n",
		"protect = 1",
		"[[protect]]\n",
		"[protect.x.y]\nz = 1\n",
		"a.b.c = 1\n",
		"log = { level = \"warn\", x = 1 }\n",
		"workers = 99999999999999999999\n",
		"max_file_size = \"9223372036854775807GiB\"\n",
		"scan_timeout = \"2562047h47m16.854775807s\"\n",
		"budget = \"-1ns\"\n",
		"[rules]\ndirs = []\n",
		"[rules]\ndirs = [\"/a/../..\", \"rel\", 1, [\"/x\"]]\n",
		"[protect]\nfs_types = [\"nfs\", \"fuse.sshfs\", \"proc\", \"ext4\", \"ext4\"]\n",
		"[protect]\nexclude_uids = [-1, 4294967296, \"root\", 1.5]\n",
		"[protect]\npaths = [\"/a\\u0000\"]\n",
		"\"mode\" = 'audit'\n[\"log\"]\n'level' = \"\"\"debug\"\"\"\n",
		"mode = 1979-05-27T07:32:00Z\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		const name = "fuzz.toml"
		cfg, err := Parse(data, name)
		if err != nil {
			for _, e := range splitErrors(err) {
				if !strings.HasPrefix(e.Error(), name+":") {
					t.Errorf("error %q does not start with the file name", e)
				}
			}
			return
		}
		checkValid(t, cfg)
	})
}

// FuzzParseDropIn checks parse with a main file and one drop-in: it never
// panics, every error names one of the two files, a configuration it
// accepts is valid, and a drop-in that names no key changes nothing.
func FuzzParseDropIn(f *testing.F) {
	for _, seed := range [][2]string{
		{"mode = \"audit\"\n", "mode = \"enforce\"\n"},
		{"[protect]\npaths = [\"/a\"]\n", "[protect]\npaths = [\"rel\"]\n"},
		{"[[feeds]]\nname = \"a\"\nurl = \"/a\"\n", "[rules]\ndirs = [\"/r\"]\n"},
		{"max_pending_per_uid = 100\n", "max_pending = 50\n"},
		{"", "feeds = [{name = \"b\", url = \"https://h\"}, 1]\nlog = { level = \"x\" }\n"},
		{"mode = ", "[log\n"},
		{"", ""},
	} {
		f.Add([]byte(seed[0]), []byte(seed[1]))
	}
	f.Fuzz(func(t *testing.T, main, dropIn []byte) {
		const mainName, dropInName = "main.toml", "main.toml.d/x.toml"
		cfg, err := parse([]*document{{file: mainName, data: main}, {file: dropInName, data: dropIn}})
		if err != nil {
			for _, e := range splitErrors(err) {
				if !strings.HasPrefix(e.Error(), mainName+":") && !strings.HasPrefix(e.Error(), dropInName+":") {
					t.Errorf("error %q does not start with a file name", e)
				}
			}
			return
		}
		checkValid(t, cfg)
		if strings.TrimSpace(string(dropIn)) == "" {
			alone, err := Parse(main, mainName)
			if err != nil || !reflect.DeepEqual(alone, cfg) {
				t.Errorf("an empty drop-in changed the configuration: %v", err)
			}
		}
	})
}

// checkValid fails t unless cfg satisfies every rule Parse enforces.
func checkValid(t *testing.T, cfg Config) {
	t.Helper()
	if cfg.Mode != Enforce && cfg.Mode != Audit {
		t.Errorf("Mode = %v", cfg.Mode)
	}
	for _, v := range []Verdict{cfg.OnTimeout, cfg.OnError, cfg.OnOversize, cfg.OnOverload} {
		if v != Allow && v != Deny {
			t.Errorf("verdict = %v", v)
		}
	}
	if cfg.Budget < minBudget || cfg.Budget > maxBudget {
		t.Errorf("Budget = %v", cfg.Budget)
	}
	if cfg.ScanTimeout < time.Second || cfg.ScanTimeout%time.Second != 0 {
		t.Errorf("ScanTimeout = %v", cfg.ScanTimeout)
	}
	if cfg.Workers < 1 || cfg.Workers > maxWorkers {
		t.Errorf("Workers = %d", cfg.Workers)
	}
	if cfg.MaxFileSize < minFileSize || cfg.MaxFileSize > maxFileSize {
		t.Errorf("MaxFileSize = %d", cfg.MaxFileSize)
	}
	if cfg.MaxPending < 1 || cfg.MaxPending > maxMaxPending {
		t.Errorf("MaxPending = %d", cfg.MaxPending)
	}
	if len(cfg.Rules.Dirs) == 0 {
		t.Error("Rules.Dirs is empty")
	}
	for _, list := range [][]string{cfg.Rules.Dirs, cfg.Protect.Paths, cfg.Protect.ExcludePaths, cfg.Protect.ExcludeExe} {
		for _, p := range list {
			if !filepath.IsAbs(p) || filepath.Clean(p) != p || strings.IndexByte(p, 0) >= 0 {
				t.Errorf("path %q is not clean and absolute", p)
			}
		}
	}
	if len(cfg.Protect.FSTypes) == 0 {
		t.Error("Protect.FSTypes is empty")
	}
	for i, fs := range cfg.Protect.FSTypes {
		if !slices.Contains(LocalFSTypes(), fs) {
			t.Errorf("FSTypes holds %q", fs)
		}
		if slices.Contains(cfg.Protect.FSTypes[:i], fs) {
			t.Errorf("FSTypes holds %q twice", fs)
		}
	}
	switch cfg.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		t.Errorf("Log.Level = %q", cfg.Log.Level)
	}
	checkValidUpdate(t, cfg)
}

// checkValidUpdate fails t unless cfg.Update and cfg.Feeds satisfy every
// rule Parse enforces.
func checkValidUpdate(t *testing.T, cfg Config) {
	t.Helper()
	u := cfg.Update
	if !filepath.IsAbs(u.Dir) || filepath.Clean(u.Dir) != u.Dir {
		t.Errorf("Update.Dir = %q", u.Dir)
	}
	if len(cfg.Feeds) > 0 && !slices.Contains(cfg.Rules.Dirs, u.Dir) {
		t.Errorf("Update.Dir %q is not in Rules.Dirs %q", u.Dir, cfg.Rules.Dirs)
	}
	if u.CanaryFiles < 0 || u.CanaryFiles > 100_000 {
		t.Errorf("Update.CanaryFiles = %d", u.CanaryFiles)
	}
	if u.MaxScanCost < 10*time.Microsecond || u.MaxScanCost > 10*time.Second {
		t.Errorf("Update.MaxScanCost = %v", u.MaxScanCost)
	}
	if u.MaxAge < 0 {
		t.Errorf("Update.MaxAge = %v", u.MaxAge)
	}
	if u.Timeout < time.Second || u.Timeout > 24*time.Hour {
		t.Errorf("Update.Timeout = %v", u.Timeout)
	}
	if cfg.Feeds != nil && len(cfg.Feeds) == 0 {
		t.Error("Feeds is empty, not nil")
	}
	name := regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)
	for i, f := range cfg.Feeds {
		if !name.MatchString(f.Name) {
			t.Errorf("feed %d: Name = %q", i, f.Name)
		}
		if slices.ContainsFunc(cfg.Feeds[:i], func(g FeedConfig) bool { return g.Name == f.Name }) {
			t.Errorf("feed %d: Name %q is not unique", i, f.Name)
		}
		for _, u := range []string{f.URL, f.SignatureURL} {
			if u == f.SignatureURL && u == "" {
				continue
			}
			if pu, err := url.Parse(u); err == nil && pu.Scheme == "https" && pu.Hostname() != "" {
				continue
			}
			if !filepath.IsAbs(u) || filepath.Clean(u) != u && u != f.URL+".minisig" {
				t.Errorf("feed %d: %q is neither an https address nor a clean absolute path", i, u)
			}
		}
		if f.Subdir != "" && !fs.ValidPath(f.Subdir) {
			t.Errorf("feed %d: Subdir = %q", i, f.Subdir)
		}
		if b, err := hex.DecodeString(f.SHA256); err != nil || (f.SHA256 != "" && len(b) != 32) || strings.ToLower(f.SHA256) != f.SHA256 {
			t.Errorf("feed %d: SHA256 = %q", i, f.SHA256)
		}
		if f.MinisignKey != "" {
			if b, err := base64.StdEncoding.DecodeString(f.MinisignKey); err != nil || len(b) != 42 || string(b[:2]) != "Ed" {
				t.Errorf("feed %d: MinisignKey = %q", i, f.MinisignKey)
			}
		}
		if (f.MinisignKey == "") != (f.SignatureURL == "") {
			t.Errorf("feed %d: MinisignKey = %q but SignatureURL = %q", i, f.MinisignKey, f.SignatureURL)
		}
		if len(f.Include) == 0 {
			t.Errorf("feed %d: Include is empty", i)
		}
		if f.Exclude != nil && len(f.Exclude) == 0 {
			t.Errorf("feed %d: Exclude is empty, not nil", i)
		}
		for _, p := range slices.Concat(f.Include, f.Exclude) {
			if _, err := path.Match(p, ""); err != nil || p == "" {
				t.Errorf("feed %d: pattern %q", i, p)
			}
		}
		if f.CAFile != "" && (!filepath.IsAbs(f.CAFile) || !strings.HasPrefix(f.URL, "https:")) {
			t.Errorf("feed %d: CAFile = %q with URL %q", i, f.CAFile, f.URL)
		}
		if f.MaxSize < 1<<10 || f.MaxSize > 16<<30 {
			t.Errorf("feed %d: MaxSize = %d", i, f.MaxSize)
		}
	}
}
