package scanner

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"os"
	"reflect"
	"regexp"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/VirusTotal/gyp"
	"github.com/VirusTotal/gyp/ast"
	"github.com/hillu/go-yara/v4"
)

// Partition says how the rules are split by class (see ClassOf): each
// class has its own compiled set holding only the rules that can match
// content of that class, and a scan runs the set of its content's class.
// It is a plain value, read-only within a Ruleset.
type Partition struct {
	// InForce is true when scans use the class sets; false when every
	// scan runs the whole set (Reason says why).
	InForce bool
	Reason  string
	// Classes has one entry per class, in the order of Classes, when the
	// partition is in force.
	Classes []ClassSet
	// Whole lists the files that go into every class as they are, with
	// why: they use include, or the parser cannot read them or write them
	// back faithfully.
	Whole []FileError
}

// ClassSet describes the compiled set of one class.
type ClassSet struct {
	Class   Class
	Rules   int      // rules in the set, private ones included
	Imports []string // modules the set imports, sorted (of a whole file, those the parser read)
}

// emptyModules are the modules whose results are a function of the
// content alone (checked in libyara 4.2.3): a set that uses no other
// module and no external variable gives the same verdict on every empty
// file.
var emptyModules = []string{"pe", "elf", "macho", "dotnet", "hash", "math"}

// EmptyMatches returns the rules that match empty content, as Scan would
// return them, and whether that answer holds for every empty file: known
// is false when the rules scanned for empty content use an external
// variable or a module whose result depends on more than the content
// (such as time), or when the partition is not in force. Each call
// returns fresh copies.
func (rs *Ruleset) EmptyMatches() (matches []Match, known bool) {
	if !rs.emptyKnown {
		return nil, false
	}
	for _, m := range rs.empty {
		m.Tags = slices.Clone(m.Tags)
		m.Meta = maps.Clone(m.Meta)
		m.Strings = slices.Clone(m.Strings)
		matches = append(matches, m)
	}
	return matches, true
}

// partFile is a rule file as the partition sees it.
type partFile struct {
	in    input
	whole string       // why it goes into every class as it is; "" when split
	rs    *ast.RuleSet // parsed, when split
	can   [][numClasses]bool
	refs  [][]int // per rule: the rules it may reference (indexes)
	users [][]string
}

// parseFile reads and analyzes one rule file. A file that is not split
// comes back with whole set.
func parseFile(in input) (*partFile, error) {
	pf := &partFile{in: in}
	data, err := os.ReadFile(in.Path)
	if err != nil || hexSum(data) != in.sum {
		return nil, fmt.Errorf("reading %s: %w", in.Path, errChanged)
	}
	rs, err := parse(data)
	pf.rs = rs // for the imports of a whole file, when it parsed
	if err != nil {
		pf.whole = err.Error()
		return pf, nil
	}
	facts := &ruleFacts{imports: map[string]bool{}, index: map[string]int{}}
	for _, m := range rs.Imports {
		facts.imports[m] = true
	}
	for i, r := range rs.Rules {
		names := ruleRefs(r.Condition)
		pf.users = append(pf.users, names)
		var refs []int
		for _, n := range names {
			prefix, wild := strings.CutSuffix(n, "*")
			for j := range i {
				id := rs.Rules[j].Identifier
				if id == n || wild && strings.HasPrefix(id, prefix) {
					refs = append(refs, j)
				}
			}
		}
		pf.refs = append(pf.refs, refs)
		strs := stringPrefixes(r.Strings)
		var can [numClasses]bool
		for _, c := range Classes {
			can[c] = facts.canMatch(r.Condition, strs, c)
		}
		facts.can = append(facts.can, can)
		facts.index[r.Identifier] = i
	}
	pf.can = facts.can
	return pf, nil
}

// parseFiles parses and analyzes the files, on every CPU: parsing is most
// of the partition's cost.
func parseFiles(good []input) ([]*partFile, error) {
	files := make([]*partFile, len(good))
	errs := make([]error, len(good))
	next := make(chan int)
	var wg sync.WaitGroup
	for range min(runtime.GOMAXPROCS(0), len(good)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				files[i], errs[i] = parseFile(good[i])
			}
		}()
	}
	for i := range good {
		next <- i
	}
	close(next)
	wg.Wait()
	return files, errors.Join(errs...)
}

// zeroJump finds a hex jump written [0] or [0-0], which the parser keeps as
// an unbounded jump and would write back as [-].
var zeroJump = regexp.MustCompile(`\[\s*0\s*(-\s*0\s*)?\]`)

// parse parses a rule file and checks that writing it back gives the same
// rules: an error says why the file cannot be split (with the parsed rules
// when the parser could read it).
func parse(data []byte) (*ast.RuleSet, error) {
	rs, err := gyp.ParseString(string(data))
	if err != nil {
		return nil, fmt.Errorf("not split: the parser refuses it: %v", err)
	}
	if len(rs.Includes) > 0 {
		return rs, errors.New("not split: uses include")
	}
	var b bytes.Buffer
	if err := rs.WriteSource(&b); err != nil {
		return rs, fmt.Errorf("not split: cannot write it back: %v", err)
	}
	again, err := gyp.ParseString(b.String())
	if err != nil {
		return rs, fmt.Errorf("not split: written back, it does not parse: %v", err)
	}
	if !reflect.DeepEqual(stripLines(again), stripLines(cloneRules(rs))) {
		return rs, errors.New("not split: written back, it parses differently")
	}
	if zeroJump.Match(data) {
		return rs, errors.New("not split: a hex jump [0] would be written back as [-]")
	}
	return rs, nil
}

// cloneRules parses nothing: it returns a shallow copy of rs whose rules
// and strings may have their line numbers cleared without touching rs.
func cloneRules(rs *ast.RuleSet) *ast.RuleSet {
	out := *rs
	out.Rules = make([]*ast.Rule, len(rs.Rules))
	for i, r := range rs.Rules {
		c := *r
		c.Strings = make([]ast.String, len(r.Strings))
		for j, s := range r.Strings {
			switch s := s.(type) {
			case *ast.TextString:
				v := *s
				c.Strings[j] = &v
			case *ast.HexString:
				v := *s
				c.Strings[j] = &v
			case *ast.RegexpString:
				v := *s
				c.Strings[j] = &v
			default:
				c.Strings[j] = s
			}
		}
		out.Rules[i] = &c
	}
	return &out
}

// stripLines clears the line numbers of rs (a copy), which differ between
// a file and its rewrite.
func stripLines(rs *ast.RuleSet) *ast.RuleSet {
	for _, r := range rs.Rules {
		r.LineNo = 0
		for _, s := range r.Strings {
			switch s := s.(type) {
			case *ast.TextString:
				s.LineNo = 0
			case *ast.HexString:
				s.LineNo = 0
			case *ast.RegexpString:
				s.LineNo = 0
			}
		}
	}
	return rs
}

// keep returns which rules of the file go into the set of class c: the
// rules that can match c and are not private, then, when there is any,
// every global rule of the file (a global rule's verdict applies to its
// whole namespace), then every rule they may reference, transitively.
// When a global rule cannot match c, no rule of the namespace can be
// reported on c, and none is kept.
func (pf *partFile) keep(c Class) []bool {
	keep := make([]bool, len(pf.rs.Rules))
	var todo []int
	for i, r := range pf.rs.Rules {
		if r.Global && !pf.can[i][c] {
			return nil
		}
		if !r.Private && pf.can[i][c] {
			todo = append(todo, i)
		}
	}
	if len(todo) == 0 {
		return nil
	}
	for i, r := range pf.rs.Rules {
		if r.Global {
			todo = append(todo, i)
		}
	}
	for len(todo) > 0 {
		i := todo[len(todo)-1]
		todo = todo[:len(todo)-1]
		if keep[i] {
			continue
		}
		keep[i] = true
		todo = append(todo, pf.refs[i]...)
	}
	return keep
}

// source writes the kept rules with the imports they use; n is the number
// of rules written, mods the modules imported.
func (pf *partFile) source(keep []bool) (src string, n int, mods []string, err error) {
	used := map[string]bool{}
	var rules []*ast.Rule
	for i, k := range keep {
		if !k {
			continue
		}
		rules = append(rules, pf.rs.Rules[i])
		for _, name := range pf.users[i] {
			used[name] = true
		}
	}
	out := &ast.RuleSet{Rules: rules}
	for _, m := range pf.rs.Imports {
		if used[m] && !slices.Contains(out.Imports, m) {
			out.Imports = append(out.Imports, m)
		}
	}
	var b strings.Builder
	if err := out.WriteSource(&b); err != nil {
		return "", 0, nil, err
	}
	return b.String(), len(rules), out.Imports, nil
}

// classBuild is one class set being built.
type classBuild struct {
	rules   *yara.Rules
	count   int
	imports []string
	whole   bool // holds a file as it is
	usesExt bool // a kept rule may use an external variable
}

// partition builds the class sets from the files that compiled, checks
// them against the whole set (rs.rules, indexed) and, when all is well,
// puts them in force and frees the whole set. Problems never fail Load:
// the whole set then stays in force and Partition.Reason says why. The
// error is errChanged when a file changed since it was hashed.
func (rs *Ruleset) partition(good []input, roots []string) error {
	files, err := parseFiles(good)
	if err != nil {
		return err
	}
	for _, pf := range files {
		if pf.whole != "" {
			rs.Partition.Whole = append(rs.Partition.Whole, FileError{Path: pf.in.Path, Msg: pf.whole})
		}
	}
	var builds [numClasses]classBuild
	fail := func(err error) error {
		for _, b := range builds {
			if b.rules != nil {
				b.rules.Destroy()
			}
		}
		if errors.Is(err, errChanged) {
			return err
		}
		rs.Partition.Reason = err.Error()
		return nil
	}
	for _, c := range Classes {
		b, err := rs.buildClass(files, c, roots)
		if err != nil {
			return fail(fmt.Errorf("%v set: %w", c, err))
		}
		builds[c] = b
	}
	if err := rs.checkClasses(builds); err != nil {
		return fail(err)
	}
	rs.Partition.InForce = true
	rs.Partition.Classes = nil
	for _, c := range Classes {
		rs.classes[c] = builds[c].rules
		rs.Partition.Classes = append(rs.Partition.Classes, ClassSet{Class: c, Rules: builds[c].count, Imports: builds[c].imports})
	}
	// The parser's buffers are tens of megabytes of garbage by now: give
	// them back, the daemon's RSS is what an administrator sees.
	files = nil
	debug.FreeOSMemory()
	o := builds[ClassOther]
	rs.setEmpty(!o.whole && !o.usesExt && !slices.ContainsFunc(o.imports, func(m string) bool { return !slices.Contains(emptyModules, m) }))
	return nil
}

// setEmpty computes the verdict on empty content when known says that the
// Other set gives the same on every empty file.
func (rs *Ruleset) setEmpty(known bool) {
	rs.emptyKnown, rs.empty = false, nil
	if !known {
		return
	}
	var err error
	if rs.empty, err = rs.scanEmpty(); err != nil {
		rs.Warnings = append(rs.Warnings, FileError{Msg: "scanning empty content: " + err.Error()})
		return
	}
	rs.emptyKnown = true
}

// adoptPartition puts in force the partition read from the cache.
func (rs *Ruleset) adoptPartition(p *cachePartition, classes [numClasses]*yara.Rules) {
	rs.Partition = Partition{InForce: p.InForce, Reason: p.Reason, Whole: p.Whole, Classes: p.Classes}
	rs.classes = classes
	if p.InForce {
		rs.setEmpty(p.EmptyKnown)
	}
}

// buildClass compiles the set of class c.
func (rs *Ruleset) buildClass(files []*partFile, c Class, roots []string) (b classBuild, err error) {
	inc := &includer{roots: roots}
	comp, err := newCompiler(inc)
	if err != nil {
		return b, err
	}
	defer destroyCompiler(comp)
	mods := map[string]bool{}
	for _, pf := range files {
		if pf.whole != "" {
			_, fe, err := addFile(comp, inc, pf.in)
			if err != nil {
				return b, err
			}
			if fe != nil {
				return b, fe
			}
			b.whole = true
			b.count += rs.nsCount(pf.in.Name)
			if pf.rs != nil {
				for _, m := range pf.rs.Imports {
					mods[m] = true
				}
			}
			continue
		}
		keep := pf.keep(c)
		if keep == nil {
			continue
		}
		src, n, im, err := pf.source(keep)
		if err != nil {
			return b, fmt.Errorf("writing %s: %w", pf.in.Name, err)
		}
		for i, k := range keep {
			if k && slices.ContainsFunc(pf.users[i], isExternal) {
				b.usesExt = true
			}
		}
		if err := comp.AddString(src, pf.in.Name); err != nil {
			msg := err.Error()
			if len(comp.Errors) > 0 {
				msg = comp.Errors[0].Text
			}
			return b, fmt.Errorf("%s written back does not compile: %s", pf.in.Name, msg)
		}
		b.count += n
		for _, m := range im {
			mods[m] = true
		}
	}
	if b.count == 0 {
		return b, nil
	}
	b.rules, err = comp.GetRules()
	if err != nil {
		return b, fmt.Errorf("building rule set: %w", err)
	}
	for m := range mods {
		b.imports = append(b.imports, m)
	}
	slices.Sort(b.imports)
	return b, nil
}

// nsCount is the number of rules of the namespace ns in the whole set.
func (rs *Ruleset) nsCount(ns string) int {
	for _, f := range rs.Files {
		if f.Name == ns {
			return f.Rules
		}
	}
	return 0
}

// checkClasses checks each class set against the whole set: the number of
// rules, and for each rule its namespace, tags, metadata and strings.
func (rs *Ruleset) checkClasses(builds [numClasses]classBuild) error {
	type shape struct {
		tags, strs []string
		meta       []yara.Meta
	}
	whole := map[ruleKey]shape{}
	for _, r := range rs.rules.GetRules() {
		whole[ruleKey{r.Namespace(), r.Identifier()}] = shape{r.Tags(), stringIDs(r), r.Metas()}
	}
	for _, c := range Classes {
		b := builds[c]
		if b.rules == nil {
			continue
		}
		rules := b.rules.GetRules()
		if len(rules) != b.count {
			return fmt.Errorf("%v set holds %d rules, want %d", c, len(rules), b.count)
		}
		for _, r := range rules {
			k := ruleKey{r.Namespace(), r.Identifier()}
			w, ok := whole[k]
			if !ok {
				return fmt.Errorf("%v set: rule %s:%s is not in the whole set", c, k.ns, k.id)
			}
			if !slices.Equal(w.tags, r.Tags()) || !slices.Equal(w.strs, stringIDs(r)) || !reflect.DeepEqual(w.meta, r.Metas()) {
				return fmt.Errorf("%v set: rule %s:%s differs from the whole set's", c, k.ns, k.id)
			}
		}
	}
	return nil
}

func stringIDs(r yara.Rule) []string {
	var ids []string
	for _, s := range r.Strings() {
		ids = append(ids, s.Identifier())
	}
	return ids
}

// scanEmpty scans empty content with the Other set.
func (rs *Ruleset) scanEmpty() ([]Match, error) {
	r := rs.classes[ClassOther]
	if r == nil {
		return nil, nil
	}
	ys, err := yara.NewScanner(r)
	if err != nil {
		return nil, err
	}
	defer ys.Destroy()
	col := &collector{rs: rs}
	// A runaway loop must not hold up the load: YARA's shortest timeout.
	ys.SetFlags(scanFlagsNoTryCatch).SetTimeout(time.Second).SetCallback(col)
	if err := ys.ScanMem(nil); err != nil {
		return nil, err
	}
	return col.matches, nil
}
