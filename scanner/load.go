package scanner

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/fanguard/fanguard/policy"
	"github.com/hillu/go-yara/v4"
)

// ErrNoRules is wrapped by the error Load returns when no rule is left to
// load: no rule file in the directories, or every one of them broken.
var ErrNoRules = errors.New("no rules loaded")

// LoadOptions says where Load finds the rules. Load only reads it.
type LoadOptions struct {
	// Dirs are the rule directories, in order: a file in a later directory
	// replaces the file of the same name in an earlier one. Directories
	// that do not exist are skipped (and listed in Ruleset.MissingDirs).
	Dirs []string
}

// Ruleset is a compiled set of rules with what Load learnt on the way.
//
// A Ruleset is read-only after Load and safe for concurrent use; each
// goroutine that scans gets its own Scanner from NewScanner.
type Ruleset struct {
	Files       []RuleFile  // effective files that loaded, lexical order, with rule counts
	Masked      []string    // file names masked (empty file or symbolic link to /dev/null)
	Broken      []FileError // files left out, with the reason
	Warnings    []FileError // compiler warnings and unusable metadata of the loaded files
	MissingDirs []string    // rule directories that do not exist (skipped)
	Count       int         // number of rules loaded

	rules *yara.Rules
	index map[ruleKey]ruleInfo
}

// RuleFile is a rule file that loaded. Its rules' namespace is Name. It is
// a plain value, read-only within a Ruleset.
type RuleFile struct {
	Name  string // file name, which is also the YARA namespace of its rules
	Path  string // where it was read from
	Rules int    // number of rules it holds
}

// FileError is a compiler error or warning, or another reason a rule file
// was left out. It is a plain value, read-only within a Ruleset.
type FileError struct {
	Path string // rule file (or included file) the message is about
	Line int    // line in Path; 0 when not about a line
	Msg  string
}

// Error returns "path:line: msg" (or "path: msg" without a line).
func (e FileError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%s:%d: %s", e.Path, e.Line, e.Msg)
	}
	return fmt.Sprintf("%s: %s", e.Path, e.Msg)
}

// ruleKey names a rule: namespace (its file name) and identifier.
type ruleKey struct{ ns, id string }

// ruleInfo is what the scanner reports about a matching rule.
type ruleInfo struct {
	file   string
	tags   []string
	meta   map[string]string
	action policy.Action
}

// externals are the external variables every rule may use, declared with
// empty defaults at compile time and set per scan (see Vars).
var externals = [...]string{"filename", "filepath", "extension", "filetype", "owner"}

// Load reads, checks and compiles the rule files of opts.Dirs (see the
// package doc for the merging rules). A file that does not compile is left
// out and listed in Ruleset.Broken with file and line; the rest load.
//
// Load reads the file system: call it before any fanotify mark is placed.
// It returns an error wrapping ErrNoRules when no rule is left, and a plain
// error when a rule directory exists but cannot be read (loading without it
// could bring back files it masks).
func Load(opts LoadOptions) (*Ruleset, error) {
	dirs := make([]string, 0, len(opts.Dirs))
	for _, d := range opts.Dirs {
		abs, err := filepath.Abs(d)
		if err != nil {
			return nil, fmt.Errorf("resolving rule directory %s: %w", d, err)
		}
		dirs = append(dirs, abs)
	}
	listing, missing, err := listDirs(dirs)
	if err != nil {
		return nil, err
	}
	m := merge(listing)
	rs := &Ruleset{Masked: m.Masked, MissingDirs: missing}
	for _, e := range m.Bad {
		rs.Broken = append(rs.Broken, FileError{Path: e.Path, Msg: e.Note})
	}
	roots := includeRoots(dirs)

	// Compile each file alone first: a failed AddFile spoils the
	// compiler, and this way every broken file is found with its line.
	var good []entry
	for _, f := range m.Files {
		warns, ferr := checkFile(f, roots)
		if ferr != nil {
			rs.Broken = append(rs.Broken, *ferr)
			continue
		}
		rs.Warnings = append(rs.Warnings, warns...)
		good = append(good, f)
	}

	rules, good, broken, err := build(good, roots)
	rs.Broken = append(rs.Broken, broken...)
	if err != nil {
		return nil, err
	}
	if rules == nil {
		return nil, noRules(dirs, rs.Broken)
	}
	rs.rules = rules
	rs.indexRules(good)
	if rs.Count == 0 {
		return nil, noRules(dirs, rs.Broken)
	}
	return rs, nil
}

// noRules builds the ErrNoRules error, naming the broken files.
func noRules(dirs []string, broken []FileError) error {
	if len(broken) == 0 {
		return fmt.Errorf("loading rules from %s: %w (no rule files found)", strings.Join(dirs, ", "), ErrNoRules)
	}
	msgs := make([]string, len(broken))
	for i, b := range broken {
		msgs[i] = b.Error()
	}
	return fmt.Errorf("loading rules from %s: %w; broken files left out: %s",
		strings.Join(dirs, ", "), ErrNoRules, strings.Join(msgs, "; "))
}

// newCompiler returns a compiler with the externals declared and includes
// confined to roots by inc.
func newCompiler(inc *includer) (*yara.Compiler, error) {
	c, err := yara.NewCompiler()
	if err != nil {
		return nil, fmt.Errorf("creating YARA compiler: %w", err)
	}
	for _, name := range externals {
		if err := c.DefineVariable(name, ""); err != nil {
			destroyCompiler(c)
			return nil, fmt.Errorf("declaring external variable %s: %w", name, err)
		}
	}
	c.SetIncludeCallback(inc.include)
	return c, nil
}

// destroyCompiler frees c now, including the handle that keeps the include
// callback alive (Destroy alone leaves it registered).
func destroyCompiler(c *yara.Compiler) {
	c.DisableIncludes()
	c.Destroy()
}

// addFile compiles the file f into c. On failure it returns the error as a
// FileError naming the file and line; c is then unusable.
func addFile(c *yara.Compiler, inc *includer, f entry) *FileError {
	inc.refused = inc.refused[:0]
	fh, err := os.Open(f.Path)
	if err != nil {
		return &FileError{Path: f.Path, Msg: err.Error()}
	}
	defer fh.Close()
	nerr := len(c.Errors)
	err = c.AddFile(fh, f.Name)
	if err == nil {
		return nil
	}
	fe := FileError{Path: f.Path, Msg: err.Error()}
	if len(c.Errors) > nerr {
		msg := c.Errors[nerr]
		fe = FileError{Path: inc.resolve(msg.Filename, f.Path), Line: msg.Line, Msg: msg.Text}
	}
	if len(inc.refused) > 0 {
		// libyara only says the callback returned nothing; say why.
		fe.Msg = strings.Join(inc.refused, "; ")
	}
	if fe.Path != f.Path {
		fe.Msg += " (included from " + f.Path + ")"
	}
	if more := len(c.Errors) - nerr - 1; more > 0 {
		fe.Msg += fmt.Sprintf(" (and %d more errors)", more)
	}
	return &fe
}

// checkFile compiles f alone in a throwaway compiler and returns its
// warnings, or the reason it does not compile.
func checkFile(f entry, roots []string) ([]FileError, *FileError) {
	inc := &includer{roots: roots}
	c, err := newCompiler(inc)
	if err != nil {
		return nil, &FileError{Path: f.Path, Msg: err.Error()}
	}
	defer destroyCompiler(c)
	if fe := addFile(c, inc, f); fe != nil {
		return nil, fe
	}
	var warns []FileError
	for _, w := range c.Warnings {
		warns = append(warns, FileError{Path: inc.resolve(w.Filename, f.Path), Line: w.Line, Msg: w.Text})
	}
	return warns, nil
}

// build compiles files, each in its own namespace (its name), into one rule
// set. A file that fails here (although it compiled alone) is dropped and
// the set rebuilt in a fresh compiler. It returns the rules (nil when no
// file is left), the files in them, and the files dropped.
func build(files []entry, roots []string) (*yara.Rules, []entry, []FileError, error) {
	var broken []FileError
	for len(files) > 0 {
		inc := &includer{roots: roots}
		c, err := newCompiler(inc)
		if err != nil {
			return nil, nil, broken, err
		}
		failed := -1
		for i, f := range files {
			if fe := addFile(c, inc, f); fe != nil {
				broken = append(broken, *fe)
				failed = i
				break
			}
		}
		if failed >= 0 {
			destroyCompiler(c)
			files = append(files[:failed:failed], files[failed+1:]...)
			continue
		}
		rules, err := c.GetRules()
		destroyCompiler(c)
		if err != nil {
			return nil, nil, broken, fmt.Errorf("building rule set: %w", err)
		}
		return rules, files, broken, nil
	}
	return nil, nil, broken, nil
}

// indexRules records each rule's file, tags, metadata and action, and counts
// the rules per file.
func (rs *Ruleset) indexRules(files []entry) {
	paths := make(map[string]string, len(files))
	counts := make(map[string]int, len(files))
	for _, f := range files {
		paths[f.Name] = f.Path
	}
	all := rs.rules.GetRules()
	rs.index = make(map[ruleKey]ruleInfo, len(all))
	for i := range all {
		r := &all[i]
		ns, id := r.Namespace(), r.Identifier()
		metas := r.Metas()
		info := ruleInfo{file: paths[ns], tags: r.Tags(), meta: make(map[string]string, len(metas))}
		for _, m := range metas {
			if _, dup := info.meta[m.Identifier]; !dup {
				info.meta[m.Identifier] = formatMeta(m.Value)
			}
		}
		var warn string
		info.action, warn = parseAction(metas)
		if warn != "" {
			rs.Warnings = append(rs.Warnings, FileError{Path: info.file, Msg: "rule " + id + ": " + warn})
		}
		rs.index[ruleKey{ns, id}] = info
		counts[ns]++
	}
	rs.Count = len(all)
	for _, f := range files {
		rs.Files = append(rs.Files, RuleFile{Name: f.Name, Path: f.Path, Rules: counts[f.Name]})
	}
}

// formatMeta formats a metadata value (string, int, bool) as text.
func formatMeta(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case int:
		return strconv.Itoa(v)
	case bool:
		return strconv.FormatBool(v)
	case nil:
		return ""
	default:
		return fmt.Sprint(v)
	}
}

// parseAction maps the first "action" metadata of a rule to a policy.Action
// (case-insensitive: "audit", "deny" or "block", "quarantine"). Without the
// metadata it returns ActionDefault; with an unknown value, ActionDefault
// and a warning.
func parseAction(metas []yara.Meta) (policy.Action, string) {
	for _, m := range metas {
		if m.Identifier != "action" {
			continue
		}
		s, ok := m.Value.(string)
		if !ok {
			return policy.ActionDefault, fmt.Sprintf("action metadata %v is not a string; using the default action", m.Value)
		}
		switch strings.ToLower(strings.TrimSpace(s)) {
		case "audit":
			return policy.ActionAudit, ""
		case "deny", "block":
			return policy.ActionDeny, ""
		case "quarantine":
			return policy.ActionQuarantine, ""
		default:
			return policy.ActionDefault, fmt.Sprintf("unknown action %q (want audit, deny, block or quarantine); using the default action", s)
		}
	}
	return policy.ActionDefault, ""
}
