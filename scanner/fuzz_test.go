package scanner

import (
	"os"
	"slices"
	"strings"
	"testing"
)

// FuzzLoad feeds arbitrary bytes to the rule-directory loader as one
// drop-in file between two good ones. Whatever the bytes, Load succeeds on
// the good files, and a rejected file is named with its path (a line when
// the compiler gives one) and a message.
func FuzzLoad(f *testing.F) {
	for _, seed := range []string{
		"",
		rule("b"),
		"rule b { condition: true and }",
		"rule a { condition: true }\n", // same identifier as a.yar's rule, other namespace
		"rule b : tag { meta: action = \"audit\" strings: $s = \"x\" condition: $s }",
		"rule b { meta: action = \"explode\" condition: true }",
		"import \"pe\"\nrule b { condition: pe.number_of_sections > 1 }",
		"import \"no_such_module\"\n",
		"include \"c.yar\"\n",
		"include \"/etc/passwd\"\n",
		"include \"../../../../../../etc/passwd\"\n",
		"include \"b.yar\"\n",
		"rule b { strings: $r = /(a|aa)*b/ condition: $r }",
		"rule b { strings: $h = { 4D 5A [0-1000000] 50 45 } condition: $h }",
		"rule b { strings: $s = \"\\xff\\x00\" condition: #s > 1000000 }",
		"\xff\xfe\x00rule",
		"rule b { condition: for all i in (0..9999999999) : ( i >= 0 ) }",
		"/* unterminated",
		"rule b { strings: $s = \"\" condition: $s }",
		strings.Repeat("rule r", 10),
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		writeTree(t, dir, map[string]string{"a.yar": rule("a"), "b.yar": string(data), "c.yar": rule("c")})
		rs, err := Load(LoadOptions{Dirs: []string{dir}})
		if err != nil {
			t.Fatalf("Load failed though a.yar and c.yar are good: %v", err)
		}
		names := ruleNames(rs)
		for _, want := range []string{"a.yar:a", "c.yar:c"} {
			if !slices.Contains(names, want) {
				t.Fatalf("rule %s missing from %q", want, names)
			}
		}
		loadedB := slices.ContainsFunc(rs.Files, func(f RuleFile) bool { return f.Name == "b.yar" })
		maskedB := slices.Contains(rs.Masked, "b.yar")
		for _, b := range rs.Broken {
			// b.yar itself, or a file it includes (includes stay inside
			// the rule directories).
			if !strings.HasPrefix(b.Path, dir+string(os.PathSeparator)) || b.Msg == "" || b.Line < 0 {
				t.Errorf("rejection does not name a file of the rule directory and a reason: %#v", b)
			}
		}
		if n := btoi(loadedB) + btoi(maskedB) + btoi(len(rs.Broken) > 0); n != 1 {
			t.Errorf("b.yar: loaded %v, masked %v, rejected %v; want exactly one", loadedB, maskedB, rs.Broken)
		}
	})
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
