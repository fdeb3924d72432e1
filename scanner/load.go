package scanner

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/fanguard/fanguard/policy"
	"github.com/hillu/go-yara/v4"
)

// ErrNoRules is wrapped by the error Load returns when no rule is left to
// load: no rule file in the directories, or every one of them broken.
var ErrNoRules = errors.New("no rules loaded")

// errChanged says that a rule file changed between the hashing and the
// compile; Load starts over.
var errChanged = errors.New("rule file changed while loading")

// loadAttempts bounds how often Load starts over when rule files change
// under it.
const loadAttempts = 3

// LoadOptions says where Load finds the rules. Load only reads it; the
// zero value loads nothing and caches nothing.
type LoadOptions struct {
	// Dirs are the rule directories, in order, each read recursively: a
	// file in a later directory replaces the file at the same relative
	// path in an earlier one. Directories that do not exist are skipped
	// (and listed in Ruleset.MissingDirs).
	Dirs []string
	// CacheDir holds compiled rule sets by generation, so that loading
	// unchanged rules again reads them instead of compiling (such as
	// /var/cache/fanguard). It is created (mode 0700) when missing, and
	// used only when it belongs to this user and nobody else may write to
	// it. "" means no cache: every Load compiles. Problems with the cache
	// never fail Load; see Ruleset.CacheError.
	CacheDir string
}

// Ruleset is a compiled set of rules with what Load learnt on the way.
//
// A Ruleset is read-only after Load and safe for concurrent use; each
// goroutine that scans gets its own Scanner from NewScanner.
type Ruleset struct {
	Files       []RuleFile  // effective files that loaded, lexical order, with rule counts
	Masked      []string    // names (relative paths) masked (empty file or symbolic link to /dev/null)
	Broken      []FileError // files left out, with the reason
	Warnings    []FileError // compiler warnings and unusable metadata of the loaded files
	MissingDirs []string    // rule directories that do not exist (skipped)
	Count       int         // number of rules loaded

	Overridden []Override // entries replaced by a later directory's entry of the same name (relative path)
	Masks      []Mask     // where each name of Masked is masked

	// Generation identifies the rules: the hex SHA-256 of the libyara
	// version, each effective file in load order (name, path, content
	// and the content of the files it includes) and the masked names.
	// The same rules on disk give the same generation, any change to
	// them (content, a file added, removed, masked, unmasked or
	// overridden) a new one. See ShortGeneration for display.
	Generation string
	FromCache  bool          // the compiled rules came from LoadOptions.CacheDir
	LoadTime   time.Duration // how long Load took
	// CacheError says why the cache was not used or not written (the
	// rules loaded anyway); nil when it worked or when there is none.
	CacheError error

	// Partition says whether scans run per-class sets and what they hold.
	Partition Partition

	rules   *yara.Rules             // the whole set; nil when no rule loaded or when the partition is in force
	classes [numClasses]*yara.Rules // per class when the partition is in force; nil for a class without rules
	index   map[ruleKey]ruleInfo
	closed  bool // Close was called

	empty      []Match // what the Other set matches on empty content
	emptyKnown bool    // empty is the verdict on every empty file (see EmptyMatches)
}

// RuleFile is a rule file that loaded. Its rules' namespace is Name. It is
// a plain value, read-only within a Ruleset.
type RuleFile struct {
	// Name is the file's path relative to its rule directory,
	// slash-separated: the base name for a file at the top level
	// ("eicar.yar"), "forge/packages/core/x.yar" below. It is the merge
	// key and the YARA namespace of its rules.
	Name  string
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

// ruleKey names a rule: namespace (its file's Name) and identifier.
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
// out and listed in Ruleset.Broken with file and line; the rest load. With
// opts.CacheDir, rules compiled before from the same generation are read
// from there instead, with the same Ruleset as a compile would give.
//
// Load reads the file system: call it before any fanotify mark is placed.
// When no rule is left it returns an error wrapping ErrNoRules together
// with a Ruleset that says why (Broken, Masked, Files, Generation) but
// holds no rules: its NewScanner fails. It returns a plain error and no
// Ruleset, naming the directory, when a rule directory exists but it or
// one of its subdirectories cannot be read, or its tree is deeper than 16
// levels of subdirectories or holds more than 100000 entries (loading
// without part of it could bring back files it masks), or when the rule
// files keep changing while they are read.
func Load(opts LoadOptions) (*Ruleset, error) {
	start := time.Now()
	dirs := make([]string, 0, len(opts.Dirs))
	for _, d := range opts.Dirs {
		abs, err := filepath.Abs(d)
		if err != nil {
			return nil, fmt.Errorf("resolving rule directory %s: %w", d, err)
		}
		dirs = append(dirs, abs)
	}
	var rs *Ruleset
	var err error
	for range loadAttempts {
		rs, err = load(dirs, opts.CacheDir)
		if !errors.Is(err, errChanged) {
			break
		}
	}
	if errors.Is(err, errChanged) {
		return nil, fmt.Errorf("loading rules from %s: %w (tried %d times)", strings.Join(dirs, ", "), err, loadAttempts)
	}
	if rs != nil {
		rs.LoadTime = time.Since(start)
	}
	return rs, err
}

// load is one attempt of Load on absolute directories.
func load(dirs []string, cacheDir string) (*Ruleset, error) {
	l, err := listDirs(dirs)
	if err != nil {
		return nil, err
	}
	m := merge(l.Entries)
	rs := &Ruleset{Masked: m.Masked, MissingDirs: l.Missing}
	rs.Overridden, rs.Masks = shadows(l.Entries)
	for _, e := range m.Bad {
		rs.Broken = append(rs.Broken, FileError{Path: e.Path, Msg: e.Note})
	}
	roots := l.Roots
	inputs := make([]input, len(m.Files))
	for i, f := range m.Files {
		inputs[i] = readInput(f)
	}

	var c *compiled
	if cacheDir != "" {
		if err := prepareCacheDir(cacheDir); err != nil {
			rs.CacheError, cacheDir = err, ""
		}
	}
	if cacheDir != "" {
		c, rs.CacheError = lookupCache(cacheDir, inputs, m.Masked, roots)
		rs.FromCache = c != nil
	}
	if c == nil {
		if c, err = compile(inputs, roots); err != nil {
			return nil, err
		}
	}
	rs.Generation = generation(yaraVersion(), inputs, c.deps(), m.Masked)

	var good []entry
	var goodInputs []input
	for i, r := range c.results {
		switch {
		case inputs[i].err != nil:
			rs.Broken = append(rs.Broken, *inputs[i].err)
		case r.Err != nil:
			rs.Broken = append(rs.Broken, *r.Err)
		default:
			rs.Warnings = append(rs.Warnings, r.Warnings...)
			good = append(good, inputs[i].entry)
			goodInputs = append(goodInputs, inputs[i])
		}
	}
	if c.rules == nil {
		return rs, noRules(dirs, rs.Broken)
	}
	rs.rules = c.rules
	rs.indexRules(good)
	if rs.Count == 0 {
		rs.rules, rs.index = nil, nil
		return rs, noRules(dirs, rs.Broken)
	}
	if c.part != nil {
		rs.adoptPartition(c.part, c.classes)
	} else if err := rs.partition(goodInputs, roots); err != nil {
		rs.Close()
		return nil, err
	}
	if !rs.Partition.InForce {
		rs.Warnings = append(rs.Warnings, FileError{Msg: "rules not partitioned by class, every scan runs them all: " + rs.Partition.Reason})
	}
	if cacheDir != "" && !rs.FromCache {
		// The cache must hold what the generation names: the
		// files may not have changed since they were hashed.
		if err := unchanged(inputs); err != nil {
			rs.CacheError = errors.Join(rs.CacheError, fmt.Errorf("not caching the compiled rules: %w", err))
		} else if err := storeCache(cacheDir, rs.Generation, inputs, m.Masked, c, rs); err != nil {
			rs.CacheError = errors.Join(rs.CacheError, err)
		}
	}
	if rs.Partition.InForce {
		// The class sets hold every rule that can match: the whole
		// set is no longer needed.
		rs.rules.Destroy()
		rs.rules = nil
	}
	trimMalloc()
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

// unchanged checks that the readable inputs are still the files that
// were hashed.
func unchanged(inputs []input) error {
	for _, in := range inputs {
		if in.err != nil {
			continue
		}
		fi, err := os.Stat(in.Path)
		if err != nil || statID(fi) != in.id {
			return fmt.Errorf("checking %s: %w", in.Path, errChanged)
		}
	}
	return nil
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

// addFile compiles the file f into c and returns the includes it resolved.
// When f does not compile it returns the error as a FileError naming the
// file and line; c is then unusable. The error is errChanged when f is no
// longer the file that was hashed.
func addFile(c *yara.Compiler, inc *includer, f input) ([]dep, *FileError, error) {
	inc.refused = inc.refused[:0]
	inc.deps = nil
	fh, err := os.Open(f.Path)
	if err != nil {
		return nil, nil, fmt.Errorf("opening %s: %w", f.Path, errChanged)
	}
	defer fh.Close()
	if fi, err := fh.Stat(); err != nil || statID(fi) != f.id {
		return nil, nil, fmt.Errorf("opening %s: %w", f.Path, errChanged)
	}
	nerr := len(c.Errors)
	err = c.AddFile(fh, f.Name)
	deps := inc.deps
	if err == nil {
		return deps, nil, nil
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
	return deps, &fe, nil
}

// checkFile compiles f alone in a throwaway compiler and returns the
// includes it resolved and, when it does not compile, why.
func checkFile(f input, roots []string) ([]dep, *FileError, error) {
	inc := &includer{roots: roots}
	c, err := newCompiler(inc)
	if err != nil {
		return nil, nil, err
	}
	defer destroyCompiler(c)
	return addFile(c, inc, f)
}

// compiled is the outcome of compiling the inputs, or of reading them
// from the cache.
type compiled struct {
	rules   *yara.Rules  // nil when no file compiled
	results []fileResult // one per input, in order

	// From the cache only: the partition and its class sets (part nil
	// when the cache holds none).
	part    *cachePartition
	classes [numClasses]*yara.Rules
}

// fileResult is what compiling one input gave.
type fileResult struct {
	Deps     []dep       `json:"deps,omitempty"`     // files its includes resolved to
	Warnings []FileError `json:"warnings,omitempty"` // compiler warnings, when it compiled
	Err      *FileError  `json:"error,omitempty"`    // why it does not compile
}

// deps returns the deps of each input, for the generation.
func (c *compiled) deps() [][]dep {
	out := make([][]dep, len(c.results))
	for i, r := range c.results {
		out[i] = r.Deps
	}
	return out
}

// compile builds the readable inputs, each in its own namespace (its
// name), into one rule set. It first tries all of them in one compiler.
// A failed AddFile spoils the compiler, so when one fails, every file not
// yet known to compile is checked alone in a throwaway compiler: the files
// broken on their own are left out with that compile's error (file and
// line). A file that compiles alone but not with the others is left out
// with the error of the combined compile. Then the rest is compiled again
// in a fresh compiler, until one compile succeeds.
func compile(inputs []input, roots []string) (*compiled, error) {
	out := &compiled{results: make([]fileResult, len(inputs))}
	var pending []int // indexes into inputs, in order
	for i, in := range inputs {
		if in.err == nil {
			pending = append(pending, i)
		}
	}
	checked := make([]bool, len(inputs)) // compiled alone without error
	for len(pending) > 0 {
		rules, failed, fail, err := compileAll(inputs, pending, roots, out.results)
		if err != nil {
			return nil, err
		}
		if failed < 0 {
			out.rules = rules
			return out, nil
		}
		next := pending[:failed:failed]
		for k := failed; k < len(pending); k++ {
			i := pending[k]
			if checked[i] && k != failed {
				next = append(next, i)
				continue
			}
			if !checked[i] {
				deps, fe, err := checkFile(inputs[i], roots)
				if err != nil {
					return nil, err
				}
				if fe != nil {
					out.results[i] = fileResult{Deps: deps, Err: fe}
					continue
				}
				checked[i] = true
			}
			if k == failed {
				out.results[i] = fail
				continue
			}
			next = append(next, i)
		}
		pending = next
	}
	return out, nil
}

// compileAll compiles inputs[pending...] in one compiler and records the
// includes and warnings of each in results. When a file does not compile
// it returns its position in pending and its result; failed is -1
// otherwise.
func compileAll(inputs []input, pending []int, roots []string, results []fileResult) (rules *yara.Rules, failed int, fail fileResult, err error) {
	inc := &includer{roots: roots}
	c, err := newCompiler(inc)
	if err != nil {
		return nil, -1, fileResult{}, err
	}
	defer destroyCompiler(c)
	for k, i := range pending {
		f := inputs[i]
		nwarn := len(c.Warnings)
		deps, fe, err := addFile(c, inc, f)
		if err != nil {
			return nil, -1, fileResult{}, err
		}
		if fe != nil {
			return nil, k, fileResult{Deps: deps, Err: fe}, nil
		}
		r := fileResult{Deps: deps}
		for _, w := range c.Warnings[nwarn:] {
			r.Warnings = append(r.Warnings, FileError{Path: inc.resolve(w.Filename, f.Path), Line: w.Line, Msg: w.Text})
		}
		results[i] = r
	}
	rules, err = c.GetRules()
	if err != nil {
		return nil, -1, fileResult{}, fmt.Errorf("building rule set: %w", err)
	}
	return rules, -1, fileResult{}, nil
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
