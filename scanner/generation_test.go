package scanner

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// generationTree is the rule tree the generation tests start from: dirs 0
// and 1, with an include, an override, a mask and a broken file.
func generationTree() map[string]string {
	return map[string]string{
		"0/a.yar":          "include \"inc/common.inc\"\n" + rule("a"),
		"0/inc/common.inc": rule("common"),
		"0/b.yar":          rule("b"),
		"0/c.yar":          rule("c_usr"),
		"0/m.yar":          rule("m"),
		"0/x.yar":          "rule x {\n condition: nope\n}\n",
		"1/c.yar":          rule("c_etc"),
		"1/m.yar":          toDevNull,
	}
}

func TestGeneration(t *testing.T) {
	tests := []struct {
		name    string
		change  func(t *testing.T, root string)
		changed bool // whether the generation must change
	}{
		{"nothing", func(*testing.T, string) {}, false},
		{"mtime only", func(t *testing.T, root string) {
			future := time.Now().Add(time.Hour)
			if err := os.Chtimes(filepath.Join(root, "0/b.yar"), future, future); err != nil {
				t.Fatal(err)
			}
		}, false},
		{"same content rewritten", func(t *testing.T, root string) { rewrite(t, root, "0/b.yar", rule("b")) }, false},
		{"other files ignored", func(t *testing.T, root string) { rewrite(t, root, "1/README", "x") }, false},
		{"content", func(t *testing.T, root string) { rewrite(t, root, "0/b.yar", rule("b")+rule("b2")) }, true},
		{"included file", func(t *testing.T, root string) { rewrite(t, root, "0/inc/common.inc", rule("common2")) }, true},
		{"broken file", func(t *testing.T, root string) { rewrite(t, root, "0/x.yar", "rule x {\n\n condition: nope\n}\n") }, true},
		{"file added", func(t *testing.T, root string) { rewrite(t, root, "1/d.yar", rule("d")) }, true},
		{"file removed", func(t *testing.T, root string) { remove(t, root, "0/b.yar") }, true},
		{"masked by /dev/null", func(t *testing.T, root string) { writeTree(t, root, map[string]string{"1/b.yar": toDevNull}) }, true},
		{"masked by empty file", func(t *testing.T, root string) { rewrite(t, root, "1/b.yar", "") }, true},
		{"mask of a missing name", func(t *testing.T, root string) { rewrite(t, root, "1/none.yar", "") }, true},
		{"unmasked", func(t *testing.T, root string) { remove(t, root, "1/m.yar") }, true},
		{"override removed", func(t *testing.T, root string) { remove(t, root, "1/c.yar") }, true},
		{"overridden by the same content", func(t *testing.T, root string) { rewrite(t, root, "1/b.yar", rule("b")) }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			writeTree(t, root, generationTree())
			dirs := []string{filepath.Join(root, "0"), filepath.Join(root, "1")}
			cache := filepath.Join(t.TempDir(), "cache")
			before := mustLoadOpts(t, LoadOptions{Dirs: dirs, CacheDir: cache})
			if !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(before.Generation) {
				t.Fatalf("Generation = %q, want 64 hex digits", before.Generation)
			}
			if got := before.ShortGeneration(); got != before.Generation[:16] {
				t.Errorf("ShortGeneration() = %q, want %q", got, before.Generation[:16])
			}
			tt.change(t, root)
			after := mustLoadOpts(t, LoadOptions{Dirs: dirs, CacheDir: cache})
			if changed := after.Generation != before.Generation; changed != tt.changed {
				t.Errorf("generation changed = %v, want %v (%s, then %s)", changed, tt.changed, before.ShortGeneration(), after.ShortGeneration())
			}
			// The cache is keyed by the generation: used exactly when
			// nothing changed.
			if after.FromCache == tt.changed || after.CacheError != nil {
				t.Errorf("FromCache = %v, CacheError = %v; want %v, nil", after.FromCache, after.CacheError, !tt.changed)
			}
			// With or without the cache, the same generation.
			if plain := mustLoadOpts(t, LoadOptions{Dirs: dirs}); plain.Generation != after.Generation {
				t.Errorf("generation without the cache %s, with it %s", plain.ShortGeneration(), after.ShortGeneration())
			}
		})
	}
}

// TestGenerationEncoding checks that the digested text cannot be forged by
// names that look like separators.
func TestGenerationEncoding(t *testing.T) {
	in := func(name, path, sum string) input { return input{entry: entry{Name: name, Path: path}, sum: sum} }
	a := generation("4.2.3", []input{in("a.yar", "/r/a.yar", "00")}, [][]dep{{{Path: "/r/i", State: "sha256:11"}}}, nil)
	b := generation("4.2.3", []input{in("a.yar", "/r/a.yar", "00")}, nil, []string{"i"})
	c := generation("4.2.3", []input{in("a.yar\" \"/r/a.yar", "", "00")}, nil, nil)
	d := generation("4.2.4", []input{in("a.yar", "/r/a.yar", "00")}, [][]dep{{{Path: "/r/i", State: "sha256:11"}}}, nil)
	seen := map[string]string{}
	for name, g := range map[string]string{"a": a, "b": b, "c": c, "d": d} {
		if other, dup := seen[g]; dup {
			t.Errorf("generations %s and %s are equal", name, other)
		}
		seen[g] = name
	}
}

// TestYaraVersion checks the version compiled in against the installed
// libyara's, when pkg-config can tell.
func TestYaraVersion(t *testing.T) {
	got := yaraVersion()
	if !regexp.MustCompile(`^\d+\.\d+\.\d+$`).MatchString(got) {
		t.Fatalf("yaraVersion() = %q, want MAJOR.MINOR.MICRO", got)
	}
	out, err := exec.Command("pkg-config", "--modversion", "yara").Output()
	if err != nil {
		t.Skipf("pkg-config cannot tell the libyara version: %v", err)
	}
	if want := strings.TrimSpace(string(out)); got != want {
		t.Errorf("yaraVersion() = %q, pkg-config says %q", got, want)
	}
}

func TestShadows(t *testing.T) {
	rule := func(dir, name string) entry { return entry{Name: name, Path: dir + "/" + name, Kind: kindRule} }
	with := func(e entry, k entryKind) entry { e.Kind = k; return e }
	tests := []struct {
		name     string
		listing  []entry
		wantOver []Override
		wantMask []Mask
	}{
		{name: "empty"},
		{name: "no overlap", listing: []entry{rule("/usr", "a.yar"), rule("/etc", "b.yar")}},
		{
			name:     "override",
			listing:  []entry{rule("/usr", "a.yar"), rule("/usr", "b.yar"), rule("/etc", "a.yar")},
			wantOver: []Override{{Name: "a.yar", Path: "/usr/a.yar", By: "/etc/a.yar"}},
		},
		{
			name:     "three directories",
			listing:  []entry{rule("/1", "a.yar"), rule("/2", "a.yar"), rule("/3", "a.yar")},
			wantOver: []Override{{"a.yar", "/1/a.yar", "/3/a.yar"}, {"a.yar", "/2/a.yar", "/3/a.yar"}},
		},
		{
			name:     "masks",
			listing:  []entry{rule("/usr", "b.yar"), rule("/usr", "a.yar"), with(rule("/etc", "a.yar"), kindNull), with(rule("/etc", "c.yar"), kindEmpty)},
			wantOver: []Override{{"a.yar", "/usr/a.yar", "/etc/a.yar"}},
			wantMask: []Mask{{"a.yar", "/etc/a.yar", true}, {"c.yar", "/etc/c.yar", false}},
		},
		{
			name:     "unmasked",
			listing:  []entry{with(rule("/usr", "a.yar"), kindNull), rule("/etc", "a.yar")},
			wantOver: []Override{{"a.yar", "/usr/a.yar", "/etc/a.yar"}},
		},
		{
			name:    "other names ignored",
			listing: []entry{rule("/usr", "README"), rule("/etc", "README"), with(rule("/etc", "x.txt"), kindEmpty)},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			over, masks := shadows(tt.listing)
			if diff := cmp.Diff(tt.wantOver, over); diff != "" {
				t.Errorf("overrides mismatch (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantMask, masks); diff != "" {
				t.Errorf("masks mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// TestLoadReportsShadows checks Ruleset.Overridden and Masks on real
// directories.
func TestLoadReportsShadows(t *testing.T) {
	root := t.TempDir()
	writeTree(t, root, generationTree())
	writeTree(t, root, map[string]string{"1/b.yar": ""})
	rs := mustLoad(t, filepath.Join(root, "0"), filepath.Join(root, "1"))
	p := func(rel string) string { return filepath.Join(root, rel) }
	wantOver := []Override{
		{"b.yar", p("0/b.yar"), p("1/b.yar")},
		{"c.yar", p("0/c.yar"), p("1/c.yar")},
		{"m.yar", p("0/m.yar"), p("1/m.yar")},
	}
	wantMask := []Mask{{"b.yar", p("1/b.yar"), false}, {"m.yar", p("1/m.yar"), true}}
	if diff := cmp.Diff(wantOver, rs.Overridden); diff != "" {
		t.Errorf("Overridden mismatch (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(wantMask, rs.Masks); diff != "" {
		t.Errorf("Masks mismatch (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"b.yar", "m.yar"}, rs.Masked); diff != "" {
		t.Errorf("Masked mismatch (-want +got):\n%s", diff)
	}
}

// mustLoadOpts loads with opts and fails the test on error.
func mustLoadOpts(t testing.TB, opts LoadOptions) *Ruleset {
	t.Helper()
	rs, err := Load(opts)
	if err != nil {
		t.Fatalf("Load(%+v): %v", opts, err)
	}
	return rs
}

// rewrite replaces the file root/rel with content, through a new file
// renamed into place as editors do.
func rewrite(t testing.TB, root, rel, content string) {
	t.Helper()
	p := filepath.Join(root, rel)
	tmp := p + ".new"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, p); err != nil {
		t.Fatal(err)
	}
}

// remove removes root/rel.
func remove(t testing.TB, root, rel string) {
	t.Helper()
	if err := os.Remove(filepath.Join(root, rel)); err != nil {
		t.Fatal(err)
	}
}
