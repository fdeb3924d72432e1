package policy

import (
	"os"
	"path/filepath"
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
	for _, seed := range []string{
		string(shipped),
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
}
