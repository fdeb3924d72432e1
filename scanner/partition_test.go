package scanner

import (
	"bytes"
	"encoding/base64"
	"go/build"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/VirusTotal/gyp"
	"github.com/VirusTotal/gyp/ast"
	"github.com/google/go-cmp/cmp"
	"github.com/hillu/go-yara/v4"
)

// wholeSet compiles the rule directories without a partition, as Load did
// before it: the reference the class sets are compared with. The scanner
// reports through rs's index, as Scanner does.
type wholeSet struct {
	rules *yara.Rules
	ys    *yara.Scanner
	col   *collector
}

func newWholeSet(t testing.TB, rs *Ruleset, dirs ...string) *wholeSet {
	t.Helper()
	var abs []string
	for _, d := range dirs {
		a, err := filepath.Abs(d)
		if err != nil {
			t.Fatal(err)
		}
		abs = append(abs, a)
	}
	l, err := listDirs(abs)
	if err != nil {
		t.Fatal(err)
	}
	m := merge(l.Entries)
	var inputs []input
	for _, f := range m.Files {
		inputs = append(inputs, readInput(f))
	}
	c, err := compile(inputs, l.Roots)
	if err != nil || c.rules == nil {
		t.Fatalf("compiling the whole set: %v", err)
	}
	ys, err := yara.NewScanner(c.rules)
	if err != nil {
		t.Fatal(err)
	}
	w := &wholeSet{rules: c.rules, ys: ys, col: &collector{rs: rs}}
	ys.SetFlags(scanFlagsNoTryCatch).SetTimeout(10 * time.Second).SetCallback(w.col)
	t.Cleanup(func() { ys.Destroy(); c.rules.Destroy() })
	return w
}

func (w *wholeSet) scan(t testing.TB, buf []byte, v Vars) []Match {
	t.Helper()
	for i, name := range externals {
		val := [...]string{v.Filename, v.Filepath, v.Extension, v.Filetype, v.Owner}[i]
		if err := w.ys.DefineVariable(name, val); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.ys.ScanMem(buf); err != nil {
		t.Fatalf("whole set: %v", err)
	}
	var out []Match
	if len(w.col.matches) > 0 {
		out = slices.Clone(w.col.matches)
	}
	clear(w.col.matches)
	w.col.matches = w.col.matches[:0]
	return out
}

// sample is content to scan, with a name for messages.
type sample struct {
	name string
	data []byte
}

// compareScans scans every sample with the whole set and with the
// partitioned Scanner of rs and fails on any difference. It returns the
// number of distinct rules that matched.
func compareScans(t *testing.T, rs *Ruleset, w *wholeSet, samples []sample) int {
	t.Helper()
	s := mustScanner(t, rs)
	matched := map[string]bool{}
	for _, smp := range samples {
		v := VarsFor("/tmp/"+smp.name, smp.data, "root")
		want := w.scan(t, smp.data, v)
		got, err := s.Scan(smp.data, v)
		if err != nil {
			t.Fatalf("%s: %v", smp.name, err)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("%s (class %v): partitioned matches differ from the whole set's (-whole +partitioned):\n%s", smp.name, ClassOf(smp.data), diff)
		}
		for _, m := range want {
			matched[m.Namespace+":"+m.Rule] = true
		}
	}
	return len(matched)
}

// fixedSamples are headers of every class, and the short and odd ones.
func fixedSamples() []sample {
	pad := bytes.Repeat([]byte{0}, 64)
	return []sample{
		{"empty", nil},
		{"one-byte", []byte("M")},
		{"MZ", []byte("MZ")},
		{"three-byte", []byte("MZ\x90")},
		{"elf-short", []byte("\x7fEL")},
		{"elf-magic", []byte("\x7fELF")},
		{"text", []byte("int main(void) { return 0; }\n")},
		{"macho-32", append([]byte("\xce\xfa\xed\xfe"), pad...)},
		{"macho-64", append([]byte("\xcf\xfa\xed\xfe"), pad...)},
		{"macho-32-be", append([]byte("\xfe\xed\xfa\xce"), pad...)},
		{"macho-fat", append([]byte("\xca\xfe\xba\xbe\x00\x00\x00\x02"), pad...)},
		{"macho-fat-le", append([]byte("\xbe\xba\xfe\xca\x02\x00\x00\x00"), pad...)},
		{"java-class", append([]byte("\xca\xfe\xba\xbe\x00\x00\x00\x34"), pad...)},
		{"cafebabe-short", []byte("\xca\xfe\xba\xbe")},
		{"eicar", eicar()},
		{"zeros", make([]byte, 4096)},
	}
}

// systemSamples are real executables of this machine and Go's test data:
// ELF files from /usr/bin and /usr/lib, PE files, Mach-O files.
func systemSamples(t *testing.T, max int) []sample {
	var out []sample
	add := func(name string, data []byte) {
		if len(data) > 2<<20 {
			data = data[:2<<20]
		}
		out = append(out, sample{name, data})
	}
	for _, pat := range []string{"/usr/bin/*", "/usr/lib/x86_64-linux-gnu/*.so*"} {
		paths, _ := filepath.Glob(pat)
		n := 0
		for _, p := range paths {
			if n == max {
				break
			}
			data := readHead(p, 4<<20)
			if ClassOf(data) == ClassELF {
				add(p, data)
				n++
			}
		}
	}
	goroot := build.Default.GOROOT
	pes, _ := filepath.Glob(filepath.Join(goroot, "src/debug/pe/testdata/*"))
	for _, p := range pes {
		if data := readHead(p, 4<<20); ClassOf(data) == ClassPE {
			add(p, data)
		}
	}
	machos, _ := filepath.Glob(filepath.Join(goroot, "src/debug/macho/testdata/*.base64"))
	for _, p := range machos {
		enc, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		if data, err := base64.StdEncoding.DecodeString(string(bytes.TrimSpace(enc))); err == nil {
			add(p, data)
		}
	}
	if len(out) == 0 {
		t.Fatal("no executable found on this machine")
	}
	return out
}

func readHead(p string, n int64) []byte {
	f, err := os.Open(p)
	if err != nil {
		return nil
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return nil
	}
	data, _ := io.ReadAll(io.LimitReader(f, n))
	return data
}

// plantedSamples builds, for each rule of the files, content of the rule's
// class with the bytes of its strings planted, so that many rules match:
// base is a real file of the class when there is one.
func plantedSamples(t *testing.T, files []string, bases map[Class][]byte) []sample {
	var out []sample
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		rs, err := gyp.ParseString(string(data))
		if err != nil {
			continue
		}
		for _, r := range rs.Rules {
			var cond strings.Builder
			r.Condition.WriteSource(&cond)
			class := ClassOther
			switch {
			case strings.Contains(cond.String(), "uint16(0) == 23117"):
				class = ClassPE
			case strings.Contains(cond.String(), "uint32(0) == 1179403647"):
				class = ClassELF
			}
			buf := slices.Clone(bases[class])
			for _, s := range r.Strings {
				buf = append(buf, 0, 0)
				buf = append(buf, plant(s)...)
			}
			out = append(out, sample{filepath.Base(f) + ":" + r.Identifier, buf})
		}
	}
	return out
}

// plant returns bytes that a string matches, when it can make some.
func plant(s ast.String) []byte {
	switch s := s.(type) {
	case *ast.TextString:
		b, ok := unescape(s.Value)
		if !ok || s.Xor || s.Base64 || s.Base64Wide {
			return nil
		}
		if s.Wide && !s.ASCII {
			var w []byte
			for _, c := range b {
				w = append(w, c, 0)
			}
			return w
		}
		return b
	case *ast.HexString:
		return plantHex(s.Tokens)
	}
	return nil
}

func plantHex(tokens ast.HexTokens) []byte {
	var b []byte
	for _, t := range tokens {
		switch t := t.(type) {
		case *ast.HexBytes:
			for i, v := range t.Bytes {
				c := v & t.Masks[i]
				if t.Nots[i] {
					c = ^v & t.Masks[i]
					if c == v&t.Masks[i] {
						c ^= 1
					}
				}
				b = append(b, c)
			}
		case *ast.HexJump:
			b = append(b, make([]byte, t.Start)...)
		case *ast.HexOr:
			if len(t.Alternatives) > 0 {
				if alt, ok := t.Alternatives[0].(ast.HexTokens); ok {
					b = append(b, plantHex(alt)...)
				}
			}
		}
	}
	return b
}

// ruleSetDirs returns the shipped rules and the ReversingLabs set, each a
// rule directory, or skips when the ReversingLabs set is absent.
func ruleSetDirs(t *testing.T) ([]string, []string) {
	rl := reversingLabsDirs(t)
	dirs := append([]string{shippedRules}, rl...)
	var files []string
	for _, d := range dirs {
		fs, _ := filepath.Glob(filepath.Join(d, "*.yar*"))
		files = append(files, fs...)
	}
	return dirs, files
}

// TestPartitionMatchesWholeSet is the differential test: on samples of
// every class, the partitioned scanner reports exactly what the whole set
// reports (rule, namespace, tags, metadata, string matches), with the
// shipped rules and the ReversingLabs set. FANGUARD_PARTITION_LARGE=1
// scans many more system files.
func TestPartitionMatchesWholeSet(t *testing.T) {
	dirs, files := ruleSetDirs(t)
	rs := mustLoad(t, dirs...)
	if !rs.Partition.InForce {
		t.Fatalf("partition not in force: %s", rs.Partition.Reason)
	}
	w := newWholeSet(t, rs, dirs...)
	max := 15
	if os.Getenv("FANGUARD_PARTITION_LARGE") != "" {
		max = 1000
	}
	system := systemSamples(t, max)
	bases := map[Class][]byte{ClassOther: []byte("text ")}
	for _, s := range system {
		c := ClassOf(s.data)
		if b, ok := bases[c]; !ok || len(s.data) < len(b) {
			bases[c] = s.data // the smallest, to keep the scans short
		}
	}
	if bases[ClassPE] == nil || bases[ClassELF] == nil {
		t.Fatalf("no PE or ELF base file found: %d samples", len(system))
	}
	samples := append(fixedSamples(), system...)
	samples = append(samples, plantedSamples(t, files, bases)...)
	classes := map[Class]int{}
	for _, s := range samples {
		classes[ClassOf(s.data)]++
	}
	for _, c := range Classes {
		if classes[c] == 0 {
			t.Errorf("no sample of class %v", c)
		}
	}
	start := time.Now()
	n := compareScans(t, rs, w, samples)
	t.Logf("%d samples (by class %v), %d distinct rules matched, in %v", len(samples), classes, n, time.Since(start).Round(time.Millisecond))
	// The planted samples must make many rules match, or the test
	// compares nothing but empty answers.
	if n < 200 {
		t.Errorf("only %d distinct rules matched; want at least 200", n)
	}
}

// classesOf returns, per rule "namespace:identifier" of rs, the classes
// whose set holds it.
func classesOf(rs *Ruleset) map[string][]Class {
	out := map[string][]Class{}
	for _, c := range Classes {
		if rs.classes[c] == nil {
			continue
		}
		for _, r := range rs.classes[c].GetRules() {
			k := r.Namespace() + ":" + r.Identifier()
			out[k] = append(out[k], c)
		}
	}
	return out
}

var (
	other = ClassOther
	pe    = ClassPE
	elf   = ClassELF
	macho = ClassMachO
)

// TestAnalysis checks which class sets hold a rule, for conditions of
// every form the analysis knows, and that the partition still gives the
// whole set's matches on samples of each class.
func TestAnalysis(t *testing.T) {
	all := []Class{other, pe, elf, macho}
	tests := []struct {
		name string
		src  string             // a.yar
		want map[string][]Class // rule → classes holding it
	}{
		{"true", `rule r { condition: true }`, map[string][]Class{"r": all}},
		{"false", `rule r { condition: false }`, map[string][]Class{}},
		{"uint16 MZ", `rule r { condition: uint16(0) == 0x5A4D }`, map[string][]Class{"r": {pe}}},
		{"reversed operands", `rule r { condition: 0x5A4D == uint16(0) }`, map[string][]Class{"r": {pe}}},
		{"uint16be", `rule r { condition: uint16be(0) == 0x4D5A }`, map[string][]Class{"r": {pe}}},
		{"uint32be ELF", `rule r { condition: uint32be(0) == 0x7F454C46 }`, map[string][]Class{"r": {elf}}},
		{"uint32 ELF", `rule r { condition: uint32(0) == 0x464C457F }`, map[string][]Class{"r": {elf}}},
		{"uint8 M", `rule r { condition: uint8(0) == 0x4D }`, map[string][]Class{"r": {other, pe}}},
		{"uint8 0xCA", `rule r { condition: uint8(0) == 0xCA }`, map[string][]Class{"r": {other, macho}}},
		{"uint32 fat magic", `rule r { condition: uint32be(0) == 0xCAFEBABE }`, map[string][]Class{"r": {other, macho}}},
		{"uint32 thin magic", `rule r { condition: uint32(0) == 0xFEEDFACE }`, map[string][]Class{"r": {macho}}},
		{"uint32 low MZ", `rule r { condition: uint32(0) == 0x00905A4D }`, map[string][]Class{"r": {pe}}},
		{"uint32 out of range", `rule r { condition: uint32(0) == 0x1FFFFFFFF }`, map[string][]Class{}},
		{"not MZ", `rule r { condition: not (uint16(0) == 0x5A4D) }`, map[string][]Class{"r": {other, elf, macho}}},
		{"!= MZ", `rule r { condition: uint16(0) != 0x5A4D }`, map[string][]Class{"r": {other, elf, macho}}},
		{"or", `rule r { condition: uint16(0) == 0x5A4D or uint32(0) == 0x464C457F }`, map[string][]Class{"r": {pe, elf}}},
		{"and contradiction", `rule r { condition: uint16(0) == 0x5A4D and uint32(0) == 0x464C457F }`, map[string][]Class{}},
		// On a 1-byte file uint16(0) is undefined: not undefined is
		// undefined, so the rule cannot match there, but 2-byte Other
		// files exist.
		{"not on short files", `rule r { condition: not (uint16(0) == 0x1234) }`, map[string][]Class{"r": all}},
		{"defined", `rule r { condition: not defined uint32(0) }`, map[string][]Class{"r": {other, pe}}},
		{"string at 0", "rule r { strings: $a = \"MZ\" condition: $a at 0 }", map[string][]Class{"r": {pe}}},
		{"string at 0 nocase", "rule r { strings: $a = \"MZ\" nocase condition: $a at 0 }", map[string][]Class{"r": all}},
		{"string at 0 wide", "rule r { strings: $a = \"MZ\" wide condition: $a at 0 }", map[string][]Class{"r": all}},
		{"hex at 0", "rule r { strings: $a = { 7F 45 4C 46 ?? 01 } condition: $a at 0 }", map[string][]Class{"r": {elf}}},
		{"hex escape at 0", "rule r { strings: $a = \"\\x7fELF\" condition: $a at 0 }", map[string][]Class{"r": {elf}}},
		{"string anywhere", "rule r { strings: $a = \"MZ\" condition: $a }", map[string][]Class{"r": all}},
		{"pe field", "import \"pe\"\nrule r { condition: pe.number_of_sections > 2 }", map[string][]Class{"r": {pe}}},
		{"pe function", "import \"pe\"\nrule r { condition: pe.imports(\"kernel32.dll\") }", map[string][]Class{"r": {pe}}},
		{"pe is_pe", "import \"pe\"\nrule r { condition: pe.is_pe }", map[string][]Class{"r": {pe}}},
		{"not pe is_pe", "import \"pe\"\nrule r { condition: not pe.is_pe }", map[string][]Class{"r": all}},
		{"pe constant", "import \"pe\"\nrule r { condition: pe.MACHINE_I386 == 0x14c }", map[string][]Class{"r": all}},
		{"not pe field", "import \"pe\"\nrule r { condition: not (pe.number_of_sections > 2) }", map[string][]Class{"r": {pe}}},
		{"defined pe field", "import \"pe\"\nrule r { condition: not defined pe.number_of_sections }", map[string][]Class{"r": all}},
		{"pe loop", "import \"pe\"\nrule r { condition: for any i in (0..pe.number_of_signatures): (pe.signatures[i].subject contains \"x\") }", map[string][]Class{"r": {pe}}},
		{"pe loop all", "import \"pe\"\nrule r { condition: for all i in (0..pe.number_of_signatures): (pe.signatures[i].subject contains \"x\") }", map[string][]Class{"r": all}},
		{"elf field", "import \"elf\"\nrule r { condition: elf.type == elf.ET_EXEC }", map[string][]Class{"r": {elf}}},
		{"macho field", "import \"macho\"\nrule r { condition: macho.ncmds > 0 }", map[string][]Class{"r": {other, macho}}},
		{"dotnet", "import \"dotnet\"\nrule r { condition: dotnet.is_dotnet == 1 }", map[string][]Class{"r": {pe}}},
		{"math", "import \"math\"\nrule r { condition: math.entropy(0, filesize) > 7 }", map[string][]Class{"r": all}},
		{"external", `rule r { condition: filename == "x" }`, map[string][]Class{"r": all}},
		{"reference", "rule a { condition: uint16(0) == 0x5A4D }\nrule b { condition: a and filesize > 10 }",
			map[string][]Class{"a": {pe}, "b": {pe}}},
		{"not reference", "rule a { condition: uint16(0) == 0x5A4D }\nrule b { condition: not a }",
			map[string][]Class{"a": all, "b": all}}, // a is needed by b everywhere
		{"private referenced", "private rule a { condition: filesize > 1 }\nrule b { condition: a and uint16(0) == 0x5A4D }",
			map[string][]Class{"a": {pe}, "b": {pe}}},
		{"private alone", "private rule a { condition: true }", map[string][]Class{}},
		{"rule set", "rule a1 { condition: uint16(0) == 0x5A4D }\nrule a2 { condition: true }\nrule b { condition: any of (a*) and uint32(0) == 0x464C457F }",
			map[string][]Class{"a1": {pe, elf}, "a2": all, "b": {elf}}},
		{"global", "global rule g { condition: filesize > 0 }\nrule b { condition: uint16(0) == 0x5A4D }",
			map[string][]Class{"g": all, "b": {pe}}},
		{"global magic", "global rule g { condition: uint16(0) == 0x5A4D }\nrule b { condition: true }",
			map[string][]Class{"g": {pe}, "b": {pe}}},
		{"private global", "global private rule g { condition: filesize > 0 }\nrule b { condition: uint32(0) == 0x464C457F }",
			map[string][]Class{"g": {elf}, "b": {elf}}},
		{"include", "include \"inc.yar\"\nrule b { condition: uint16(0) == 0x5A4D }", map[string][]Class{"b": all, "i": all}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			writeTree(t, dir, map[string]string{"a.yar": tt.src, "inc.yar": "rule i { condition: false }\n"})
			rs := mustLoad(t, dir)
			if !rs.Partition.InForce {
				t.Fatalf("partition not in force: %s", rs.Partition.Reason)
			}
			got := map[string][]Class{}
			for k, cs := range classesOf(rs) {
				if ns, id, _ := strings.Cut(k, ":"); ns == "a.yar" {
					got[id] = cs
				}
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("classes holding each rule (-want +got):\n%s", diff)
			}
			compareScans(t, rs, newWholeSet(t, rs, dir), fixedSamples())
		})
	}
}

// TestClassFacts checks the facts the analysis uses against ClassOf on
// every head of up to 8 bytes over the bytes that matter, for byte
// strings of up to 4 bytes over the same alphabet.
func TestClassFacts(t *testing.T) {
	alphabet := []byte{0x00, 0x01, 0x02, 0x13, 0x14, 0x34, 'M', 'Z', 0x7f, 'E', 'L', 'F', 0xfe, 0xed, 0xfa, 0xce, 0xcf, 0xca, 0xba, 0xbe, 0xbf}
	// heads: every string up to 4 bytes over a small alphabet, and the
	// fat headers with counts around the bound.
	var heads [][]byte
	var gen func(prefix []byte, n int)
	small := []byte{0x00, 'M', 'Z', 0x7f, 'E', 0xfe, 0xed, 0xce, 0xca, 0xbe}
	gen = func(prefix []byte, n int) {
		heads = append(heads, slices.Clone(prefix))
		if n == 0 {
			return
		}
		for _, b := range small {
			gen(append(prefix, b), n-1)
		}
	}
	gen(nil, 4)
	for _, m := range []string{"\xca\xfe\xba\xbe", "\xca\xfe\xba\xbf", "\xfe\xed\xfa\xce", "\x7fELF", "MZ\x00\x00"} {
		for _, count := range []byte{0, 1, 2, 19, 20, 0x34} {
			for _, hi := range []byte{0, 1} {
				h := []byte(m + string([]byte{0, 0, hi, count}))
				heads = append(heads, h, h[:5], h[:6], h[:7])
			}
		}
	}
	var bs [][]byte
	gen2 := func() {
		var g func(prefix []byte, n int)
		g = func(prefix []byte, n int) {
			if len(prefix) > 0 {
				bs = append(bs, slices.Clone(prefix))
			}
			if n == 0 {
				return
			}
			for _, b := range alphabet {
				g(append(prefix, b), n-1)
			}
		}
		g(nil, 2)
	}
	gen2()
	for _, m := range []string{"MZ\x90\x00", "\x7fELF", "\xca\xfe\xba\xbe", "\xfe\xed\xfa\xce", "\xce\xfa\xed\xfe", "\x7fEL", "MZ"} {
		bs = append(bs, []byte(m))
	}
	byClass := map[Class][][]byte{}
	for _, h := range heads {
		byClass[ClassOf(h)] = append(byClass[ClassOf(h)], h)
	}
	for _, c := range Classes {
		for _, b := range bs {
			var start, differ, short bool
			for _, h := range byClass[c] {
				// h stands for content exactly h; it also
				// stands for longer content when len(h) ≥ 8.
				if len(h) >= len(b) && bytes.HasPrefix(h, b) {
					start = true
				}
				if len(h) >= len(b) && !bytes.HasPrefix(h, b) {
					differ = true
				}
				if len(h) < len(b) {
					short = true
				}
			}
			// The enumeration is a witness search: a fact that
			// says "impossible" must have no witness.
			if start && !canStart(c, b) {
				t.Errorf("%v: canStart(%q) = false, but a head of the class starts with it", c, b)
			}
			if differ && !canDiffer(c, b) {
				t.Errorf("%v: canDiffer(%q) = false, but a head of the class differs", c, b)
			}
			if short && !canShort(c, len(b)) {
				t.Errorf("%v: canShort(%d) = false, but a shorter head exists", c, len(b))
			}
		}
	}
	for _, tt := range []struct {
		head string
		want Class
	}{
		{"", other}, {"M", other}, {"MZ", pe}, {"\x7fELF", elf}, {"\x7fEL", other},
		{"\xce\xfa\xed\xfe", macho}, {"\xca\xfe\xba\xbe\x00\x00\x00\x02", macho},
		{"\xca\xfe\xba\xbe\x00\x00\x00\x34", other}, {"\xca\xfe\xba\xbe", other}, {"\xbe\xba\xfe\xca\x02\x00\x00\x00", other},
	} {
		if got := ClassOf([]byte(tt.head)); got != tt.want {
			t.Errorf("ClassOf(%q) = %v, want %v", tt.head, got, tt.want)
		}
	}
}

// TestEmptyMatches checks the verdict on empty content: known only when
// it can depend on nothing but the content, and then what a scan of empty
// content gives.
func TestEmptyMatches(t *testing.T) {
	tests := []struct {
		name      string
		src       string
		wantKnown bool
		wantRules []string
	}{
		{"nothing matches", "rule r { condition: uint16(0) == 0x5A4D }", true, nil},
		{"filesize", "rule r { condition: filesize == 0 }\nrule s { condition: filesize > 0 }", true, []string{"a.yar:r"}},
		{"not a string", "rule r { strings: $a = \"x\" condition: not $a }", true, []string{"a.yar:r"}},
		{"pe on other", "import \"pe\"\nrule r { condition: not pe.is_pe }", true, []string{"a.yar:r"}},
		{"hash", "import \"hash\"\nrule r { condition: hash.md5(\"abc\") == \"900150983cd24fb0d6963f7d28e17f72\" }", true, []string{"a.yar:r"}},
		{"external", "rule r { condition: filename == \"x\" }", false, nil},
		{"time", "import \"time\"\nrule r { condition: time.now() > 0 }", false, nil},
		{"external only in PE rules", "rule r { condition: uint16(0) == 0x5A4D and filename == \"x\" }", true, nil},
		{"include", "include \"inc.yar\"\nrule r { condition: true }", false, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			writeTree(t, dir, map[string]string{"a.yar": tt.src, "inc.yar": "rule i { condition: false }\n"})
			rs := mustLoad(t, dir)
			got, known := rs.EmptyMatches()
			if known != tt.wantKnown {
				t.Fatalf("EmptyMatches known = %v, want %v", known, tt.wantKnown)
			}
			if !known {
				return
			}
			if diff := cmp.Diff(tt.wantRules, matchNames(got)); diff != "" {
				t.Errorf("EmptyMatches (-want +got):\n%s", diff)
			}
			scanned, err := mustScanner(t, rs).Scan(nil, Vars{Filename: "x", Owner: "root"})
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(scanned, got); diff != "" {
				t.Errorf("EmptyMatches differs from a scan of empty content (-scan +EmptyMatches):\n%s", diff)
			}
		})
	}
}

// TestPartitionNotSplit checks that a file the parser cannot write back
// faithfully goes into every class as it is, and the partition still
// gives the whole set's matches.
func TestPartitionNotSplit(t *testing.T) {
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{
		// Written back, the float would be 0.000000.
		"a.yar": "import \"math\"\nrule a { condition: uint16(0) == 0x5A4D and math.entropy(0, filesize) >= 0.0000001 }\n",
		"b.yar": "rule b { condition: uint16(0) == 0x5A4D }\n",
	})
	rs := mustLoad(t, dir)
	if len(rs.Broken) > 0 {
		t.Fatalf("broken: %v", rs.Broken)
	}
	if !rs.Partition.InForce || len(rs.Partition.Whole) != 1 || !strings.Contains(rs.Partition.Whole[0].Msg, "parses differently") {
		t.Fatalf("Partition = %+v; want in force with a.yar whole", rs.Partition)
	}
	got := classesOf(rs)
	if diff := cmp.Diff(map[string][]Class{"a.yar:a": {other, pe, elf, macho}, "b.yar:b": {pe}}, got); diff != "" {
		t.Errorf("classes (-want +got):\n%s", diff)
	}
	for _, cs := range rs.Partition.Classes {
		if !slices.Contains(cs.Imports, "math") {
			t.Errorf("class %v does not import math for the whole file: %v", cs.Class, cs.Imports)
		}
	}
	compareScans(t, rs, newWholeSet(t, rs, dir), append(fixedSamples(), sample{"mz", []byte("MZ\x90\x00abcdefgh")}))
}

// BenchmarkScanSmall measures the cost of one scan of small content with
// the shipped rules and the ReversingLabs set, whole and partitioned.
func BenchmarkScanSmall(b *testing.B) {
	root := reversingLabsDir()
	if root == "" {
		b.Skip("ReversingLabs rules not found")
	}
	des, _ := os.ReadDir(root)
	dirs := []string{shippedRules}
	for _, de := range des {
		if de.IsDir() {
			dirs = append(dirs, filepath.Join(root, de.Name()))
		}
	}
	rs := mustLoad(b, dirs...)
	w := newWholeSet(b, rs, dirs...)
	s := mustScanner(b, rs)
	csrc := []byte(strings.Repeat("#include <stdio.h>\nint main(void) { printf(\"hello\\n\"); return 0; }\n", 30))
	for _, in := range []struct {
		name string
		data []byte
	}{{"empty", nil}, {"c-source", csrc}} {
		v := VarsFor("/src/x.c", in.data, "root")
		b.Run("whole/"+in.name, func(b *testing.B) {
			b.ReportAllocs()
			for range b.N {
				w.scan(b, in.data, v)
			}
		})
		b.Run("partition/"+in.name, func(b *testing.B) {
			b.ReportAllocs()
			for range b.N {
				if _, err := s.Scan(in.data, v); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
