package scanner

import (
	"fmt"
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

// condGen generates rule conditions from fuzz input, over the forms the
// partition's analysis reasons about and some it does not.
type condGen struct {
	data []byte
	pos  int
	rule int // index of the rule being generated: it may reference the rules before it
}

func (g *condGen) next() byte {
	if g.pos >= len(g.data) {
		return 0
	}
	g.pos++
	return g.data[g.pos-1]
}

var (
	fuzzReads  = []string{"uint8", "uint16", "uint32", "uint8be", "uint16be", "uint32be"}
	fuzzConsts = []uint64{0x5A4D, 0x4D5A, 0x4D, 0x5A, 0x464C457F, 0x7F454C46, 0x457F, 0x7F, 0xFEEDFACE, 0xCEFAEDFE,
		0xFEEDFACF, 0xCAFEBABE, 0xBEBAFECA, 0xCA, 0, 1, 0x00905A4D, 0x1FFFFFFFF}
	fuzzOps   = []string{"==", "!=", "<", ">="}
	fuzzAtoms = []string{
		"$a at 0", "$b at 0", "$c at 0", "$d at 0", "$a", "$b at 1",
		"filesize < 4", "filesize > 2", "true", "false",
		"pe.is_pe", "pe.number_of_sections > 0", "pe.MACHINE_I386 == 0x14c", "pe.is_dll()", "pe.imports(\"kernel32.dll\")",
		"elf.type == elf.ET_EXEC", "elf.number_of_sections > 0",
		"for any i in (0..pe.number_of_sections) : (pe.sections[i].name == \".text\")",
		"for all i in (0..pe.number_of_sections) : (pe.sections[i].name == \".text\")",
		"uint8(1) == 0x5A", "filename == \"x\"", "defined pe.entry_point", "not defined uint16(0)",
	}
)

func (g *condGen) expr(depth int) string {
	if depth < 4 {
		switch g.next() % 9 {
		case 0:
			return "not " + g.expr(depth+1)
		case 1:
			return "(" + g.expr(depth+1) + " and " + g.expr(depth+1) + ")"
		case 2:
			return "(" + g.expr(depth+1) + " or " + g.expr(depth+1) + ")"
		case 3:
			return "defined (" + g.expr(depth+1) + ")"
		}
	}
	switch k := g.next(); {
	case k%4 == 0 && g.rule > 0:
		name := fuzzRuleName(int(g.next()) % g.rule)
		if k%8 == 0 {
			return "any of (" + name + "*)" // matches that rule alone
		}
		return name
	case k%4 == 1:
		fn := fuzzReads[int(g.next())%len(fuzzReads)]
		c := fuzzConsts[int(g.next())%len(fuzzConsts)]
		op := fuzzOps[int(g.next())%len(fuzzOps)]
		if g.next()%2 == 0 {
			return fmt.Sprintf("0x%X %s %s(0)", c, op, fn)
		}
		return fmt.Sprintf("%s(0) %s 0x%X", fn, op, c)
	default:
		return fuzzAtoms[int(g.next())%len(fuzzAtoms)]
	}
}

// fuzzRuleName names the i-th generated rule; no name is the prefix of
// another, so a wildcard rule set names one rule.
func fuzzRuleName(i int) string { return string(rune('a'+i)) + "r" }

// source returns a rule file of three rules generated from the input,
// each global or private as the input says.
func (g *condGen) source() string {
	var b strings.Builder
	b.WriteString("import \"pe\"\nimport \"elf\"\n")
	for g.rule = 0; g.rule < 3; g.rule++ {
		flags := g.next()
		if flags&1 != 0 && flags&6 == 0 {
			b.WriteString("global ")
		}
		if flags&8 != 0 {
			b.WriteString("private ")
		}
		fmt.Fprintf(&b, "rule %s {\n  strings:\n    $a = \"MZ\"\n    $b = { 7F 45 4C 46 }\n    $c = \"mz\" nocase\n    $d = { CA FE BA BE }\n", fuzzRuleName(g.rule))
		// Every string must be used; the count term is always true.
		fmt.Fprintf(&b, "  condition:\n    %s and #a + #b + #c + #d >= 0\n}\n", g.expr(0))
	}
	return b.String()
}

// FuzzPartition generates rules from the input, loads them partitioned by
// class and compiles them whole, and requires the same matches on content
// of every class derived from the input.
func FuzzPartition(f *testing.F) {
	for _, seed := range []string{
		"", "\x01\x01\x02\x03", "\x05\x01\x00\x01\x11\x00\x02\x01\x00\x05\x00",
		"\x00\x01\x00\x01\x01\x00\x00\x00\x09\x04\x00\x01\x01\x05\x01\x00\x03",
		"\x01\x02\x01\x01\x04\x00\x01\x01\x05\x00\x10\x00\x04\x00\x02\x08\x04\x01",
		"\x09\x03\x00\x01\x02\x04\x01\x00\x00\x08\x00\x04\x01\x01\x01\x01\x0a",
		"\x00\x00\x04\x07\x08\x00\x02\x04\x00\x01\x03\x04\x11\x08\x05\x02\x02",
		"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff",
		"\x7fELF\x02\x01\x01\x00",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		g := &condGen{data: data}
		src := g.source()
		tail := data[g.pos:]
		dir := t.TempDir()
		writeTree(t, dir, map[string]string{"a.yar": src})
		rs, err := Load(LoadOptions{Dirs: []string{dir}})
		if err != nil || len(rs.Broken) > 0 {
			t.Skipf("generated rules do not compile: %v %v\n%s", err, rs.Broken, src)
		}
		defer rs.Close()
		if !rs.Partition.InForce {
			t.Fatalf("partition not in force: %s\n%s", rs.Partition.Reason, src)
		}
		var samples []sample
		for _, head := range []string{"MZ", "\x7fELF", "\xce\xfa\xed\xfe", "\xfe\xed\xfa\xcf", "\xca\xfe\xba\xbe\x00\x00\x00\x02",
			"\xca\xfe\xba\xbe\x00\x00\x00\x34", "\xbe\xba\xfe\xca", ""} {
			samples = append(samples, sample{fmt.Sprintf("%q+tail", head), append([]byte(head), tail...)})
		}
		for _, short := range []string{"", "M", "MZ", "MZ\x90", "\x7fEL", "\xca\xfe\xba\xbe"} {
			samples = append(samples, sample{fmt.Sprintf("%q", short), []byte(short)})
		}
		for n := range min(len(tail), 5) {
			samples = append(samples, sample{fmt.Sprintf("tail[:%d]", n), tail[:n]})
		}
		w := newWholeSet(t, rs, dir)
		if compareScans(t, rs, w, samples); t.Failed() {
			t.Logf("rules:\n%s", src)
		}
	})
}
