package policy

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// tree is a configuration to write: the main file and the entries of its
// drop-in directory.
type tree struct {
	main    string            // content of fanguard.toml; "-" for no file
	dropIns map[string]string // name in fanguard.toml.d → content, or a special entry below
}

// Special drop-in entries.
const (
	entryDir      = "<dir>"       // a directory
	entryNull     = "<null>"      // a symbolic link to /dev/null
	entryDangling = "<dangling>"  // a symbolic link to a missing file
	entryOutside  = "<outside:"   // prefix: a symbolic link to a file outside, with the content after ":"
	entryNotADir  = "<not-a-dir>" // as the only entry: fanguard.toml.d is a regular file
)

// write writes tr below a new directory and returns the main file's path.
func (tr tree) write(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	path := filepath.Join(root, "fanguard.toml")
	if tr.main != "-" {
		writeTestFile(t, path, tr.main)
	}
	dir := DropInDir(path)
	if tr.dropIns[""] == entryNotADir {
		writeTestFile(t, dir, "mode = \"audit\"\n")
		return path
	}
	if tr.dropIns == nil {
		return path
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, content := range tr.dropIns {
		p := filepath.Join(dir, name)
		var err error
		switch {
		case content == entryDir:
			err = os.Mkdir(p, 0o755)
		case content == entryNull:
			err = os.Symlink("/dev/null", p)
		case content == entryDangling:
			err = os.Symlink(filepath.Join(root, "missing.toml"), p)
		case strings.HasPrefix(content, entryOutside):
			target := filepath.Join(root, "outside-"+name)
			writeTestFile(t, target, strings.TrimPrefix(content, entryOutside))
			err = os.Symlink(target, p)
		default:
			writeTestFile(t, p, content)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	return path
}

func writeTestFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

const twoFeeds = `
[[feeds]]
name = "one"
url = "/srv/one"

[[feeds]]
name = "two"
url = "/srv/two"
`

func TestLoadDropIns(t *testing.T) {
	for _, tt := range []struct {
		name      string
		tree      tree
		missingOK bool
		want      func(*Config)
		// wantDropIns are the names of the drop-ins read, in order.
		wantDropIns []string
	}{
		{
			name: "no directory",
			tree: tree{main: "mode = \"audit\"\n"},
			want: func(c *Config) { c.Mode = Audit },
		},
		{
			name: "empty directory",
			tree: tree{main: "mode = \"audit\"\n", dropIns: map[string]string{}},
			want: func(c *Config) { c.Mode = Audit },
		},
		{
			name: "scalar",
			tree: tree{
				main:    "mode = \"audit\"\nbudget = \"2s\"\n",
				dropIns: map[string]string{"50-enforce.toml": "mode = \"enforce\"\n"},
			},
			want:        func(c *Config) { c.Budget = 2e9 },
			wantDropIns: []string{"50-enforce.toml"},
		},
		{
			name: "list replaced, other keys of the table kept",
			tree: tree{
				main:    "[protect]\npaths = [\"/a\", \"/b\"]\nexclude_paths = [\"/b/x\"]\n",
				dropIns: map[string]string{"paths.toml": "[protect]\npaths = [\"/c\"]\n"},
			},
			want: func(c *Config) {
				c.Protect.Paths = []string{"/c"}
				c.Protect.ExcludePaths = []string{"/b/x"}
			},
			wantDropIns: []string{"paths.toml"},
		},
		{
			name: "inline and dotted tables",
			tree: tree{
				main: "[log]\nlevel = \"debug\"\nformat = \"json\"\n",
				dropIns: map[string]string{
					"a.toml": "log = { level = \"warn\" }\n",
					"b.toml": "quarantine.action = \"deny\"\n",
				},
			},
			want: func(c *Config) {
				c.Log = LogConfig{Level: "warn", Format: "json"}
				c.Quarantine.Action = ActionDeny
			},
			wantDropIns: []string{"a.toml", "b.toml"},
		},
		{
			name: "feeds replaced",
			tree: tree{
				main:    twoFeeds,
				dropIns: map[string]string{"feeds.toml": "[[feeds]]\nname = \"three\"\nurl = \"/srv/three\"\n"},
			},
			want: func(c *Config) {
				c.Feeds = []FeedConfig{{Name: "three", URL: "/srv/three", Include: defaultInclude(), MaxSize: 256 << 20}}
			},
			wantDropIns: []string{"feeds.toml"},
		},
		{
			name: "feeds kept when a drop-in names none",
			tree: tree{
				main:    twoFeeds,
				dropIns: map[string]string{"x.toml": "[update]\ncanary_files = 0\n"},
			},
			want: func(c *Config) {
				c.Update.CanaryFiles = 0
				c.Feeds = []FeedConfig{
					{Name: "one", URL: "/srv/one", Include: defaultInclude(), MaxSize: 256 << 20},
					{Name: "two", URL: "/srv/two", Include: defaultInclude(), MaxSize: 256 << 20},
				}
			},
			wantDropIns: []string{"x.toml"},
		},
		{
			name: "lexical order: the last one wins",
			tree: tree{
				main: "",
				dropIns: map[string]string{
					"9-audit.toml":    "mode = \"audit\"\nworkers = 2\n",
					"10-enforce.toml": "mode = \"enforce\"\nworkers = 3\nbudget = \"1s\"\n",
					"A.toml":          "workers = 4\n",
				},
			},
			want: func(c *Config) {
				c.Mode = Audit // 9-audit.toml comes after 10-enforce.toml
				c.Workers = 4  // and A.toml after both
				c.MaxPendingPerUID = autoPerUID(4)
				c.Budget = 1e9
			},
			wantDropIns: []string{"10-enforce.toml", "9-audit.toml", "A.toml"},
		},
		{
			name: "hidden, other names, directories and masks left out",
			tree: tree{
				main: "",
				dropIns: map[string]string{
					".hidden.toml":           "mode = 1\n",
					".toml":                  "mode = 1\n",
					"x.toml.dpkg-old":        "mode = 1\n",
					"x.toml~":                "mode = 1\n",
					"README":                 "mode = 1\n",
					"sub.toml":               entryDir,
					"masked.toml":            entryNull,
					"linked.toml":            entryOutside + "mode = \"audit\"\n",
					"ordinary.toml":          "budget = \"3s\"\n",
					"sub.toml.d-not-a-match": entryDir,
				},
			},
			want: func(c *Config) {
				c.Mode = Audit
				c.Budget = 3e9
			},
			wantDropIns: []string{"linked.toml", "ordinary.toml"},
		},
		{
			name:        "missing main file, drop-ins over the defaults",
			tree:        tree{main: "-", dropIns: map[string]string{"audit.toml": "mode = \"audit\"\n"}},
			missingOK:   true,
			want:        func(c *Config) { c.Mode = Audit },
			wantDropIns: []string{"audit.toml"},
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path := tt.tree.write(t)
			got, src, err := LoadWith(path, LoadOptions{MissingOK: tt.missingOK})
			if err != nil {
				t.Fatal(err)
			}
			want := Default()
			if tt.want != nil {
				tt.want(&want)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("LoadWith mismatch (-want +got):\n%s", diff)
			}
			wantSrc := Sources{Main: path}
			if tt.tree.main == "-" {
				wantSrc.Main = ""
			}
			for _, name := range tt.wantDropIns {
				wantSrc.DropIns = append(wantSrc.DropIns, filepath.Join(DropInDir(path), name))
			}
			if diff := cmp.Diff(wantSrc, src); diff != "" {
				t.Errorf("LoadWith sources mismatch (-want +got):\n%s", diff)
			}
			// Load is LoadWith without options.
			if !tt.missingOK {
				if got2, err := Load(path); err != nil || !cmp.Equal(got, got2) {
					t.Errorf("Load = %v, %v; want what LoadWith returned", got2, err)
				}
			}
		})
	}
}

func TestLoadDropInErrors(t *testing.T) {
	for _, tt := range []struct {
		name string
		tree tree
		// want holds the messages expected, one per error, in order; each
		// must appear in its error's text, after "{main}" and "{d}" are
		// replaced with the main file's path and the drop-in directory.
		// With read, there is one error, from reading, and want holds
		// parts of it.
		want []string
		read bool
	}{
		{
			name: "bad value",
			tree: tree{main: "mode = \"audit\"\n", dropIns: map[string]string{"50-enforce.toml": "# enforce\nmode = \"enforcee\"\n"}},
			want: []string{`{d}/50-enforce.toml:2: mode: "enforcee" is not allowed (want "enforce" or "audit")`},
		},
		{
			name: "bad element of a list",
			tree: tree{main: "", dropIns: map[string]string{"p.toml": "[protect]\npaths = [\n  \"/a\",\n  \"rel\",\n]\n"}},
			want: []string{`{d}/p.toml:4: protect.paths: "rel" is a relative path`},
		},
		{
			name: "unknown key",
			tree: tree{main: "", dropIns: map[string]string{"a.toml": "mode = \"audit\"\n", "b.toml": "\nmdoe = \"enforce\"\n"}},
			want: []string{`{d}/b.toml:2: unknown key "mdoe" (want one of mode,`},
		},
		{
			name: "syntax errors in two files, and an unknown key in a third",
			tree: tree{
				main: "mode = \n",
				dropIns: map[string]string{
					"a.toml": "budget = \"1s\"\n[log\n",
					"b.toml": "[protect]\nfs_type = []\n",
					"c.toml": "mode = \"audit\"\n",
				},
			},
			want: []string{`{main}:1:`, `{d}/a.toml:2:`, `{d}/b.toml:2: unknown key "protect.fs_type"`},
		},
		{
			name: "errors in main file and drop-in, in the order applied",
			tree: tree{
				main:    "workers = -1\n",
				dropIns: map[string]string{"z.toml": "budget = 7\n", "a.toml": "\n\nlog.level = \"loud\"\n"},
			},
			want: []string{
				`{main}:1: workers: -1 is out of range`,
				`{d}/a.toml:3: log.level: "loud" is not allowed`,
				`{d}/z.toml:1: budget: 7 is not a duration string`,
			},
		},
		{
			name: "bad feed in a drop-in",
			tree: tree{main: twoFeeds, dropIns: map[string]string{"f.toml": "[[feeds]]\nname = \"a\"\nurl = \"http://h.example/a.zip\"\n"}},
			want: []string{`{d}/f.toml:3: feeds[1] ("a").url: "http://h.example/a.zip" is not an https address`},
		},
		{
			name: "cross-key: rules.dirs in a drop-in drops the feeds' directory",
			tree: tree{main: twoFeeds, dropIns: map[string]string{"r.toml": "[rules]\ndirs = [\"/etc/fanguard/rules.d\"]\n"}},
			want: []string{`{d}/r.toml:2: update.dir: "/var/lib/fanguard/feeds.d" (the default) is not one of rules.dirs`},
		},
		{
			name: "cross-key: update.dir in a drop-in",
			tree: tree{main: twoFeeds, dropIns: map[string]string{"u.toml": "[update]\ndir = \"/srv/feeds\"\n"}},
			want: []string{`{d}/u.toml:2: update.dir: "/srv/feeds" is not one of rules.dirs`},
		},
		{
			name: "cross-key: feeds in a drop-in, update.dir in the main file",
			tree: tree{main: "[update]\ndir = \"/srv/feeds\"\n", dropIns: map[string]string{"f.toml": twoFeeds}},
			want: []string{`{main}:2: update.dir: "/srv/feeds" is not one of rules.dirs`},
		},
		{
			name: "cross-key: feeds in a drop-in, everything else default",
			tree: tree{main: "[rules]\ndirs = [\"/r\"]\n", dropIns: map[string]string{"f.toml": "\n" + twoFeeds}},
			want: []string{`{main}:2: update.dir: "/var/lib/fanguard/feeds.d" (the default) is not one of rules.dirs`},
		},
		{
			name: "cross-key: max_pending in a drop-in below the main file's per-uid bound",
			tree: tree{main: "max_pending_per_uid = 100\n", dropIns: map[string]string{"p.toml": "max_pending = 50\n"}},
			want: []string{`{main}:1: max_pending_per_uid: 100 is more than max_pending`},
		},
		{
			name: "dangling symbolic link",
			tree: tree{main: "", dropIns: map[string]string{"gone.toml": entryDangling}},
			want: []string{`reading config drop-in: open {d}/gone.toml: no such file or directory`},
			read: true,
		},
		{
			name: "drop-in directory is a file",
			tree: tree{main: "", dropIns: map[string]string{"": entryNotADir}},
			want: []string{`reading config drop-ins: `, `{d}`, `not a directory`},
			read: true,
		},
		{
			name: "drop-in too large",
			tree: tree{main: "", dropIns: map[string]string{"big.toml": "#" + strings.Repeat("x", maxConfigFile)}},
			want: []string{`reading config drop-in {d}/big.toml: larger than 1 MiB`},
			read: true,
		},
		{
			name: "main file too large",
			tree: tree{main: "#" + strings.Repeat("x", maxConfigFile)},
			want: []string{`reading config {main}: larger than 1 MiB`},
			read: true,
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path := tt.tree.write(t)
			got, src, err := LoadWith(path, LoadOptions{})
			if err == nil {
				t.Fatalf("LoadWith succeeded, want errors %q", tt.want)
			}
			if diff := cmp.Diff(Config{}, got); diff != "" {
				t.Errorf("LoadWith returned a config with its error (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(Sources{}, src); diff != "" {
				t.Errorf("LoadWith returned sources with its error (-want +got):\n%s", diff)
			}
			r := strings.NewReplacer("{main}", path, "{d}", DropInDir(path))
			errs := splitErrors(err)
			if tt.read {
				errs = slices.Repeat([]error{err}, len(tt.want))
			}
			if len(errs) != len(tt.want) {
				t.Fatalf("LoadWith returned %d errors, want %d:\n%v", len(errs), len(tt.want), err)
			}
			for i, w := range tt.want {
				if w = r.Replace(w); !strings.Contains(errs[i].Error(), w) {
					t.Errorf("error %d:\n got: %s\nwant: …%s…", i, errs[i], w)
				}
			}
		})
	}
}

// TestLoadDropInLimits fills the drop-in directory past its bounds.
func TestLoadDropInLimits(t *testing.T) {
	fill := func(t *testing.T, n int, content string) string {
		path := tree{main: ""}.write(t)
		dir := DropInDir(path)
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for i := range n {
			writeTestFile(t, filepath.Join(dir, strconv.Itoa(i)+".toml"), content)
		}
		return path
	}
	t.Run("as many files as allowed", func(t *testing.T) {
		path := fill(t, maxDropIns, "mode = \"audit\"\n")
		// Other names do not count.
		writeTestFile(t, filepath.Join(DropInDir(path), "x.conf"), "")
		writeTestFile(t, filepath.Join(DropInDir(path), ".x.toml"), "")
		cfg, src, err := LoadWith(path, LoadOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Mode != Audit || len(src.DropIns) != maxDropIns {
			t.Errorf("mode %v from %d drop-ins, want audit from %d", cfg.Mode, len(src.DropIns), maxDropIns)
		}
	})
	t.Run("too many files", func(t *testing.T) {
		path := fill(t, maxDropIns+1, "")
		_, err := Load(path)
		want := DropInDir(path) + " holds more than 1000 *.toml files"
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Load error = %v, want one with %q", err, want)
		}
	})
	t.Run("too large together", func(t *testing.T) {
		path := fill(t, maxConfigTotal/maxConfigFile+1, "#"+strings.Repeat("x", maxConfigFile-2)+"\n")
		_, err := Load(path)
		want := "the configuration files together are larger than 16 MiB"
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), DropInDir(path)) {
			t.Errorf("Load error = %v, want one naming the drop-in with %q", err, want)
		}
	})
}

// TestLoadMissingMain: without MissingOK, a missing main file is an
// error wrapping fs.ErrNotExist even when drop-ins exist.
func TestLoadMissingMain(t *testing.T) {
	path := tree{main: "-", dropIns: map[string]string{"a.toml": "mode = \"audit\"\n"}}.write(t)
	_, err := Load(path)
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), path) {
		t.Errorf("Load error = %v, want one wrapping fs.ErrNotExist naming %s", err, path)
	}
}
