package feeds

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"strings"

	"github.com/VirusTotal/gyp"
	"github.com/VirusTotal/gyp/ast"
)

// HoldBack returns the source of a rule file without the rules named in
// drop, nor the rules that reference them (directly or through other rules,
// by name in conditions, or through a rule set such as "any of (r*)"), and
// the names of every rule it removed (dependents included), sorted. The
// output starts with a comment saying it was rewritten by fanguard and which
// rules were held back; the imports and the other rules (global ones
// included) are kept, but not the file's comments.
//
// The file is parsed and written back with gyp. A file that gyp cannot
// parse, that uses include, or that written back would not give the same
// rules is an error: the caller then holds back the whole file. A name in
// drop that is not a rule of the file is an error too.
func HoldBack(src []byte, drop []string) (out []byte, removed []string, err error) {
	rs, err := gyp.ParseString(string(src))
	if err != nil {
		return nil, nil, fmt.Errorf("parsing rules: %w", err)
	}
	if len(rs.Includes) > 0 {
		return nil, nil, fmt.Errorf("rewriting rules: the file includes %q, whose rules cannot be checked here", rs.Includes[0])
	}
	if zeroJump.Match(src) {
		return nil, nil, errors.New("rewriting rules: a hex jump [0-0] would be written back as [-]")
	}
	index := map[string]int{}
	for i, r := range rs.Rules {
		index[r.Identifier] = i
	}
	gone := make([]bool, len(rs.Rules))
	var todo []int
	for _, name := range drop {
		i, ok := index[name]
		if !ok {
			return nil, nil, fmt.Errorf("holding back rule %q: no such rule in the file", name)
		}
		todo = append(todo, i)
	}
	// users[i] are the rules whose condition may name rule i.
	users := make([][]int, len(rs.Rules))
	for j, r := range rs.Rules {
		for _, ref := range conditionRefs(r.Condition) {
			if prefix, ok := strings.CutSuffix(ref, "*"); ok {
				for i, d := range rs.Rules {
					if strings.HasPrefix(d.Identifier, prefix) && i != j {
						users[i] = append(users[i], j)
					}
				}
				continue
			}
			if i, ok := index[ref]; ok && i != j {
				users[i] = append(users[i], j)
			}
		}
	}
	for len(todo) > 0 {
		i := todo[len(todo)-1]
		todo = todo[:len(todo)-1]
		if gone[i] {
			continue
		}
		gone[i] = true
		removed = append(removed, rs.Rules[i].Identifier)
		todo = append(todo, users[i]...)
	}
	slices.Sort(removed)

	kept := &ast.RuleSet{Imports: rs.Imports}
	for i, r := range rs.Rules {
		if !gone[i] {
			kept.Rules = append(kept.Rules, r)
		}
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "// Rewritten by fanguard: rules held back: %s.\n", strings.Join(removed, ", "))
	if err := kept.WriteSource(&b); err != nil {
		return nil, nil, fmt.Errorf("writing rules back: %w", err)
	}
	again, err := gyp.ParseString(b.String())
	if err != nil {
		return nil, nil, fmt.Errorf("checking the rewritten rules: they do not parse: %w", err)
	}
	if !reflect.DeepEqual(withoutLines(again), withoutLines(kept)) {
		return nil, nil, errors.New("checking the rewritten rules: they parse differently from the file's")
	}
	return b.Bytes(), removed, nil
}

// zeroJump finds a hex jump written [0] or [0-0], which gyp keeps as an
// unbounded jump and would write back as [-] (see scanner/partition.go); the
// round trip cannot see it, as [-] parses the same.
var zeroJump = regexp.MustCompile(`\[\s*0\s*(-\s*0\s*)?\]`)

// conditionRefs returns the identifiers a condition may use as rule names:
// every identifier in it, rule set items with their "*". It
// over-approximates (a loop variable or a module has the same form):
// holding back a rule that did not reference a dropped one costs only that
// rule's detections.
func conditionRefs(cond ast.Node) []string {
	var out []string
	var walk func(n ast.Node)
	walk = func(n ast.Node) {
		if n == nil || reflect.ValueOf(n).Kind() == reflect.Pointer && reflect.ValueOf(n).IsNil() {
			return
		}
		switch x := n.(type) {
		case *ast.Identifier:
			out = append(out, x.Identifier)
			return
		case *ast.Of:
			// Of's Children leave out In and At.
			if x.In != nil {
				walk(x.In)
			}
			walk(x.At)
		}
		for _, c := range n.Children() {
			walk(c)
		}
	}
	walk(cond)
	return out
}

// withoutLines returns a copy of rs with the line numbers of its rules and
// strings cleared: they differ between a file and its rewrite.
func withoutLines(rs *ast.RuleSet) *ast.RuleSet {
	out := *rs
	out.Rules = make([]*ast.Rule, len(rs.Rules))
	for i, r := range rs.Rules {
		c := *r
		c.LineNo = 0
		c.Strings = make([]ast.String, len(r.Strings))
		for j, s := range r.Strings {
			switch s := s.(type) {
			case *ast.TextString:
				v := *s
				v.LineNo = 0
				c.Strings[j] = &v
			case *ast.HexString:
				v := *s
				v.LineNo = 0
				c.Strings[j] = &v
			case *ast.RegexpString:
				v := *s
				v.LineNo = 0
				c.Strings[j] = &v
			default:
				c.Strings[j] = s
			}
		}
		out.Rules[i] = &c
	}
	if len(out.Imports) == 0 {
		out.Imports = nil
	}
	return &out
}
