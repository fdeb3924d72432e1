package scanner

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// cacheTree has something of every kind a Ruleset reports: an include, an
// override, a mask, a broken file, a compiler warning, an action warning,
// tags and metadata.
func cacheTree() map[string]string {
	return map[string]string{
		"0/a.yar":          "include \"inc/common.inc\"\n" + rule("a", `action = "audit"`),
		"0/inc/common.inc": "rule common : tag1 tag2 {\n meta:\n  severity = \"high\"\n  score = 5\n condition:\n  true\n}\n",
		"0/b.yar":          rule("b_usr"),
		"0/m.yar":          rule("m"),
		"0/w.yar":          "rule slow {\n strings:\n  $a = { 00 ?? }\n condition:\n  $a\n}\n" + rule("bogus", `action = "explode"`),
		"0/x.yar":          "rule x {\n condition: nope\n}\n",
		"1/b.yar":          rule("b_etc", `action = "quarantine"`),
		"1/m.yar":          toDevNull,
		"1/dir.yar":        asDir,
	}
}

// sameRuleset compares what two Loads report, all but how they loaded.
var sameRuleset = []cmp.Option{
	cmp.AllowUnexported(Ruleset{}, ruleInfo{}, ruleKey{}),
	cmpopts.IgnoreFields(Ruleset{}, "rules", "classes", "FromCache", "LoadTime", "CacheError"),
}

func TestCacheGivesTheSameRuleset(t *testing.T) {
	root := t.TempDir()
	writeTree(t, root, cacheTree())
	dirs := []string{filepath.Join(root, "0"), filepath.Join(root, "1"), filepath.Join(root, "missing")}
	cache := filepath.Join(t.TempDir(), "cache")

	plain := mustLoadOpts(t, LoadOptions{Dirs: dirs})
	cold := mustLoadOpts(t, LoadOptions{Dirs: dirs, CacheDir: cache})
	warm := mustLoadOpts(t, LoadOptions{Dirs: dirs, CacheDir: cache})
	if plain.FromCache || cold.FromCache || !warm.FromCache {
		t.Fatalf("FromCache = %v, %v, %v; want false, false, true", plain.FromCache, cold.FromCache, warm.FromCache)
	}
	for _, rs := range []*Ruleset{plain, cold, warm} {
		if rs.CacheError != nil {
			t.Errorf("CacheError = %v", rs.CacheError)
		}
		if rs.LoadTime <= 0 {
			t.Errorf("LoadTime = %v", rs.LoadTime)
		}
	}
	if diff := cmp.Diff(plain, cold, sameRuleset...); diff != "" {
		t.Errorf("cold load differs from a plain one (-plain +cold):\n%s", diff)
	}
	if diff := cmp.Diff(plain, warm, sameRuleset...); diff != "" {
		t.Errorf("warm load differs from a plain one (-plain +warm):\n%s", diff)
	}
	// The tree reports what it should, so the comparison compares
	// something.
	if len(plain.Broken) != 2 || len(plain.Warnings) != 2 || len(plain.Overridden) != 2 || len(plain.Masks) != 1 || len(plain.MissingDirs) != 1 {
		t.Errorf("Broken %v, Warnings %v, Overridden %v, Masks %v, MissingDirs %v; want 2, 2, 2, 1, 1",
			plain.Broken, plain.Warnings, plain.Overridden, plain.Masks, plain.MissingDirs)
	}
	// And the cached rules scan alike.
	want, err := mustScanner(t, plain).Scan([]byte("x"), Vars{})
	if err != nil {
		t.Fatal(err)
	}
	got, err := mustScanner(t, warm).Scan([]byte("x"), Vars{})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("matches differ (-plain +warm):\n%s", diff)
	}

	// One entry, private to root.
	fi, err := os.Stat(cache)
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("cache directory: %v, %v; want mode 0700", fi.Mode(), err)
	}
	entries := cacheFiles(t, cache)
	if len(entries) != 1 || entries[0] != cold.Generation+cacheSuffix {
		t.Fatalf("cache holds %q, want %s%s", entries, cold.Generation, cacheSuffix)
	}
	if fi, err := os.Stat(filepath.Join(cache, entries[0])); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("cache entry: %v, %v; want mode 0600", fi.Mode(), err)
	}
}

func TestCacheDamagedEntry(t *testing.T) {
	tests := []struct {
		name    string
		damage  func([]byte) []byte
		wantErr string // in CacheError; "" when the entry is merely not used
	}{
		{"flipped byte in the rules", func(b []byte) []byte { b[len(b)-100] ^= 0xff; return b }, "checksum"},
		{"truncated rules", func(b []byte) []byte { return b[:len(b)-10] }, "the header says"},
		{"trailing data", func(b []byte) []byte { return append(b, 0) }, "the header says"},
		{"truncated header", func(b []byte) []byte { return b[:len(cacheMagic)+20] }, "reading header"},
		{"bad magic", func(b []byte) []byte { b[0] = 'F'; return b }, "not a fanguard rules cache"},
		{"bad header", func(b []byte) []byte { return bytes.Replace(b, []byte(`{"format"`), []byte(`["format"`), 1) }, "decoding header"},
		{"other generation in the header", func(b []byte) []byte {
			i := bytes.Index(b, []byte(`"generation":"`)) + len(`"generation":"`)
			b[i] ^= 1
			return b
		}, "generation"},
		{"other rule count", func(b []byte) []byte { return bytes.Replace(b, []byte(`"rules":`), []byte(`"rules":1`), 1) }, "the header says"},
		{"other format", func(b []byte) []byte {
			return bytes.Replace(b, []byte(fmt.Sprintf(`"format":%d`, cacheFormat)), []byte(`"format":9`), 1)
		}, ""},
		{"other libyara", func(b []byte) []byte {
			return bytes.Replace(b, []byte(`"yara":"`+yaraVersion()), []byte(`"yara":"0.0.1`), 1)
		}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			writeTree(t, dir, map[string]string{"a.yar": rule("a"), "b.yar": rule("b", `action = "deny"`)})
			cache := filepath.Join(t.TempDir(), "cache")
			opts := LoadOptions{Dirs: []string{dir}, CacheDir: cache}
			cold := mustLoadOpts(t, opts)
			p := filepath.Join(cache, cold.Generation+cacheSuffix)
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, tt.damage(b), 0o600); err != nil {
				t.Fatal(err)
			}

			rs := mustLoadOpts(t, opts)
			if rs.FromCache {
				t.Fatal("damaged entry used")
			}
			switch {
			case tt.wantErr == "" && rs.CacheError != nil:
				t.Errorf("CacheError = %v, want nil", rs.CacheError)
			case tt.wantErr != "" && (rs.CacheError == nil || !strings.Contains(rs.CacheError.Error(), tt.wantErr) || !strings.Contains(rs.CacheError.Error(), p)):
				t.Errorf("CacheError = %v, want it to name %s and say %q", rs.CacheError, p, tt.wantErr)
			}
			if diff := cmp.Diff(cold, rs, sameRuleset...); diff != "" {
				t.Errorf("Ruleset after the fallback differs (-cold +fallback):\n%s", diff)
			}
			// The fallback rewrote the entry.
			if again := mustLoadOpts(t, opts); !again.FromCache || again.CacheError != nil {
				t.Errorf("after the rewrite: FromCache = %v, CacheError = %v; want true, nil", again.FromCache, again.CacheError)
			}
		})
	}
}

func TestCacheUnusable(t *testing.T) {
	tests := []struct {
		name    string
		setup   func(t *testing.T, dir string) string // returns CacheDir
		wantErr string
	}{
		{"under a regular file", func(t *testing.T, dir string) string {
			writeTree(t, dir, map[string]string{"file": "x"})
			return filepath.Join(dir, "file", "cache")
		}, "creating cache directory"},
		{"a regular file", func(t *testing.T, dir string) string {
			writeTree(t, dir, map[string]string{"file": "x"})
			return filepath.Join(dir, "file")
		}, "not a directory"},
		{"writable by the group", func(t *testing.T, dir string) string {
			p := filepath.Join(dir, "cache")
			if err := os.Mkdir(p, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(p, 0o770); err != nil {
				t.Fatal(err)
			}
			return p
		}, "writable by group or others"},
		{"owned by someone else", func(t *testing.T, dir string) string {
			if os.Geteuid() != 0 {
				t.Skip("needs root to give the directory away")
			}
			p := filepath.Join(dir, "cache")
			if err := os.Mkdir(p, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.Chown(p, 65534, 65534); err != nil {
				t.Fatal(err)
			}
			return p
		}, "owned by uid 65534"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rules := t.TempDir()
			writeTree(t, rules, map[string]string{"a.yar": rule("a")})
			cache := tt.setup(t, t.TempDir())
			for range 2 {
				rs, err := Load(LoadOptions{Dirs: []string{rules}, CacheDir: cache})
				if err != nil {
					t.Fatalf("Load() error = %v, want the rules loaded without the cache", err)
				}
				if rs.FromCache || rs.CacheError == nil || !strings.Contains(rs.CacheError.Error(), tt.wantErr) {
					t.Errorf("FromCache = %v, CacheError = %v; want false and %q", rs.FromCache, rs.CacheError, tt.wantErr)
				}
				if rs.Count != 1 {
					t.Errorf("Count = %d, want 1", rs.Count)
				}
			}
		})
	}
}

func TestCachePrune(t *testing.T) {
	rules := t.TempDir()
	cache := filepath.Join(t.TempDir(), "cache")
	if err := os.Mkdir(cache, 0o700); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-2 * cacheTmpMaxAge)
	writeTree(t, cache, map[string]string{"README": "not ours", cacheTmpPrefix + "old": "x", cacheTmpPrefix + "new": "x"})
	if err := os.Chtimes(filepath.Join(cache, cacheTmpPrefix+"old"), old, old); err != nil {
		t.Fatal(err)
	}
	var gens []string
	for i := range 5 {
		writeTree(t, rules, map[string]string{"a.yar": rule("a" + strings.Repeat("x", i))})
		rs := mustLoadOpts(t, LoadOptions{Dirs: []string{rules}, CacheDir: cache})
		gens = append(gens, rs.Generation)
		// Distinct modification times, whatever the file system's
		// granularity.
		at := time.Now().Add(time.Duration(i-10) * time.Minute)
		if err := os.Chtimes(filepath.Join(cache, rs.Generation+cacheSuffix), at, at); err != nil {
			t.Fatal(err)
		}
	}
	want := []string{cacheTmpPrefix + "new", "README"}
	for _, g := range gens[2:] {
		want = append(want, g+cacheSuffix)
	}
	slices.Sort(want)
	if diff := cmp.Diff(want, cacheFiles(t, cache)); diff != "" {
		t.Errorf("cache directory mismatch (-want +got):\n%s", diff)
	}

	// A hit makes an entry the newest: the next store keeps it.
	writeTree(t, rules, map[string]string{"a.yar": rule("a" + strings.Repeat("x", 2))})
	if rs := mustLoadOpts(t, LoadOptions{Dirs: []string{rules}, CacheDir: cache}); !rs.FromCache {
		t.Fatal("entry of the third generation not used")
	}
	writeTree(t, rules, map[string]string{"a.yar": rule("new")})
	newest := mustLoadOpts(t, LoadOptions{Dirs: []string{rules}, CacheDir: cache})
	got := cacheFiles(t, cache)
	for _, keep := range []string{gens[2], newest.Generation} {
		if !slices.Contains(got, keep+cacheSuffix) {
			t.Errorf("cache lost %s: holds %q", keep[:16], got)
		}
	}
	if n := len(got) - 2; n != cacheKeep {
		t.Errorf("cache holds %d entries, want %d: %q", n, cacheKeep, got)
	}
}

// TestCacheNotForNoRules checks that a Load that ends in ErrNoRules
// caches nothing and returns a Ruleset for the report that cannot scan.
func TestCacheNotForNoRules(t *testing.T) {
	rules := t.TempDir()
	writeTree(t, rules, map[string]string{"a.yar": "rule a {\n condition: nope\n}\n", "b.yar": ""})
	cache := filepath.Join(t.TempDir(), "cache")
	rs, err := Load(LoadOptions{Dirs: []string{rules}, CacheDir: cache})
	if !errors.Is(err, ErrNoRules) || rs == nil {
		t.Fatalf("Load() = %v, %v; want a Ruleset and ErrNoRules", rs, err)
	}
	if len(rs.Broken) != 1 || rs.Broken[0].Line != 2 || len(rs.Masked) != 1 || rs.Generation == "" {
		t.Errorf("Broken %v, Masked %v, Generation %q; want a:2, b.yar and a generation", rs.Broken, rs.Masked, rs.Generation)
	}
	if _, err := rs.NewScanner(0); !errors.Is(err, ErrNoRules) {
		t.Errorf("NewScanner() error = %v, want ErrNoRules", err)
	}
	if got := cacheFiles(t, cache); len(got) != 0 {
		t.Errorf("cache holds %q, want nothing", got)
	}
}

// cacheFiles lists the names in the cache directory, sorted.
func cacheFiles(t testing.TB, dir string) []string {
	t.Helper()
	des, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, de := range des {
		names = append(names, de.Name())
	}
	return names
}

// TestReversingLabsCache measures loading the ReversingLabs set: compiling
// (without and with writing the cache) and reading it from the cache.
func TestReversingLabsCache(t *testing.T) {
	dirs := reversingLabsDirs(t)
	cache := filepath.Join(t.TempDir(), "cache")
	const runs = 3
	var compileOnly, cold, warm []time.Duration
	var plain *Ruleset
	for range runs {
		plain = mustLoadOpts(t, LoadOptions{Dirs: dirs})
		compileOnly = append(compileOnly, plain.LoadTime)
	}
	for range runs {
		if err := os.RemoveAll(cache); err != nil {
			t.Fatal(err)
		}
		rs := mustLoadOpts(t, LoadOptions{Dirs: dirs, CacheDir: cache})
		if rs.FromCache || rs.CacheError != nil {
			t.Fatalf("cold: FromCache = %v, CacheError = %v", rs.FromCache, rs.CacheError)
		}
		cold = append(cold, rs.LoadTime)
	}
	for range runs {
		rs := mustLoadOpts(t, LoadOptions{Dirs: dirs, CacheDir: cache})
		if !rs.FromCache || rs.CacheError != nil {
			t.Fatalf("warm: FromCache = %v, CacheError = %v", rs.FromCache, rs.CacheError)
		}
		if diff := cmp.Diff(plain, rs, sameRuleset...); diff != "" {
			t.Fatalf("warm Ruleset differs (-compiled +cached):\n%s", diff)
		}
		warm = append(warm, rs.LoadTime)
	}
	fi, err := os.Stat(filepath.Join(cache, plain.Generation+cacheSuffix))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("ReversingLabs: %d rules, %d files, generation %s, cache entry %d KiB; best of %d: compile %v, compile and write the cache %v, read from the cache %v",
		plain.Count, len(plain.Files), plain.ShortGeneration(), fi.Size()>>10, runs,
		slices.Min(compileOnly).Round(time.Millisecond), slices.Min(cold).Round(time.Millisecond), slices.Min(warm).Round(time.Millisecond))
}
