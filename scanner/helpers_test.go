package scanner

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// Special contents for writeTree.
const (
	toDevNull = "@devnull" // a symbolic link to /dev/null
	asDir     = "@dir"     // a directory
	linkTo    = "@link:"   // followed by a target: a symbolic link to it
)

// writeTree creates files below dir: name → content, with parent
// directories as needed; see toDevNull, asDir and linkTo for special
// entries.
func writeTree(t testing.TB, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		var err error
		switch {
		case strings.HasPrefix(content, linkTo):
			err = os.Symlink(strings.TrimPrefix(content, linkTo), p)
		case content == toDevNull:
			err = os.Symlink("/dev/null", p)
		case content == asDir:
			err = os.Mkdir(p, 0o755)
		default:
			err = os.WriteFile(p, []byte(content), 0o644)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

// mustLoad loads the rule directories and fails the test on error.
func mustLoad(t testing.TB, dirs ...string) *Ruleset {
	t.Helper()
	rs, err := Load(LoadOptions{Dirs: dirs})
	if err != nil {
		t.Fatalf("Load(%q): %v", dirs, err)
	}
	return rs
}

// mustScanner returns a scanner of rs closed at the end of the test.
func mustScanner(t testing.TB, rs *Ruleset) *Scanner {
	t.Helper()
	s, err := rs.NewScanner(10 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// rule returns the source of a rule that matches everything and carries
// the given metadata lines.
func rule(name string, meta ...string) string {
	var b strings.Builder
	b.WriteString("rule " + name + " {\n")
	if len(meta) > 0 {
		b.WriteString("  meta:\n")
		for _, m := range meta {
			b.WriteString("    " + m + "\n")
		}
	}
	b.WriteString("  condition:\n    true\n}\n")
	return b.String()
}

// ruleNames returns "namespace:identifier" of every loaded rule, sorted.
func ruleNames(rs *Ruleset) []string {
	var names []string
	for k := range rs.index {
		names = append(names, k.ns+":"+k.id)
	}
	slices.Sort(names)
	return names
}

// matchNames returns "namespace:identifier" of matches.
func matchNames(ms []Match) []string {
	var names []string
	for _, m := range ms {
		names = append(names, m.Namespace+":"+m.Rule)
	}
	slices.Sort(names)
	return names
}

// eicar returns the EICAR test string. It is assembled at run time so that
// this source file does not itself look like the test file to a scanner.
func eicar() []byte {
	return []byte(`X5O!P%@AP[4\PZX54(P^)7CC)7}$` + "EICAR-STANDARD-ANTIVIRUS" + `-TEST-FILE!$H+H*`)
}

// shippedRules is the project's own rule directory, seen from this package.
const shippedRules = "../configs/rules.d"
