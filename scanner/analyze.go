package scanner

import (
	"strings"

	"github.com/VirusTotal/gyp/ast"
)

// The analysis answers, for each rule and class, "can this rule match
// content of this class?" with an over-approximation: it may say yes when
// the answer is no (the rule is then only scanned for nothing), never the
// reverse (a missed match). It evaluates the condition on abstract values:
// each expression's value is the set of outcomes it may have on content of
// the class (true, false, undefined), following libyara 4.2.3's semantics
// (libyara/exec.c, grammar.y):
//
//   - and, or: short-circuit jumps (OP_JFALSE, OP_JTRUE) then OP_AND/OP_OR,
//     which take undefined as false: the result is never undefined.
//   - not: undefined stays undefined. defined: true unless undefined.
//   - comparisons, arithmetic, bitwise and string operators: undefined when
//     either operand is (ensure_defined).
//   - a rule matches when its condition is defined and true (OP_MATCH_RULE).
//   - a rule reference is the rule's own result, 0 or 1, before any global
//     rule's verdict (OP_PUSH_RULE reads the match bit).
//   - "for <n> i in ...: (body)" adds the body's values of the iterations
//     and compares the sum with n; with "any" or a literal n ≥ 1 it cannot
//     be true unless the body can be true (zero iterations give false).
//
// Facts: uint8/16/32(0), and their be variants, compared with == or != to
// a literal (either operand order) use the class's head patterns; a text
// string without modifiers that change its bytes, or a hex string's
// leading exact bytes, "at 0" needs the content to start with those bytes.
// Module facts, checked in libyara 4.2.3's modules: on content that does
// not start with "MZ", pe's module_load sets only its constants (upper-case
// names) and is_pe = 0, and every pe function returns undefined; dotnet
// sets nothing. On content that does not start with "\x7fELF", elf sets
// only its constants (it has no functions). On content that starts with
// none of the eight Mach-O magics (thin and fat, both byte orders), macho
// sets only its constants and its functions return undefined (they check
// nfat_arch); Other can hold such content (Java class files, little-endian
// fat headers), so the macho fact is used only for PE and ELF. Anything
// else may be anything.

// outcome is a set of possible results of an expression.
type outcome uint8

const (
	oTrue  outcome = 1 << iota // defined and true (non-zero, a non-empty string)
	oFalse                     // defined and false (zero)
	oUndef                     // undefined
	oDef   = oTrue | oFalse
	oAny   = oTrue | oFalse | oUndef
)

// aval is the abstract value of an expression on content of one class.
type aval struct {
	out     outcome
	isConst bool  // the value is the integer c (always defined)
	c       int64 //
	read    int   // > 0: the value is the read of this many bytes at offset 0
	readBE  bool  // the read is big-endian
}

var anyVal = aval{out: oAny}

// moduleAbsent says on which classes each module's data is undefined (see
// the facts above).
var moduleAbsent = map[string][numClasses]bool{
	"pe":     {ClassOther: true, ClassELF: true, ClassMachO: true},
	"dotnet": {ClassOther: true, ClassELF: true, ClassMachO: true},
	"elf":    {ClassOther: true, ClassPE: true, ClassMachO: true},
	"macho":  {ClassPE: true, ClassELF: true},
}

// reads are the integer functions whose read at offset 0 the analysis
// understands, with their width and byte order.
var reads = map[string]struct {
	n  int
	be bool
}{
	"uint8": {1, false}, "uint16": {2, false}, "uint32": {4, false},
	"uint8be": {1, true}, "uint16be": {2, true}, "uint32be": {4, true},
}

// ruleFacts is what the analysis knows about the rules of one file, in
// their order, as it goes.
type ruleFacts struct {
	imports map[string]bool // modules the file imports
	index   map[string]int  // rule identifier → position in the file
	can     [][numClasses]bool
}

// evaluator evaluates the condition of one rule for one class.
type evaluator struct {
	f     *ruleFacts
	strs  map[string][]byte
	class Class
	bound map[string]int // loop variables in scope
}

// canMatch reports whether the condition can be true on content of class c.
func (f *ruleFacts) canMatch(cond ast.Expression, strs map[string][]byte, c Class) bool {
	ev := evaluator{f: f, strs: strs, class: c, bound: map[string]int{}}
	return ev.eval(cond).out&oTrue != 0
}

func boolVal(o outcome) aval { return aval{out: o} }

func constVal(c int64) aval {
	v := aval{isConst: true, c: c, out: oFalse}
	if c != 0 {
		v.out = oTrue
	}
	return v
}

// strict is the outcome of an operator that is undefined when either
// operand is and otherwise defined: surely undefined when one operand
// surely is.
func strict(vals ...aval) outcome {
	out := oDef
	for _, v := range vals {
		if v.out == oUndef {
			return oUndef
		}
		out |= v.out & oUndef
	}
	return out
}

func (ev *evaluator) eval(e ast.Expression) aval {
	switch e := e.(type) {
	case *ast.Group:
		return ev.eval(e.Expression)
	case ast.Keyword:
		switch e {
		case ast.KeywordTrue:
			return constVal(1)
		case ast.KeywordFalse:
			return constVal(0)
		case ast.KeywordFilesize:
			return boolVal(oDef)
		}
		return anyVal
	case *ast.LiteralInteger:
		return constVal(e.Value)
	case *ast.LiteralFloat, *ast.LiteralString:
		return boolVal(oDef)
	case *ast.Minus:
		x := ev.eval(e.Expression)
		if x.isConst {
			return constVal(-x.c)
		}
		return boolVal(strict(x))
	case *ast.BitwiseNot:
		return boolVal(strict(ev.eval(e.Expression)))
	case *ast.Not:
		x := ev.eval(e.Expression).out
		var out outcome
		if x&oFalse != 0 {
			out |= oTrue
		}
		if x&oTrue != 0 {
			out |= oFalse
		}
		return boolVal(out | x&oUndef)
	case *ast.Defined:
		x := ev.eval(e.Expression).out
		var out outcome
		if x&oDef != 0 {
			out |= oTrue
		}
		if x&oUndef != 0 {
			out |= oFalse
		}
		return boolVal(out)
	case *ast.Identifier:
		return ev.identifier(e.Identifier)
	case *ast.StringIdentifier:
		return ev.stringAt(e)
	case *ast.FunctionCall:
		if id, ok := e.Callable.(*ast.Identifier); ok && e.Builtin && len(e.Arguments) == 1 {
			if r, ok := reads[id.Identifier]; ok {
				if a := ev.eval(e.Arguments[0]); a.isConst && a.c == 0 {
					out := oDef
					if canShort(ev.class, r.n) {
						out |= oUndef
					}
					return aval{out: out, read: r.n, readBE: r.be}
				}
			}
			return anyVal
		}
		return ev.member(e)
	case *ast.MemberAccess, *ast.Subscripting:
		return ev.member(e)
	case *ast.ForIn:
		for _, v := range e.Variables {
			ev.bound[v]++
		}
		body := ev.eval(e.Condition)
		for _, v := range e.Variables {
			ev.bound[v]--
		}
		if positive(e.Quantifier) && body.out&oTrue == 0 {
			return boolVal(oFalse)
		}
		return anyVal
	case *ast.Operation:
		return ev.operation(e)
	}
	return anyVal
}

// positive reports whether a loop quantifier is "any" or a literal ≥ 1.
func positive(q ast.Expression) bool {
	switch q := q.(type) {
	case ast.Keyword:
		return q == ast.KeywordAny
	case *ast.LiteralInteger:
		return q.Value >= 1
	case *ast.Group:
		return positive(q.Expression)
	}
	return false
}

// identifier evaluates a bare identifier, resolved as libyara does: loop
// variable, external variable, module, then a rule declared earlier in
// the namespace.
func (ev *evaluator) identifier(name string) aval {
	switch {
	case ev.bound[name] > 0:
		return anyVal
	case isExternal(name):
		return boolVal(oDef)
	case ev.f.imports[name]:
		return anyVal
	}
	if i, ok := ev.f.index[name]; ok && i < len(ev.f.can) {
		if ev.f.can[i][ev.class] {
			return boolVal(oDef)
		}
		return constVal(0)
	}
	return anyVal
}

func isExternal(name string) bool {
	for _, x := range externals {
		if x == name {
			return true
		}
	}
	return false
}

// member evaluates a field, an array or dictionary item or a function
// call of a module.
func (ev *evaluator) member(e ast.Expression) aval {
	root, first := chain(e)
	if root == "" || first == "" || ev.bound[root] > 0 || isExternal(root) || !ev.f.imports[root] {
		return anyVal
	}
	if !moduleAbsent[root][ev.class] || isConstantName(first) {
		return anyVal
	}
	if m, ok := e.(*ast.MemberAccess); ok && root == "pe" && first == "is_pe" {
		if _, direct := m.Container.(*ast.Identifier); direct {
			return constVal(0)
		}
	}
	return boolVal(oUndef)
}

// chain returns the identifier an access chain starts from and the member
// taken from it, such as "pe" and "sections" for pe.sections[0].name.
func chain(e ast.Expression) (root, first string) {
	for {
		switch x := e.(type) {
		case *ast.MemberAccess:
			if id, ok := x.Container.(*ast.Identifier); ok {
				return id.Identifier, x.Member
			}
			e = x.Container
		case *ast.Subscripting:
			e = x.Array
		case *ast.FunctionCall:
			e = x.Callable
		default:
			return "", ""
		}
	}
}

// isConstantName reports whether a module member is named like the
// modules' constants (upper case), which are always defined.
func isConstantName(s string) bool {
	return strings.ToUpper(s) == s
}

// stringAt evaluates "$s", "$s at X", "$s in (A..B)".
func (ev *evaluator) stringAt(e *ast.StringIdentifier) aval {
	if e.In != nil || e.At == nil {
		if e.In == nil {
			return boolVal(oDef)
		}
		return anyVal
	}
	at := ev.eval(e.At)
	prefix, ok := ev.strs[e.Identifier]
	if !at.isConst || at.c != 0 || !ok || e.Identifier == "" {
		return anyVal
	}
	out := oFalse
	if canStart(ev.class, prefix) {
		out |= oTrue
	}
	return boolVal(out)
}

func (ev *evaluator) operation(e *ast.Operation) aval {
	if len(e.Operands) == 0 {
		return anyVal
	}
	switch e.Operator {
	case ast.OpAnd, ast.OpOr:
		acc := ev.eval(e.Operands[0]).out
		for _, o := range e.Operands[1:] {
			x := ev.eval(o).out
			if e.Operator == ast.OpAnd {
				acc = and(acc, x)
			} else {
				acc = or(acc, x)
			}
		}
		return boolVal(acc)
	}
	vals := make([]aval, len(e.Operands))
	for i, o := range e.Operands {
		vals[i] = ev.eval(o)
	}
	switch e.Operator {
	case ast.OpEqual, ast.OpNotEqual:
		if len(vals) != 2 {
			return boolVal(strict(vals...))
		}
		a, b := vals[0], vals[1]
		if b.read > 0 {
			a, b = b, a
		}
		if a.read == 0 || !b.isConst {
			return boolVal(strict(vals...))
		}
		out := ev.readEquals(a, b.c)
		if e.Operator == ast.OpNotEqual {
			out = out&oUndef | (out&oTrue)<<1 | (out&oFalse)>>1
		}
		return boolVal(out)
	case ast.OpDiv, ast.OpMod, ast.OpShiftLeft, ast.OpShiftRight:
		// Undefined also on a zero divisor or a negative shift.
		out := strict(vals...)
		if out != oUndef {
			out |= oUndef
		}
		return boolVal(out)
	}
	return boolVal(strict(vals...))
}

// and is libyara's "a and b": true when both are true, false otherwise
// (undefined counts as false); never undefined.
func and(a, b outcome) outcome {
	var out outcome
	if a&oTrue != 0 && b&oTrue != 0 {
		out |= oTrue
	}
	if a&(oFalse|oUndef) != 0 || (a&oTrue != 0 && b&(oFalse|oUndef) != 0) {
		out |= oFalse
	}
	return out
}

// or is libyara's "a or b": true when either is true, false otherwise;
// never undefined.
func or(a, b outcome) outcome {
	var out outcome
	if a&oTrue != 0 || (a&(oFalse|oUndef) != 0 && b&oTrue != 0) {
		out |= oTrue
	}
	if a&(oFalse|oUndef) != 0 && b&(oFalse|oUndef) != 0 {
		out |= oFalse
	}
	return out
}

// readEquals is the outcome of "read == c" on content of the class.
func (ev *evaluator) readEquals(r aval, c int64) outcome {
	n := r.read
	var out outcome
	if canShort(ev.class, n) {
		out |= oUndef
	}
	if c < 0 || c >= 1<<(8*n) {
		return out | oFalse // every class has content of n bytes or more
	}
	b := make([]byte, n)
	for i := range n {
		shift := 8 * i
		if r.readBE {
			shift = 8 * (n - 1 - i)
		}
		b[i] = byte(c >> shift)
	}
	if canStart(ev.class, b) {
		out |= oTrue
	}
	if canDiffer(ev.class, b) {
		out |= oFalse
	}
	return out
}

// stringPrefixes returns, for each string of a rule whose match at offset 0
// needs the content to start with known bytes, those bytes: a text string
// whose modifiers do not change its bytes (none, ascii, fullword,
// private), or the leading exact bytes of a hex string.
func stringPrefixes(strs []ast.String) map[string][]byte {
	m := map[string][]byte{}
	for _, s := range strs {
		switch s := s.(type) {
		case *ast.TextString:
			if s.Wide || s.Nocase || s.Xor || s.Base64 || s.Base64Wide {
				continue
			}
			if b, ok := unescape(s.Value); ok && len(b) > 0 {
				m[s.Identifier] = b
			}
		case *ast.HexString:
			var b []byte
		tokens:
			for _, t := range s.Tokens {
				hb, ok := t.(*ast.HexBytes)
				if !ok {
					break
				}
				for i := range hb.Bytes {
					if hb.Masks[i] != 0xff || hb.Nots[i] {
						break tokens
					}
					b = append(b, hb.Bytes[i])
				}
			}
			if len(b) > 0 {
				m[s.Identifier] = b
			}
		}
	}
	return m
}

// unescape decodes a text string as libyara's lexer does for the escapes
// \t \n \r \" \\ and \xHH; any other escape is refused (ok false).
func unescape(s string) ([]byte, bool) {
	var b []byte
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' {
			b = append(b, s[i])
			continue
		}
		i++
		if i >= len(s) {
			return nil, false
		}
		switch s[i] {
		case 't':
			b = append(b, '\t')
		case 'n':
			b = append(b, '\n')
		case 'r':
			b = append(b, '\r')
		case '"', '\\':
			b = append(b, s[i])
		case 'x':
			if i+2 >= len(s) {
				return nil, false
			}
			hi, ok1 := hexDigit(s[i+1])
			lo, ok2 := hexDigit(s[i+2])
			if !ok1 || !ok2 {
				return nil, false
			}
			b = append(b, hi<<4|lo)
			i += 2
		default:
			return nil, false
		}
	}
	return b, true
}

func hexDigit(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// ruleRefs returns the identifiers a condition may use as rule names:
// every identifier at the root of an expression (bare, or as a rule set
// item, wildcards with their "*"). It over-approximates: including a rule
// that is not referenced costs only its scan.
func ruleRefs(cond ast.Node) []string {
	var out []string
	var walk func(n ast.Node)
	walk = func(n ast.Node) {
		if n == nil {
			return
		}
		switch x := n.(type) {
		case *ast.Identifier:
			out = append(out, x.Identifier)
		case *ast.Of:
			if x.Rules != nil {
				walk(x.Rules)
			}
			if x.Strings != nil {
				walk(x.Strings)
			}
			walk(x.Quantifier)
			if x.In != nil {
				walk(x.In)
			}
			if x.At != nil {
				walk(x.At)
			}
			return
		}
		for _, c := range n.Children() {
			walk(c)
		}
	}
	walk(cond)
	return out
}
