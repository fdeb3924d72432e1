package scanner

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fanguard/fanguard/policy"
	"github.com/google/go-cmp/cmp"
)

func TestBrokenFileReported(t *testing.T) {
	tests := []struct {
		name     string
		source   string
		wantLine int
		wantMsg  string
	}{
		{
			name:     "syntax error",
			source:   "rule ok_in_b { condition: true }\n\nrule bad {\n  condition: true and\n}\n",
			wantLine: 5,
			wantMsg:  "syntax error",
		},
		{
			name:     "undefined identifier",
			source:   "rule x {\n  condition:\n    no_such_thing\n}\n",
			wantLine: 3,
			wantMsg:  `undefined identifier "no_such_thing"`,
		},
		{
			name:     "unknown module",
			source:   "import \"no_such_module\"\nrule x { condition: true }\n",
			wantLine: 1,
			wantMsg:  "no_such_module",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			writeTree(t, dir, map[string]string{"a.yar": rule("a"), "b.yar": tt.source, "c.yar": rule("c")})
			rs := mustLoad(t, dir)
			if diff := cmp.Diff([]string{"a.yar:a", "c.yar:c"}, ruleNames(rs)); diff != "" {
				t.Errorf("rules mismatch (-want +got):\n%s", diff)
			}
			if len(rs.Broken) != 1 {
				t.Fatalf("Broken = %v, want one entry", rs.Broken)
			}
			b := rs.Broken[0]
			if b.Path != filepath.Join(dir, "b.yar") || b.Line != tt.wantLine || !strings.Contains(b.Msg, tt.wantMsg) {
				t.Errorf("Broken[0] = %q, want %s:%d: ...%s...", b.Error(), filepath.Join(dir, "b.yar"), tt.wantLine, tt.wantMsg)
			}
		})
	}
}

func TestNoRules(t *testing.T) {
	tests := []struct {
		name    string
		files   map[string]string
		wantMsg string // in the error
	}{
		{name: "empty directory", files: map[string]string{}},
		{name: "only other files", files: map[string]string{"README": "x"}},
		{name: "all masked", files: map[string]string{"a.yar": "", "b.yar": toDevNull}},
		{name: "only comments", files: map[string]string{"a.yar": "// nothing here\n"}},
		{
			name:    "all broken",
			files:   map[string]string{"a.yar": "rule {", "b.yar": "rule b { condition: nope }"},
			wantMsg: "b.yar:1:",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			writeTree(t, dir, tt.files)
			rs, err := Load(LoadOptions{Dirs: []string{dir}})
			if !errors.Is(err, ErrNoRules) {
				t.Fatalf("Load() = %v, %v; want an error wrapping ErrNoRules", rs, err)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("error %q does not name %q", err, tt.wantMsg)
			}
		})
	}
	t.Run("no directories", func(t *testing.T) {
		_, err := Load(LoadOptions{Dirs: []string{filepath.Join(t.TempDir(), "missing")}})
		if !errors.Is(err, ErrNoRules) {
			t.Fatalf("Load() error = %v, want ErrNoRules", err)
		}
	})
}

func TestUnreadableDirectoryFails(t *testing.T) {
	f := filepath.Join(t.TempDir(), "file")
	writeTree(t, filepath.Dir(f), map[string]string{"file": "x"})
	_, err := Load(LoadOptions{Dirs: []string{f}})
	if err == nil || errors.Is(err, ErrNoRules) || !strings.Contains(err.Error(), f) {
		t.Fatalf("Load(non-directory) error = %v, want an error naming %s", err, f)
	}
}

func TestExternalVariables(t *testing.T) {
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{"ext.yar": `
rule ext_exe { condition: extension == ".exe" }
rule name_exe { condition: filename == "Setup.EXE" }
rule in_tmp { condition: filepath == "/tmp/dl" }
rule is_pe { condition: filetype == "EXE" }
rule by_alice { condition: owner == "alice" }
rule never { condition: filename == "" and filesize > 0 }
`})
	rs := mustLoad(t, dir)
	s := mustScanner(t, rs)
	tests := []struct {
		name string
		path string
		buf  string
		who  string
		want []string
	}{
		{
			name: "all set",
			path: "/tmp/dl/Setup.EXE", buf: "MZ\x90\x00", who: "alice",
			want: []string{"ext.yar:by_alice", "ext.yar:ext_exe", "ext.yar:in_tmp", "ext.yar:is_pe", "ext.yar:name_exe"},
		},
		{name: "none set", path: "/home/bob/notes.txt", buf: "hello", who: "bob"},
		{name: "only extension", path: "/x/y.Exe", buf: "hello", want: []string{"ext.yar:ext_exe"}},
		{name: "all set again", path: "/tmp/dl/Setup.EXE", buf: "MZ", who: "alice",
			want: []string{"ext.yar:by_alice", "ext.yar:ext_exe", "ext.yar:in_tmp", "ext.yar:is_pe", "ext.yar:name_exe"}},
		{name: "empty vars", buf: "x", want: []string{"ext.yar:never"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ms, err := s.Scan([]byte(tt.buf), VarsFor(tt.path, []byte(tt.buf), tt.who))
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, matchNames(ms)); diff != "" {
				t.Errorf("matches mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestActionMetadata(t *testing.T) {
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{"act.yar": strings.Join([]string{
		rule("no_action", `severity = "high"`, "score = 75", "internal = true"),
		rule("audit", `action = "audit"`),
		rule("deny", `action = "DENY"`),
		rule("block", `action = "Block"`),
		rule("quarantine", `action = " quarantine "`),
		rule("bogus", `action = "explode"`),
		rule("number", `action = 3`),
		rule("first_wins", `action = "audit"`, `action = "deny"`),
	}, "\n")})
	rs := mustLoad(t, dir)
	path := filepath.Join(dir, "act.yar")
	ms, err := mustScanner(t, rs).Scan([]byte("x"), Vars{})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]policy.Action{}
	for _, m := range ms {
		got[m.Rule] = m.Action
		if m.File != path || m.Namespace != "act.yar" {
			t.Errorf("match %s: File, Namespace = %q, %q; want %q, act.yar", m.Rule, m.File, m.Namespace, path)
		}
		if m.Rule == "no_action" {
			want := map[string]string{"severity": "high", "score": "75", "internal": "true"}
			if diff := cmp.Diff(want, m.Meta); diff != "" {
				t.Errorf("meta mismatch (-want +got):\n%s", diff)
			}
		}
	}
	want := map[string]policy.Action{
		"no_action": policy.ActionDefault, "audit": policy.ActionAudit, "deny": policy.ActionDeny,
		"block": policy.ActionDeny, "quarantine": policy.ActionQuarantine, "bogus": policy.ActionDefault,
		"number": policy.ActionDefault, "first_wins": policy.ActionAudit,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("actions mismatch (-want +got):\n%s", diff)
	}
	var warned []string
	for _, w := range rs.Warnings {
		if w.Path != path {
			t.Errorf("warning %q: want path %s", w.Error(), path)
		}
		warned = append(warned, w.Msg)
	}
	if len(warned) != 2 || !strings.Contains(warned[0]+warned[1], "explode") {
		t.Errorf("warnings = %q, want two (bogus and number)", warned)
	}
}

func TestIncludeConfined(t *testing.T) {
	root := t.TempDir()
	rules, other := filepath.Join(root, "rules"), filepath.Join(root, "other")
	writeTree(t, root, map[string]string{
		"outside.inc":           rule("outside"),
		"rules/common.inc":      rule("common"),
		"rules/lib/one.inc":     "include \"two.inc\"\n" + rule("one"),
		"rules/lib/two.inc":     rule("two"),
		"other/shared.inc":      rule("shared"),
		"rules/sibling.yar":     "include \"common.inc\"\n" + rule("uses_common"),
		"rules/nested.yar":      "include \"lib/one.inc\"\n" + rule("uses_one"),
		"rules/other_dir.yar":   "include \"" + filepath.Join(other, "shared.inc") + "\"\n" + rule("uses_shared"),
		"rules/passwd.yar":      "rule before { condition: true }\ninclude \"/etc/passwd\"\n",
		"rules/dotdot.yar":      "include \"../outside.inc\"\n",
		"rules/via_link.yar":    "include \"link.inc\"\n",
		"rules/missing.yar":     "include \"nope.inc\"\n",
		"rules/lib/escape.inc":  "include \"../../outside.inc\"\n",
		"rules/deep_escape.yar": "include \"lib/escape.inc\"\n",
	})
	if err := os.Symlink(filepath.Join(root, "outside.inc"), filepath.Join(rules, "link.inc")); err != nil {
		t.Fatal(err)
	}
	rs := mustLoad(t, rules, other)

	wantRules := []string{
		"nested.yar:one", "nested.yar:two", "nested.yar:uses_one",
		"other_dir.yar:shared", "other_dir.yar:uses_shared",
		"sibling.yar:common", "sibling.yar:uses_common",
	}
	if diff := cmp.Diff(wantRules, ruleNames(rs)); diff != "" {
		t.Errorf("rules mismatch (-want +got):\n%s", diff)
	}

	type broken struct {
		File string // base name of the rule file left out
		Line int
		Msg  []string // substrings of the message
	}
	want := []broken{
		{"deep_escape.yar", 1, []string{`"../../outside.inc"`, filepath.Join(root, "outside.inc"), "outside the rule directories"}},
		{"dotdot.yar", 1, []string{`"../outside.inc"`, filepath.Join(root, "outside.inc"), "outside the rule directories"}},
		{"missing.yar", 1, []string{`"nope.inc"`, "no such file"}},
		{"passwd.yar", 2, []string{`"/etc/passwd"`, "outside the rule directories"}},
		{"via_link.yar", 1, []string{`"link.inc"`, "outside the rule directories"}},
	}
	var got []broken
	for _, b := range rs.Broken {
		g := broken{File: filepath.Base(b.Path), Line: b.Line}
		if _, after, ok := strings.Cut(b.Msg, "(included from "); ok { // error inside an included file
			from, _, _ := strings.Cut(after, ")")
			g.File = filepath.Base(from)
		}
		for _, w := range want {
			if w.File == g.File {
				for _, s := range w.Msg {
					if strings.Contains(b.Msg, s) {
						g.Msg = append(g.Msg, s)
					}
				}
			}
		}
		got = append(got, g)
		t.Logf("broken: %v", b)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("broken mismatch (-want +got):\n%s", diff)
	}
}

// TestIncludeInFeed checks includes in feeds: directories linked at the
// top level of a rule directory, whose targets may lie outside it. A
// feed's file may include files of the same feed, and nothing outside
// the rule directories and the targets of their top-level links; the
// compiled-rules cache checks those includes again when a new version of
// the feed is linked in.
func TestIncludeInFeed(t *testing.T) {
	root, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	feeds, cache := filepath.Join(root, "feeds.d"), filepath.Join(root, "cache")
	writeTree(t, root, map[string]string{
		"store/secret.inc":                          rule("secret"),
		"store/forge/v1/packages/core/x.yar":        "include \"other.inc\"\n" + rule("x"),
		"store/forge/v1/packages/core/other.inc":    rule("other"),
		"store/forge/v1/packages/core/up.yar":       "include \"../../../../secret.inc\"\n",
		"store/forge/v2/packages/core/x.yar":        "include \"other.inc\"\n" + rule("x"),
		"store/forge/v2/packages/core/other.inc":    rule("other2"),
		"store/forge/v2/packages/core/up.yar":       "include \"../../../../secret.inc\"\n",
		"feeds.d/forge":                             linkTo + "../store/forge/v1",
		"feeds.d/.store/sig/v1/yara/apt.yar":        "include \"lib/common.inc\"\n" + rule("apt"),
		"feeds.d/.store/sig/v1/yara/lib/common.inc": rule("common"),
		"feeds.d/sig":                               linkTo + ".store/sig/v1",
		"feeds.d/local.yar":                         "include \"forge/packages/core/other.inc\"\n" + rule("local"),
	})
	tests := []struct {
		name       string
		version    string // the target of feeds.d/forge
		wantRules  []string
		wantCached bool
	}{
		{
			name:    "first load compiles",
			version: "../store/forge/v1",
			wantRules: []string{
				"forge/packages/core/x.yar:other", "forge/packages/core/x.yar:x",
				"local.yar:local", "local.yar:other", "sig/yara/apt.yar:apt", "sig/yara/apt.yar:common",
			},
		},
		{
			name:    "the same rules come from the cache",
			version: "../store/forge/v1",
			wantRules: []string{
				"forge/packages/core/x.yar:other", "forge/packages/core/x.yar:x",
				"local.yar:local", "local.yar:other", "sig/yara/apt.yar:apt", "sig/yara/apt.yar:common",
			},
			wantCached: true,
		},
		{
			name:    "a new version's includes are read again",
			version: "../store/forge/v2",
			wantRules: []string{
				"forge/packages/core/x.yar:other2", "forge/packages/core/x.yar:x",
				"local.yar:local", "local.yar:other2", "sig/yara/apt.yar:apt", "sig/yara/apt.yar:common",
			},
		},
	}
	var gens []string
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Swap the feed as an installer does: a new link renamed over the old.
			tmp := filepath.Join(feeds, ".forge.new")
			if err := os.Symlink(tt.version, tmp); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(tmp, filepath.Join(feeds, "forge")); err != nil {
				t.Fatal(err)
			}
			rs := mustLoadOpts(t, LoadOptions{Dirs: []string{feeds}, CacheDir: cache})
			if diff := cmp.Diff(tt.wantRules, ruleNames(rs)); diff != "" {
				t.Errorf("rules mismatch (-want +got):\n%s", diff)
			}
			if rs.FromCache != tt.wantCached || rs.CacheError != nil {
				t.Errorf("FromCache = %v (cache error %v), want %v", rs.FromCache, rs.CacheError, tt.wantCached)
			}
			ms, err := mustScanner(t, rs).Scan([]byte("x"), Vars{})
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.wantRules, matchNames(ms)); diff != "" {
				t.Errorf("matches mismatch (-want +got):\n%s", diff)
			}
			// Only the include escaping its feed is refused.
			var broken []string
			for _, b := range rs.Broken {
				broken = append(broken, b.Error())
			}
			want := filepath.Join(root, "store", "forge", filepath.Base(tt.version), "packages/core/up.yar") + ":1: " +
				`include "../../../../secret.inc": ` + filepath.Join(root, "store/secret.inc") + " is outside the rule directories"
			if len(broken) != 1 || !strings.HasPrefix(broken[0], want) {
				t.Errorf("broken = %q, want one starting %q", broken, want)
			}
			gens = append(gens, rs.Generation)
		})
	}
	if len(gens) == 3 && (gens[0] != gens[1] || gens[1] == gens[2]) {
		t.Errorf("generations %q: want the first two equal and the third different", gens)
	}
}

func TestShippedRules(t *testing.T) {
	rs := mustLoad(t, shippedRules)
	if len(rs.Broken) > 0 || len(rs.Warnings) > 0 {
		t.Errorf("shipped rules: broken %v, warnings %v", rs.Broken, rs.Warnings)
	}
	var names []string
	for _, f := range rs.Files {
		names = append(names, f.Name)
	}
	if !strings.Contains(strings.Join(names, " "), "eicar.yar") {
		t.Errorf("shipped files %q lack eicar.yar", names)
	}
}

// reversingLabsDir finds the ReversingLabs rule set, read in place.
func reversingLabsDir() string {
	for _, d := range []string{"/work/shared/rules/reversinglabs/yara", "../../shared/rules/reversinglabs/yara"} {
		if fi, err := os.Stat(d); err == nil && fi.IsDir() {
			return d
		}
	}
	return ""
}

// reversingLabsDirs returns the category directories of the ReversingLabs
// set, each a rule directory, or skips the test when the set is absent.
func reversingLabsDirs(t *testing.T) []string {
	t.Helper()
	root := reversingLabsDir()
	if root == "" {
		t.Skip("ReversingLabs rules not found")
	}
	des, err := os.ReadDir(root)
	if err != nil {
		t.Fatal(err)
	}
	var dirs []string
	for _, de := range des {
		if de.IsDir() {
			dirs = append(dirs, filepath.Join(root, de.Name()))
		}
	}
	return dirs
}

// TestReversingLabsRules loads the ReversingLabs rule set, whose files sit
// in category subdirectories: each is passed as a rule directory.
func TestReversingLabsRules(t *testing.T) {
	dirs := reversingLabsDirs(t)
	start := time.Now()
	rs := mustLoad(t, dirs...)
	took := time.Since(start)
	t.Logf("ReversingLabs: %d rules from %d files in %d directories, loaded in %v; %d broken, %d warnings",
		rs.Count, len(rs.Files), len(dirs), took.Round(time.Millisecond), len(rs.Broken), len(rs.Warnings))
	for _, b := range rs.Broken {
		t.Logf("broken: %v", b)
	}
	if rs.Count == 0 {
		t.Error("no rules loaded")
	}
	s := mustScanner(t, rs)
	if ms, err := s.Scan(make([]byte, 64<<10), Vars{}); err != nil || ms != nil {
		t.Errorf("scanning zeros: %v, %v; want clean", matchNames(ms), err)
	}
}

// TestCompileIsolatesBroken checks compile's fallback: the files are first
// compiled together, and when one fails, the files broken on their own are
// found alone and left out with file and line, and the rest is rebuilt in
// a fresh compiler.
func TestCompileIsolatesBroken(t *testing.T) {
	tests := []struct {
		name       string
		files      map[string]string
		wantGood   []string
		wantBroken []string // base:line
		wantRules  int
	}{
		{
			name:      "none broken",
			files:     map[string]string{"a.yar": rule("a"), "b.yar": rule("b") + rule("b2")},
			wantGood:  []string{"a.yar", "b.yar"},
			wantRules: 3,
		},
		{
			name:       "two broken among good ones",
			files:      map[string]string{"a.yar": rule("a"), "b.yar": "rule b {\n condition: nope\n}\n", "c.yar": rule("c"), "d.yar": "rule {"},
			wantGood:   []string{"a.yar", "c.yar"},
			wantBroken: []string{"b.yar:2", "d.yar:1"},
			wantRules:  2,
		},
		{
			name:       "first broken",
			files:      map[string]string{"a.yar": "rule a {\n\n condition: nope\n}\n", "b.yar": rule("b")},
			wantGood:   []string{"b.yar"},
			wantBroken: []string{"a.yar:3"},
			wantRules:  1,
		},
		{
			name:       "all broken",
			files:      map[string]string{"a.yar": "rule {", "b.yar": "rule b {\n condition: nope\n}\n"},
			wantBroken: []string{"a.yar:1", "b.yar:2"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			writeTree(t, dir, tt.files)
			var inputs []input
			for _, name := range slices.Sorted(maps.Keys(tt.files)) {
				inputs = append(inputs, readInput(entry{Name: name, Path: filepath.Join(dir, name), Kind: kindRule}))
			}
			c, err := compile(inputs, includeRoots([]string{dir}))
			if err != nil {
				t.Fatalf("compile() error = %v", err)
			}
			var good, brokenAt []string
			for i, r := range c.results {
				if r.Err != nil {
					brokenAt = append(brokenAt, fmt.Sprintf("%s:%d", filepath.Base(r.Err.Path), r.Err.Line))
				} else {
					good = append(good, inputs[i].Name)
				}
			}
			if diff := cmp.Diff(tt.wantGood, good); diff != "" {
				t.Errorf("good files mismatch (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantBroken, brokenAt); diff != "" {
				t.Errorf("broken files mismatch (-want +got):\n%s", diff)
			}
			n := 0
			if c.rules != nil {
				n = len(c.rules.GetRules())
			}
			if n != tt.wantRules {
				t.Errorf("rule set holds %d rules, want %d", n, tt.wantRules)
			}
		})
	}
}
