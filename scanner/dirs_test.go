package scanner

import (
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestMerge(t *testing.T) {
	rule := func(dir, name string) entry { return entry{Name: name, Path: dir + "/" + name, Kind: kindRule} }
	with := func(e entry, k entryKind) entry { e.Kind = k; return e }
	tests := []struct {
		name    string
		listing []entry
		want    merged
	}{
		{
			name:    "empty",
			listing: nil,
			want:    merged{},
		},
		{
			name:    "later directory overrides",
			listing: []entry{rule("/usr", "a.yar"), rule("/usr", "b.yar"), rule("/etc", "a.yar")},
			want:    merged{Files: []entry{rule("/etc", "a.yar"), rule("/usr", "b.yar")}},
		},
		{
			name:    "mask by /dev/null",
			listing: []entry{rule("/usr", "a.yar"), rule("/usr", "b.yar"), with(rule("/etc", "a.yar"), kindNull)},
			want:    merged{Files: []entry{rule("/usr", "b.yar")}, Masked: []string{"a.yar"}},
		},
		{
			name:    "mask by empty file",
			listing: []entry{rule("/usr", "a.yara"), with(rule("/etc", "a.yara"), kindEmpty)},
			want:    merged{Masked: []string{"a.yara"}},
		},
		{
			name:    "a later file unmasks",
			listing: []entry{with(rule("/usr", "a.yar"), kindNull), rule("/etc", "a.yar")},
			want:    merged{Files: []entry{rule("/etc", "a.yar")}},
		},
		{
			name:    "lexical order across directories",
			listing: []entry{rule("/usr", "b.yar"), rule("/usr", "Z.yar"), rule("/etc", "a.yara"), rule("/etc", "10-x.yar"), rule("/etc", "9-x.yar")},
			want:    merged{Files: []entry{rule("/etc", "10-x.yar"), rule("/etc", "9-x.yar"), rule("/usr", "Z.yar"), rule("/etc", "a.yara"), rule("/usr", "b.yar")}},
		},
		{
			name: "other names ignored",
			listing: []entry{
				rule("/usr", "README"), rule("/usr", "a.yar.bak"), rule("/usr", ".hidden.yar"), rule("/usr", "a.YAR"),
				rule("/usr", "a.yarx"), rule("/usr", ".yar"), rule("/usr", "ok.yar"),
			},
			want: merged{Files: []entry{rule("/usr", "ok.yar")}},
		},
		{
			name: "other relative paths ignored",
			listing: []entry{
				rule("/usr", "x//y.yar"), rule("/usr", "/y.yar"), rule("/usr", "x/y.yar/"), rule("/usr", ".x/y.yar"),
				rule("/usr", "x/.y/z.yar"), rule("/usr", "x/.z.yar"), rule("/usr", "x/README"), rule("/usr", "x/\x00/y.yar"),
				rule("/usr", strings.Repeat("d/", maxRuleDepth+1)+"y.yar"), rule("/usr", strings.Repeat("d/", maxRuleDepth)+"ok.yar"),
			},
			want: merged{Files: []entry{rule("/usr", strings.Repeat("d/", maxRuleDepth)+"ok.yar")}},
		},
		{
			name: "relative paths merge as names",
			listing: []entry{
				rule("/usr", "a.yar"), rule("/usr", "forge/core/a.yar"), rule("/usr", "forge/core/b.yar"), rule("/usr", "forge/extra/a.yar"),
				rule("/etc", "forge/core/a.yar"), with(rule("/etc", "forge/extra/a.yar"), kindNull), with(rule("/etc", "core/b.yar"), kindEmpty),
			},
			want: merged{
				Files:  []entry{rule("/usr", "a.yar"), rule("/etc", "forge/core/a.yar"), rule("/usr", "forge/core/b.yar")},
				Masked: []string{"core/b.yar", "forge/extra/a.yar"},
			},
		},
		{
			name:    "lexical order of relative paths",
			listing: []entry{rule("/usr", "b/a.yar"), rule("/usr", "b.yar"), rule("/usr", "a/z/z.yar"), rule("/etc", "b-c.yar"), rule("/etc", "a.yar")},
			want:    merged{Files: []entry{rule("/etc", "a.yar"), rule("/usr", "a/z/z.yar"), rule("/etc", "b-c.yar"), rule("/usr", "b.yar"), rule("/usr", "b/a.yar")}},
		},
		{
			name:    "not a regular file replaces and is reported",
			listing: []entry{rule("/usr", "a.yar"), {Name: "a.yar", Path: "/etc/a.yar", Kind: kindOther, Note: "not a regular file"}},
			want:    merged{Bad: []entry{{Name: "a.yar", Path: "/etc/a.yar", Kind: kindOther, Note: "not a regular file"}}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := merge(tt.listing)
			if diff := cmp.Diff(tt.want, got, cmp.AllowUnexported(entry{}, merged{})); diff != "" {
				t.Errorf("merge() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// TestLoadDirs merges real directories and checks what Load made of them.
func TestLoadDirs(t *testing.T) {
	type tree = map[string]string
	tests := []struct {
		name        string
		dirs        []tree // nil: the directory does not exist
		wantFiles   []string
		wantRules   []string
		wantMasked  []string
		wantMissing []int // indexes into dirs
		wantBroken  []string
	}{
		{
			name:      "override by file name",
			dirs:      []tree{{"a.yar": rule("usr_a"), "b.yar": rule("usr_b")}, {"a.yar": rule("etc_a")}},
			wantFiles: []string{"1/a.yar", "0/b.yar"},
			wantRules: []string{"a.yar:etc_a", "b.yar:usr_b"},
		},
		{
			name:       "mask by symlink to /dev/null",
			dirs:       []tree{{"a.yar": rule("usr_a"), "b.yar": rule("usr_b")}, {"a.yar": toDevNull}},
			wantFiles:  []string{"0/b.yar"},
			wantRules:  []string{"b.yar:usr_b"},
			wantMasked: []string{"a.yar"},
		},
		{
			name:       "mask by empty file, also in the same directory",
			dirs:       []tree{{"a.yar": rule("usr_a"), "b.yar": rule("usr_b"), "c.yar": ""}, {"b.yar": ""}},
			wantFiles:  []string{"0/a.yar"},
			wantRules:  []string{"a.yar:usr_a"},
			wantMasked: []string{"b.yar", "c.yar"},
		},
		{
			name:      "lexical order of names",
			dirs:      []tree{{"20-b.yar": rule("b"), "10-c.yara": rule("c")}, {"15-a.yar": rule("a")}},
			wantFiles: []string{"0/10-c.yara", "1/15-a.yar", "0/20-b.yar"},
			wantRules: []string{"10-c.yara:c", "15-a.yar:a", "20-b.yar:b"},
		},
		{
			name:        "missing directory skipped",
			dirs:        []tree{nil, {"a.yar": rule("a")}, nil},
			wantFiles:   []string{"1/a.yar"},
			wantRules:   []string{"a.yar:a"},
			wantMissing: []int{0, 2},
		},
		{
			name: "other files ignored",
			dirs: []tree{{
				"a.yar": rule("a"), "README": "not yara", "a.yar.orig": "not yara", ".hidden.yar": "not yara",
				"b.YAR": "not yara", "sub/c.yar": rule("c"), "x.txt": "not yara", "sub/x.txt": "not yara",
			}},
			wantFiles: []string{"0/a.yar", "0/sub/c.yar"},
			wantRules: []string{"a.yar:a", "sub/c.yar:c"},
		},
		{
			name: "nested files load in lexical order of their relative paths",
			dirs: []tree{
				{"b.yar": rule("b"), "b/a.yar": rule("ba"), "a/z/z.yara": rule("az")},
				{"a.yar": rule("a"), "b-c.yar": rule("bc")},
			},
			wantFiles: []string{"1/a.yar", "0/a/z/z.yara", "1/b-c.yar", "0/b.yar", "0/b/a.yar"},
			wantRules: []string{"a.yar:a", "a/z/z.yara:az", "b-c.yar:bc", "b.yar:b", "b/a.yar:ba"},
		},
		{
			name:      "the same rule name in two subdirectories loads twice",
			dirs:      []tree{{"x/r.yar": rule("same"), "y/r.yar": rule("same")}},
			wantFiles: []string{"0/x/r.yar", "0/y/r.yar"},
			wantRules: []string{"x/r.yar:same", "y/r.yar:same"},
		},
		{
			name: "hidden files and directories skipped at every level",
			dirs: []tree{{
				".h/a.yar": rule("h"), "sub/.h/b.yar": rule("h2"), "sub/.c.yar": rule("h3"), "sub/d.yar": rule("d"),
				".store/forge/v1/e.yar": rule("h4"),
			}},
			wantFiles: []string{"0/sub/d.yar"},
			wantRules: []string{"sub/d.yar:d"},
		},
		{
			name: "a top-level link to a directory is followed, through its target",
			dirs: []tree{{
				".store/forge/v1/packages/core/x.yar": rule("x"), ".store/forge/v2/packages/core/x.yar": rule("x2"),
				"forge": linkTo + ".store/forge/v2/", "outside": linkTo + "../ext",
				"dangling": linkTo + ".store/nope", "file": linkTo + ".store/forge/v1/packages/core/x.yar",
			}},
			wantFiles: []string{"0/.store/forge/v2/packages/core/x.yar", "ext/y.yar"},
			wantRules: []string{"forge/packages/core/x.yar:x2", "outside/y.yar:y"},
		},
		{
			name: "a deeper link to a directory is not followed",
			dirs: []tree{{
				"sub/real/a.yar": rule("a"), "sub/link": linkTo + "real", "sub/up": linkTo + "..",
				"sub/link.yar": linkTo + "real", "sub/ext": linkTo + "../../ext",
			}},
			wantFiles:  []string{"0/sub/real/a.yar"},
			wantRules:  []string{"sub/real/a.yar:a"},
			wantBroken: []string{"0/sub/link.yar"},
		},
		{
			name:      "a link to a file works at any depth",
			dirs:      []tree{{"store.txt": rule("linked"), "sub/deeper/l.yar": linkTo + "../../store.txt"}},
			wantFiles: []string{"0/sub/deeper/l.yar"},
			wantRules: []string{"sub/deeper/l.yar:linked"},
		},
		{
			name:      "a later directory's file at the same relative path overrides",
			dirs:      []tree{{"forge/core/x.yar": rule("feed_x"), "forge/core/y.yar": rule("feed_y")}, {"forge/core/x.yar": rule("admin_x")}},
			wantFiles: []string{"1/forge/core/x.yar", "0/forge/core/y.yar"},
			wantRules: []string{"forge/core/x.yar:admin_x", "forge/core/y.yar:feed_y"},
		},
		{
			name: "an empty file or a link to /dev/null masks at the same relative path only",
			dirs: []tree{
				{"f/a.yar": rule("a"), "f/b.yar": rule("b"), "f/c.yar": rule("c"), "g/c.yar": rule("gc")},
				{"f/a.yar": "", "f/b.yar": toDevNull, "c.yar": toDevNull},
			},
			wantFiles:  []string{"0/f/c.yar", "0/g/c.yar"},
			wantRules:  []string{"f/c.yar:c", "g/c.yar:gc"},
			wantMasked: []string{"c.yar", "f/a.yar", "f/b.yar"},
		},
		{
			name: "an administrator's file masks a linked feed's file",
			dirs: []tree{
				{"a.yar": rule("shipped")},
				{".store/forge/9c1e/packages/core/x.yar": rule("x"), ".store/forge/9c1e/packages/core/y.yar": rule("y"), "forge": linkTo + ".store/forge/9c1e"},
				{"forge/packages/core/x.yar": toDevNull},
			},
			wantFiles:  []string{"0/a.yar", "1/.store/forge/9c1e/packages/core/y.yar"},
			wantRules:  []string{"a.yar:shipped", "forge/packages/core/y.yar:y"},
			wantMasked: []string{"forge/packages/core/x.yar"},
		},
		{
			name: "hidden trees and deeper links are not read, however deep or looping",
			dirs: []tree{{
				".s/" + strings.Repeat("d/", maxRuleDepth+4) + "a.yar": rule("hidden"), "sub/loop": linkTo + "loop",
				"sub/self": linkTo + ".", "b.yar": rule("b"),
			}},
			wantFiles: []string{"0/b.yar"},
			wantRules: []string{"b.yar:b"},
		},
		{
			name:      "16 levels of subdirectories load",
			dirs:      []tree{{strings.Repeat("d/", maxRuleDepth) + "a.yar": rule("deep"), "d/b.yar": rule("b")}},
			wantFiles: []string{"0/d/b.yar", "0/" + strings.Repeat("d/", maxRuleDepth) + "a.yar"},
			wantRules: []string{"d/b.yar:b", strings.Repeat("d/", maxRuleDepth) + "a.yar:deep"},
		},
		{
			name:       "directory named like a rule file",
			dirs:       []tree{{"a.yar": rule("a"), "b.yar": rule("b")}, {"b.yar": asDir}},
			wantFiles:  []string{"0/a.yar"},
			wantRules:  []string{"a.yar:a"},
			wantBroken: []string{"1/b.yar"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root, err := filepath.EvalSymlinks(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			writeTree(t, root, map[string]string{"ext/y.yar": rule("y")}) // a link target outside the directories
			var dirs []string
			for i, files := range tt.dirs {
				d := filepath.Join(root, string(rune('0'+i)))
				if files != nil {
					writeTree(t, d, files)
				}
				dirs = append(dirs, d)
			}
			rel := func(p string) string {
				r, err := filepath.Rel(root, p)
				if err != nil {
					t.Fatal(err)
				}
				return r
			}
			rs := mustLoad(t, dirs...)
			var gotFiles, gotBroken, gotMissing []string
			for _, f := range rs.Files {
				gotFiles = append(gotFiles, rel(f.Path))
				if path.Base(f.Name) != filepath.Base(f.Path) || f.Rules != 1 {
					t.Errorf("file %+v: want Name ending in the base name and Rules = 1", f)
				}
			}
			for _, b := range rs.Broken {
				gotBroken = append(gotBroken, rel(b.Path))
			}
			for _, m := range rs.MissingDirs {
				gotMissing = append(gotMissing, rel(m))
			}
			var wantMissing []string
			for _, i := range tt.wantMissing {
				wantMissing = append(wantMissing, rel(dirs[i]))
			}
			check := func(what string, want, got any) {
				t.Helper()
				if diff := cmp.Diff(want, got); diff != "" {
					t.Errorf("%s mismatch (-want +got):\n%s", what, diff)
				}
			}
			check("files", tt.wantFiles, gotFiles)
			check("rules", tt.wantRules, ruleNames(rs))
			check("masked", tt.wantMasked, rs.Masked)
			check("missing", wantMissing, gotMissing)
			check("broken", tt.wantBroken, gotBroken)
			check("count", len(tt.wantRules), rs.Count)
			// Every rule matches everything: a scan names each one
			// in the namespace of its file.
			ms, err := mustScanner(t, rs).Scan([]byte("x"), Vars{})
			if err != nil {
				t.Fatal(err)
			}
			check("matches", tt.wantRules, matchNames(ms))
		})
	}
}

// TestLoadDirsErrors checks that Load fails with a plain error naming
// the rule directory when part of its tree cannot be read: loading the
// rest could resurrect files that part masks.
func TestLoadDirsErrors(t *testing.T) {
	// many creates n empty files in each of the subdirectories subs.
	many := func(n int, subs ...string) func(t *testing.T, dir string) {
		return func(t *testing.T, dir string) {
			for _, sub := range subs {
				d := filepath.Join(dir, sub)
				if err := os.MkdirAll(d, 0o755); err != nil {
					t.Fatal(err)
				}
				for i := range n {
					if err := os.WriteFile(filepath.Join(d, fmt.Sprintf("f%06d", i)), nil, 0o644); err != nil {
						t.Fatal(err)
					}
				}
			}
		}
	}
	tests := []struct {
		name    string
		files   map[string]string
		setup   func(t *testing.T, dir string) // more files, after files
		root    bool                           // the case cannot fail as root (permissions)
		wantErr string                         // in the error; "" means Load succeeds
	}{
		{
			name:    "17 levels of subdirectories",
			files:   map[string]string{"a.yar": rule("a"), strings.Repeat("d/", maxRuleDepth+1) + "a.yar": rule("deep")},
			wantErr: "more than 16 directories deep",
		},
		{
			name:    "17 levels of subdirectories without rule files",
			files:   map[string]string{"a.yar": rule("a"), strings.Repeat("d/", maxRuleDepth+1) + "README": "x"},
			wantErr: "more than 16 directories deep",
		},
		{
			name:    "17 levels through a top-level link",
			files:   map[string]string{"a.yar": rule("a"), ".store/" + strings.Repeat("d/", maxRuleDepth) + "a.yar": rule("deep"), "feed": linkTo + ".store"},
			wantErr: "more than 16 directories deep",
		},
		{
			name:    "more than 100000 entries in all",
			files:   map[string]string{"a.yar": rule("a")},
			setup:   many(50000, "x", "y/z"), // with a.yar, x, y and y/z: 100004
			wantErr: "more than 100000 entries",
		},
		{
			name:  "100000 entries in all",
			files: map[string]string{"a.yar": rule("a")},
			setup: many(49998, "x", "y/z"), // with a.yar, x, y and y/z: 100000
		},
		{
			name:    "a top-level link that cannot be followed",
			files:   map[string]string{"a.yar": rule("a"), "loop": linkTo + "loop"},
			wantErr: "following",
		},
		{
			name:  "an unreadable subdirectory",
			files: map[string]string{"a.yar": rule("a"), "sub/b.yar": rule("b")},
			setup: func(t *testing.T, dir string) {
				if err := os.Chmod(filepath.Join(dir, "sub"), 0); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { os.Chmod(filepath.Join(dir, "sub"), 0o755) })
			},
			root:    true,
			wantErr: "permission denied",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.root && os.Geteuid() == 0 {
				t.Skip("root reads directories whatever their permissions")
			}
			dir := t.TempDir()
			writeTree(t, dir, tt.files)
			if tt.setup != nil {
				tt.setup(t, dir)
			}
			rs, err := Load(LoadOptions{Dirs: []string{dir}})
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Load() error = %v", err)
				}
				if diff := cmp.Diff([]string{"a.yar:a"}, ruleNames(rs)); diff != "" {
					t.Errorf("rules mismatch (-want +got):\n%s", diff)
				}
				return
			}
			t.Logf("Load: %v", err)
			if err == nil || rs != nil || errors.Is(err, ErrNoRules) {
				t.Fatalf("Load() = %v, %v; want a plain error", rs, err)
			}
			if !strings.HasPrefix(err.Error(), "reading rule directory "+dir+": ") || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error %q: want one naming the rule directory %s and saying %q", err, dir, tt.wantErr)
			}
		})
	}
}

// TestWalkVanished checks that a subdirectory removed during the walk
// (a feed swapped under Load) makes Load start over rather than fail.
func TestWalkVanished(t *testing.T) {
	dir := t.TempDir()
	w := ruleWalker{dir: dir}
	err := w.descend(filepath.Join(dir, "gone"), "gone", 1)
	if !errors.Is(err, errChanged) || !strings.Contains(err.Error(), dir) {
		t.Errorf("walking a vanished subdirectory: %v; want an error naming %s wrapping errChanged", err, dir)
	}
}

// FuzzMerge checks merge's invariants on arbitrary listings. The input is
// a sequence of records: a kind byte, then a name up to a 0 byte; a record
// whose kind byte has the high bit set starts the next directory.
func FuzzMerge(f *testing.F) {
	f.Add([]byte("\x00a.yar\x00\x00b.yara\x00\x80\x01a.yar\x00\x02c.yar\x00"))
	f.Add([]byte("\x00.x.yar\x00\x03d.yar\x00\x81\x00d.yar\x00\x00x/y.yar\x00"))
	f.Add([]byte("\x00README\x00\x00a.YAR\x00\x00.yar\x00"))
	f.Add([]byte("\x00f/a.yar\x00\x00f//b.yar\x00\x81\x01f/a.yar\x00\x00.s/c.yar\x00\x00f/.d/c.yar\x00"))
	f.Fuzz(func(t *testing.T, data []byte) {
		var listing []entry
		dir := 0
		for len(data) > 0 {
			k := data[0]
			data = data[1:]
			if k&0x80 != 0 {
				dir++
			}
			name, rest, _ := strings.Cut(string(data), "\x00")
			data = []byte(rest)
			listing = append(listing, entry{
				Name: name,
				Path: filepath.Join("/d", string(rune('a'+dir%26)), name),
				Kind: entryKind(k&0x7f) % (kindOther + 1),
			})
		}
		got := merge(listing)

		// The effective entry of each valid name is its last one.
		last := map[string]entry{}
		for _, e := range listing {
			if isRuleKey(e.Name) {
				last[e.Name] = e
			}
		}
		seen := map[string]bool{}
		note := func(name string) {
			if !isRuleKey(name) {
				t.Fatalf("invalid name %q in result", name)
			}
			if seen[name] {
				t.Fatalf("name %q appears twice in result", name)
			}
			seen[name] = true
		}
		for _, e := range got.Files {
			note(e.Name)
			if e != last[e.Name] || e.Kind != kindRule {
				t.Fatalf("file %+v: want the last entry %+v, a rule file", e, last[e.Name])
			}
		}
		for _, name := range got.Masked {
			note(name)
			if k := last[name].Kind; k != kindEmpty && k != kindNull {
				t.Fatalf("masked %q but its last entry is kind %d", name, k)
			}
		}
		for _, e := range got.Bad {
			note(e.Name)
			if e != last[e.Name] || e.Kind != kindOther {
				t.Fatalf("bad %+v: want the last entry %+v, kind other", e, last[e.Name])
			}
		}
		if len(seen) != len(last) {
			t.Fatalf("result holds %d names, want %d", len(seen), len(last))
		}
		byName := func(a, b entry) int { return strings.Compare(a.Name, b.Name) }
		if !slices.IsSortedFunc(got.Files, byName) || !slices.IsSorted(got.Masked) || !slices.IsSortedFunc(got.Bad, byName) {
			t.Fatalf("result not in lexical order: %+v", got)
		}
	})
}
