package policy

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"
	"github.com/pelletier/go-toml/v2/unstable"
)

// configError is one problem in a configuration file.
type configError struct {
	file string
	doc  int    // index of the file among the documents read: errors sort by it
	line int    // 0: unknown
	col  int    // 0: unknown
	key  string // dotted key, or "" when msg names it or there is none
	msg  string
	err  error // the go-toml error behind it, if any
}

func (e *configError) Error() string {
	var b strings.Builder
	b.WriteString(e.file)
	if e.line > 0 {
		b.WriteString(":" + strconv.Itoa(e.line))
		if e.col > 0 {
			b.WriteString(":" + strconv.Itoa(e.col))
		}
	}
	b.WriteString(": ")
	if e.key != "" {
		b.WriteString(e.key + ": ")
	}
	b.WriteString(e.msg)
	return b.String()
}

func (e *configError) Unwrap() error { return e.err }

// document is one configuration file: the main file or a drop-in.
type document struct {
	file string
	data []byte
	pos  map[string]keyPos // where each key is set; built on first use
}

// positions returns where each key is set in d.
func (d *document) positions() map[string]keyPos {
	if d.pos == nil {
		d.pos = keyPositions(d.data)
	}
	return d.pos
}

// checker collects the problems found in the documents of one
// configuration: the main file, then the drop-ins in the order applied.
type checker struct {
	docs []*document
	// set maps each key of rawConfig set by a drop-in ("mode",
	// "protect.paths", "feeds") to the index of the last document that
	// set it; a key it lacks is placed in docs[0].
	set map[string]int
	// alias maps a key as messages print it to its key in positions,
	// where they differ: "feeds[2] (\"forge\").url" to "feeds[2].url".
	alias map[string]string
	errs  []error
}

// err returns the problems found, in the order of the documents and of
// the lines in each, or nil.
func (c *checker) err() error {
	// Errors without a line (none are expected) go last in their file.
	order := func(e error) (doc, line int) {
		ce, ok := e.(*configError)
		if !ok {
			return math.MaxInt, math.MaxInt
		}
		if ce.line > 0 {
			return ce.doc, ce.line
		}
		return ce.doc, math.MaxInt
	}
	slices.SortStableFunc(c.errs, func(a, b error) int {
		da, la := order(a)
		db, lb := order(b)
		return cmp.Or(cmp.Compare(da, db), cmp.Compare(la, lb))
	})
	return errors.Join(c.errs...)
}

// fail records msg about key; elem is the index of the offending array
// element, or -1 for the whole value.
func (c *checker) fail(key string, elem int, msg string) {
	doc, line := c.where(key, elem)
	c.failAt(doc, line, key, msg)
}

// failAt records msg about key, found in document doc at line.
func (c *checker) failAt(doc, line int, key, msg string) {
	c.errs = append(c.errs, &configError{file: c.docs[doc].file, doc: doc, line: line, key: key, msg: msg})
}

// bad records that value v of key has a problem, and what the key allows.
func (c *checker) bad(key string, elem int, v any, problem, want string) {
	c.fail(key, elem, describe(v)+" "+problem+" (want "+want+")")
}

// where returns the document that sets key (or its element elem) and the
// line there, or 0 for the line if it is not known.
func (c *checker) where(key string, elem int) (doc, line int) {
	if k, ok := c.alias[key]; ok {
		key = k
	}
	// The entries of [[feeds]] come from the document that set feeds.
	top, _, _ := strings.Cut(key, "[")
	doc = c.set[top]
	p := c.docs[doc].positions()[key]
	if elem >= 0 && elem < len(p.elems) && p.elems[elem] > 0 {
		return doc, p.elems[elem]
	}
	return doc, p.line
}

// unknownKey records a key or table that go-toml found no field for in
// document doc.
func (c *checker) unknownKey(doc int, e *toml.DecodeError) {
	line, _ := e.Position()
	key := e.Key()
	what := "key"
	if strings.HasSuffix(e.Error(), "missing table") {
		what = "table"
	}
	msg := fmt.Sprintf("unknown %s %s", what, quote(strings.Join(key, ".")))
	switch {
	case len(key) > 1 && isTopLevelKey(key[len(key)-1]):
		msg += fmt.Sprintf(" (%s is a top-level key: move it above the first [table])", key[len(key)-1])
	case len(key) > 0:
		if known := knownKeys(key[:len(key)-1]); known != "" {
			msg += " (" + known + ")"
		}
	}
	c.errs = append(c.errs, &configError{file: c.docs[doc].file, doc: doc, line: line, msg: msg, err: e})
}

// decodeError converts an error that stopped go-toml: a syntax error, a
// duplicate key, or a table given a value, in document doc.
func (c *checker) decodeError(doc int, e *toml.DecodeError) error {
	line, col := e.Position()
	key := strings.Join(e.Key(), ".")
	msg := strings.TrimPrefix(e.Error(), "toml: ")
	if t, ok := strings.CutPrefix(msg, "cannot decode TOML "); ok {
		// Every value in rawConfig is an any: only a table can mismatch.
		t, _, _ = strings.Cut(t, " into ")
		msg = fmt.Sprintf("is a TOML %s (want a table, written [%s])", t, key)
	} else if strings.Contains(msg, "array table") {
		msg = fmt.Sprintf("is an array of tables (want a table, written [%s])", key)
	} else if key == "" || strings.Contains(msg, key) {
		key = ""
	}
	return &configError{file: c.docs[doc].file, doc: doc, line: line, col: col, key: key, msg: msg, err: e}
}

// knownKeys describes the keys allowed in the table at path (nil: the top
// level), from rawConfig's field tags. It returns "" if path is not a table.
func knownKeys(path []string) string {
	where := "at the top level"
	t := reflect.TypeFor[rawConfig]()
	if slices.Equal(path, []string{"feeds"}) {
		t, where, path = reflect.TypeFor[rawFeed](), "in a [[feeds]] entry", nil
	}
	for _, name := range path {
		f, ok := fieldByTag(t, name)
		if !ok || f.Type.Kind() != reflect.Struct {
			return ""
		}
		t = f.Type
		where = "in [" + strings.Join(path, ".") + "]"
	}
	var keys, tables []string
	for f := range t.Fields() {
		name := f.Tag.Get("toml")
		switch {
		case f.Type.Kind() == reflect.Struct:
			tables = append(tables, "["+name+"]")
		case f.Tag.Get("array") == "tables":
			tables = append(tables, "[["+name+"]]")
		default:
			keys = append(keys, name)
		}
	}
	s := "want one of " + strings.Join(keys, ", ") + " " + where
	if len(tables) > 0 {
		s += ", or the tables " + strings.Join(tables, ", ")
	}
	return s
}

// isTopLevelKey reports whether name is a key (not a table) at the top
// level.
func isTopLevelKey(name string) bool {
	f, ok := fieldByTag(reflect.TypeFor[rawConfig](), name)
	return ok && f.Type.Kind() != reflect.Struct && f.Tag.Get("array") != "tables"
}

func fieldByTag(t reflect.Type, tag string) (reflect.StructField, bool) {
	for f := range t.Fields() {
		if f.Tag.Get("toml") == tag {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

// describe formats a decoded TOML value for an error message.
func describe(v any) string {
	switch v := v.(type) {
	case string:
		return quote(v)
	case int64:
		return strconv.FormatInt(v, 10)
	case float64:
		return strconv.FormatFloat(v, 'g', -1, 64)
	case bool:
		return strconv.FormatBool(v)
	case []any:
		return "an array"
	case map[string]any:
		return "a table"
	case time.Time, toml.LocalDate, toml.LocalTime, toml.LocalDateTime:
		return fmt.Sprintf("the date %v", v)
	}
	return fmt.Sprintf("%v", v)
}

// quote quotes s for an error message, cut short if it is long.
func quote(s string) string {
	const max = 64
	if len(s) > max {
		return strconv.Quote(s[:max]) + "…"
	}
	return strconv.Quote(s)
}

// keyPos is where a key is set in a document.
type keyPos struct {
	line  int   // line of the key
	elems []int // line of each element, if the value is an array
}

// keyPositions maps each dotted key set in data to where it is set. It is
// a best effort, meant for error messages: data is expected to have been
// decoded successfully, and a key it cannot place is left out.
//
// The entries of an array of tables are numbered from 1: the url of the
// second [[feeds]] entry, or of the second inline table in feeds = [...],
// is "feeds[2].url"; "feeds[2]" is where the entry starts.
func keyPositions(data []byte) map[string]keyPos {
	pos := make(map[string]keyPos)
	entries := make(map[string]int) // array of tables → entries so far
	var p unstable.Parser
	p.Reset(data)
	table := ""
	for p.NextExpression() {
		e := p.Expression()
		switch e.Kind {
		case unstable.Table, unstable.ArrayTable:
			var line int
			table, line = dottedKey(&p, e)
			table = indexArrayTables(table, entries)
			if e.Kind == unstable.ArrayTable {
				entries[table]++
				table += "[" + strconv.Itoa(entries[table]) + "]"
			}
			if _, ok := pos[table]; !ok {
				pos[table] = keyPos{line: line}
			}
		case unstable.KeyValue:
			addKeyValue(&p, pos, table, e)
		}
	}
	return pos
}

// addKeyValue records the position of key-value kv, found in table, and of
// the keys of an inline table it holds.
func addKeyValue(p *unstable.Parser, pos map[string]keyPos, table string, kv *unstable.Node) {
	key, line := dottedKey(p, kv)
	if table != "" {
		key = table + "." + key
	}
	kp := keyPos{line: line}
	v := kv.Value()
	switch v.Kind {
	case unstable.Array:
		for it := v.Children(); it.Next(); {
			n := it.Node()
			kp.elems = append(kp.elems, lineOf(p, n))
			if n.Kind == unstable.InlineTable {
				entry := key + "[" + strconv.Itoa(len(kp.elems)) + "]"
				pos[entry] = keyPos{line: lineOf(p, n)}
				for it := n.Children(); it.Next(); {
					if kv := it.Node(); kv.Kind == unstable.KeyValue {
						addKeyValue(p, pos, entry, kv)
					}
				}
			}
		}
	case unstable.InlineTable:
		for it := v.Children(); it.Next(); {
			if n := it.Node(); n.Kind == unstable.KeyValue {
				addKeyValue(p, pos, key, n)
			}
		}
	}
	pos[key] = kp
}

// indexArrayTables rewrites the leading part of the dotted table key
// that names an array of tables seen so far (in entries) to name its last
// entry: "feeds.sub" after two [[feeds]] is "feeds[2].sub".
func indexArrayTables(table string, entries map[string]int) string {
	for i := len(table); i > 0; i = strings.LastIndexByte(table[:i], '.') {
		if n := entries[table[:i]]; n > 0 && i < len(table) {
			return table[:i] + "[" + strconv.Itoa(n) + "]" + table[i:]
		}
	}
	return table
}

// dottedKey returns the key of a table header or key-value, dotted, and
// the line where it starts.
func dottedKey(p *unstable.Parser, n *unstable.Node) (key string, line int) {
	var parts []string
	for it := n.Key(); it.Next(); {
		k := it.Node()
		if line == 0 {
			line = lineOf(p, k)
		}
		parts = append(parts, string(k.Data))
	}
	return strings.Join(parts, "."), line
}

// lineOf returns the line where n starts, or 0 if the parser did not
// record it.
func lineOf(p *unstable.Parser, n *unstable.Node) int {
	if n.Raw.Length == 0 {
		return 0
	}
	return p.Shape(n.Raw).Start.Line
}
