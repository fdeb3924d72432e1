package test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// ruleTree writes two rule directories for the rules commands: "usr" with
// a.yar, b.yar and m.yar, and "etc", whose b.yar overrides and whose m.yar
// (a symbolic link to /dev/null) masks. With broken, usr also holds x.yar,
// which does not compile on line 3.
func ruleTree(t *testing.T, broken bool) (usr, etc string) {
	t.Helper()
	root := t.TempDir()
	usr, etc = filepath.Join(root, "usr"), filepath.Join(root, "etc")
	for _, d := range []string{usr, etc} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(t, filepath.Join(usr, "a.yar"), "rule a1 { condition: false }\nrule a2 { condition: false }\n", 0o644)
	writeFile(t, filepath.Join(usr, "b.yar"), "rule b_usr { condition: false }\n", 0o644)
	writeFile(t, filepath.Join(usr, "m.yar"), "rule m { condition: false }\n", 0o644)
	writeFile(t, filepath.Join(etc, "b.yar"), "rule b_etc { condition: false }\n", 0o644)
	if err := os.Symlink("/dev/null", filepath.Join(etc, "m.yar")); err != nil {
		t.Fatal(err)
	}
	if broken {
		writeFile(t, filepath.Join(usr, "x.yar"), "rule x {\n  condition:\n    no_such_thing\n}\n", 0o644)
	}
	return usr, etc
}

func TestRulesCheck(t *testing.T) {
	usr, etc := ruleTree(t, false)
	busr, betc := ruleTree(t, true)
	missingCfg := "--config=" + filepath.Join(t.TempDir(), "none.toml")
	onlyBroken := t.TempDir()
	writeFile(t, filepath.Join(onlyBroken, "y.yar"), "rule y {\n  condition: nope\n}\n", 0o644)
	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantOut  []string // substrings of stdout
		wantErr  []string // substrings of stderr
	}{
		{"good", []string{"rules", "check", usr, etc}, 0,
			[]string{"2 rule files loaded, 3 rules, 0 errors, 0 warnings, 1 masked; generation "}, nil},
		{"good from --rules-dir", []string{"rules", "check", "--rules-dir", usr, "--rules-dir", etc}, 0,
			[]string{"3 rules, 0 errors"}, nil},
		{"broken file", []string{"rules", "check", busr, betc}, 1,
			[]string{filepath.Join(busr, "x.yar") + `:3: error: undefined identifier "no_such_thing"`, "3 rules, 1 error"}, nil},
		{"no rules", []string{"rules", "check", onlyBroken}, 1,
			[]string{filepath.Join(onlyBroken, "y.yar") + ":2: error: ", "error: no rules to load from " + onlyBroken, "0 rules, 2 errors"}, nil},
		{"unreadable directory", []string{"rules", "check", filepath.Join(usr, "a.yar")}, 1,
			[]string{"error: reading rule directory " + filepath.Join(usr, "a.yar")}, nil},
		{"missing config", []string{"rules", "check", missingCfg, usr}, 2, nil, []string{"none.toml"}},
		{"unknown flag", []string{"rules", "check", "--nope", usr}, 2, nil, []string{"unknown flag"}},
		{"unknown subcommand", []string{"rules", "nope"}, 2, nil, []string{"unknown command"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { expectRun(t, tt.args, tt.wantCode, tt.wantOut, tt.wantErr) })
	}

	t.Run("generation", func(t *testing.T) {
		_, out, _ := run(t, "rules", "check", usr, etc)
		if !regexp.MustCompile(`; generation [0-9a-f]{16}\n$`).MatchString(out) {
			t.Errorf("summary lacks a generation of 16 hex digits:\n%s", out)
		}
	})
}

// checkDoc is the --json output of "fanguard rules check".
type checkDoc struct {
	Files []struct {
		Name  string
		Path  string
		Rules int
	}
	Masked   []string
	Errors   []problem
	Warnings []problem
	Rules    int
	Gen      string `json:"generation"`
}

type problem struct {
	File    string
	Line    int
	Message string
}

func TestRulesCheckJSON(t *testing.T) {
	usr, etc := ruleTree(t, true)
	code, out, errOut := run(t, "rules", "check", "--json", usr, etc)
	if code != 1 {
		t.Errorf("exit %d, want 1; stderr: %s", code, errOut)
	}
	var doc checkDoc
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("decoding %q: %v", out, err)
	}
	if len(doc.Files) != 2 || doc.Files[0].Name != "a.yar" || doc.Files[0].Rules != 2 ||
		doc.Files[1].Path != filepath.Join(etc, "b.yar") || doc.Files[1].Rules != 1 {
		t.Errorf("files = %+v, want a.yar (2 rules) from usr, b.yar (1 rule) from etc", doc.Files)
	}
	if doc.Rules != 3 || len(doc.Masked) != 1 || doc.Masked[0] != "m.yar" || len(doc.Warnings) != 0 {
		t.Errorf("rules %d, masked %q, warnings %v; want 3, [m.yar], none", doc.Rules, doc.Masked, doc.Warnings)
	}
	want := problem{File: filepath.Join(usr, "x.yar"), Line: 3, Message: `undefined identifier "no_such_thing"`}
	if len(doc.Errors) != 1 || doc.Errors[0] != want {
		t.Errorf("errors = %+v, want [%+v]", doc.Errors, want)
	}
	if !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(doc.Gen) {
		t.Errorf("generation = %q, want 64 hex digits", doc.Gen)
	}

	// The text form shows the start of the same generation.
	_, text, _ := run(t, "rules", "check", usr, etc)
	if !strings.Contains(text, "generation "+doc.Gen[:16]) {
		t.Errorf("text output lacks generation %s:\n%s", doc.Gen[:16], text)
	}
}

func TestRulesList(t *testing.T) {
	usr, etc := ruleTree(t, true)
	dirs := []string{"--rules-dir", usr, "--rules-dir", etc}

	code, out, errOut := run(t, append([]string{"rules", "list"}, dirs...)...)
	if code != 0 {
		t.Errorf("exit %d, want 0; stderr: %s", code, errOut)
	}
	lineWith := func(parts ...string) bool {
		for _, l := range strings.Split(out, "\n") {
			all := true
			for _, p := range parts {
				all = all && strings.Contains(l, p)
			}
			if all {
				return true
			}
		}
		return false
	}
	checks := []struct {
		what  string
		parts []string
	}{
		{"a.yar loaded with 2 rules", []string{"a.yar", " 2 ", filepath.Join(usr, "a.yar")}},
		{"b.yar loaded from etc", []string{"b.yar", " 1 ", filepath.Join(etc, "b.yar")}},
		{"b.yar of usr overridden by etc's", []string{"b.yar", filepath.Join(usr, "b.yar"), "by " + filepath.Join(etc, "b.yar")}},
		{"m.yar masked by the link", []string{"m.yar", "by " + filepath.Join(etc, "m.yar"), "symbolic link to /dev/null"}},
		{"x.yar left out with its line", []string{filepath.Join(usr, "x.yar") + ":3: error:"}},
		{"generation", []string{"Generation "}},
		{"partition in force", []string{"Partition by file class (each scan runs"}},
		{"the other class", []string{"  other ", "-"}},
		{"the PE class", []string{"  PE "}},
		{"the ELF class", []string{"  ELF "}},
		{"the Mach-O class", []string{"  Mach-O "}},
	}
	for _, c := range checks {
		if !lineWith(c.parts...) {
			t.Errorf("no line shows %s (%q):\n%s", c.what, c.parts, out)
		}
	}

	t.Run("json", func(t *testing.T) {
		code, out, errOut := run(t, append([]string{"rules", "list", "--json"}, dirs...)...)
		if code != 0 {
			t.Errorf("exit %d, want 0; stderr: %s", code, errOut)
		}
		var doc struct {
			Gen        string `json:"generation"`
			Rules      int
			Files      []struct{ Name, Path string }
			Overridden []struct{ Name, Path, By string }
			Masked     []struct {
				Name, Path string
				Null       bool
			}
			Errors    []problem
			Partition struct {
				InForce bool `json:"in_force"`
				Classes []struct {
					Class   string
					Rules   int
					Imports []string
				}
			}
		}
		if err := json.Unmarshal([]byte(out), &doc); err != nil {
			t.Fatalf("decoding %q: %v", out, err)
		}
		if p := doc.Partition; !p.InForce || len(p.Classes) != 4 || p.Classes[0].Class != "other" || p.Classes[0].Imports == nil {
			t.Errorf("partition = %+v, want in force with 4 classes, other first", p)
		}
		if !strings.Contains(errOut+out, doc.Gen) || len(doc.Gen) != 64 || doc.Rules != 3 || len(doc.Files) != 2 || len(doc.Errors) != 1 {
			t.Errorf("generation %q, rules %d, files %+v, errors %+v", doc.Gen, doc.Rules, doc.Files, doc.Errors)
		}
		overridden := map[string]string{}
		for _, o := range doc.Overridden {
			overridden[o.Path] = o.By
		}
		if overridden[filepath.Join(usr, "b.yar")] != filepath.Join(etc, "b.yar") || overridden[filepath.Join(usr, "m.yar")] != filepath.Join(etc, "m.yar") {
			t.Errorf("overridden = %+v, want usr's b.yar and m.yar by etc's", doc.Overridden)
		}
		if len(doc.Masked) != 1 || doc.Masked[0].Name != "m.yar" || doc.Masked[0].Path != filepath.Join(etc, "m.yar") || !doc.Masked[0].Null {
			t.Errorf("masked = %+v, want m.yar by %s, a link to /dev/null", doc.Masked, filepath.Join(etc, "m.yar"))
		}
		// check and list agree on the generation.
		_, check, _ := run(t, "rules", "check", "--json", usr, etc)
		if !strings.Contains(check, `"generation": "`+doc.Gen+`"`) {
			t.Errorf("check reports another generation than list's %s:\n%s", doc.Gen, check)
		}
	})

	t.Run("help explains the drop-in rules", func(t *testing.T) {
		code, out, _ := run(t, "rules", "--help")
		for _, w := range []string{"replaces", "/dev/null", "empty file", "lexical order", "namespace", "check", "list"} {
			if code != 0 || !strings.Contains(out, w) {
				t.Errorf("rules --help: exit %d, lacks %q", code, w)
			}
		}
	})
}
