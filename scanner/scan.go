package scanner

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"path/filepath"
	"slices"
	"time"

	"github.com/fanguard/fanguard/policy"
	"github.com/hillu/go-yara/v4"
)

// scanFlagsNoTryCatch is libyara's SCAN_FLAGS_NO_TRYCATCH, which go-yara
// 4.2.4 does not name. Without it libyara 4.2.3 installs its own SIGSEGV
// and SIGBUS handlers around every scan and restores the previous ones
// afterwards; with concurrent scans the process-wide handlers get swapped
// under the Go runtime, and a later Go panic (a nil dereference is a
// SIGSEGV) was seen to hang the process. Scanning only memory that Go owns
// (ScanMem, never a mapped file) makes the try/catch unnecessary.
const scanFlagsNoTryCatch yara.ScanFlags = 4

const (
	// maxStringMatches caps the string matches reported per rule.
	maxStringMatches = 16
	// maxMatchData caps the bytes of matched data kept per string match.
	maxMatchData = 64
)

// Match is a rule that matched. Each Match returned by Scan is the
// caller's own (no memory is shared with the Scanner or other matches), so
// it may be handed to other goroutines.
type Match struct {
	Rule      string            // rule identifier
	Namespace string            // rule namespace: the rule file's path relative to its rule directory ("a.yar", "forge/core/x.yar")
	File      string            // path of the rule file
	Tags      []string          // rule tags
	Meta      map[string]string // rule metadata, non-string values formatted
	Action    policy.Action     // from the metadata "action"
	Strings   []StringMatch     // at most 16 string matches
	// StringsOmitted counts the string matches beyond those in Strings.
	StringsOmitted int
}

// StringMatch is one match of a rule's string, a plain value like Match.
type StringMatch struct {
	ID     string // string identifier, such as "$a"
	Offset int64  // offset in the scanned buffer
	Data   []byte // matched bytes, at most 64
	Len    int    // the whole match's length, ≥ len(Data)
}

// Vars are the values of the external variables for one scan. Rules see
// them as filename, filepath, extension, filetype and owner. It is a plain
// value, copied into the Scanner by Scan.
type Vars struct {
	Filename  string // base name of the file
	Filepath  string // directory holding the file
	Extension string // lower-case extension with the dot, such as ".exe"; "" if none
	Filetype  string // see VarsFor
	Owner     string // owner's user name
}

// Scanner scans buffers with a Ruleset. It belongs to one worker and is not
// safe for concurrent use.
type Scanner struct {
	whole  *classScanner             // the whole set, when the partition is not in force
	class  [numClasses]*classScanner // per class when it is; nil for a class without rules
	closed bool
}

// classScanner is a YARA scanner of one compiled set with its callback
// and the external variables last defined in it.
type classScanner struct {
	ys      *yara.Scanner
	col     *collector
	vars    Vars // values last defined in ys
	varsSet bool // whether vars holds what ys has
}

// Close frees the compiled rules now rather than when the garbage
// collector gets to them: they are megabytes of C memory that the Go heap
// does not see grow. Every Scanner made from rs must be closed first;
// NewScanner fails after Close. The other fields stay as they are.
func (rs *Ruleset) Close() {
	if rs.rules != nil {
		rs.rules.Destroy()
		rs.rules = nil
	}
	for c, r := range rs.classes {
		if r != nil {
			r.Destroy()
			rs.classes[c] = nil
		}
	}
	rs.closed = true
}

// NewScanner returns a scanner for one worker. timeout bounds the CPU time
// of one scan; YARA counts whole seconds, so it is rounded up (0 or less:
// no bound). The scanner sets SCAN_FLAGS_NO_TRYCATCH (see the constant).
// When the partition is in force it holds one YARA scanner per class, and
// each scan runs the one of its content's class.
//
// It fails with an error wrapping ErrNoRules for the rule-less Ruleset
// that Load returns with ErrNoRules, and after Close.
func (rs *Ruleset) NewScanner(timeout time.Duration) (*Scanner, error) {
	if rs.closed || rs.rules == nil && !rs.Partition.InForce {
		return nil, fmt.Errorf("creating scanner: %w", ErrNoRules)
	}
	s := &Scanner{}
	if rs.rules != nil {
		cs, err := newClassScanner(rs, rs.rules, timeout)
		if err != nil {
			return nil, err
		}
		s.whole = cs
		return s, nil
	}
	for c, r := range rs.classes {
		if r == nil {
			continue
		}
		cs, err := newClassScanner(rs, r, timeout)
		if err != nil {
			s.Close()
			return nil, err
		}
		s.class[c] = cs
	}
	return s, nil
}

func newClassScanner(rs *Ruleset, r *yara.Rules, timeout time.Duration) (*classScanner, error) {
	ys, err := yara.NewScanner(r)
	if err != nil {
		return nil, fmt.Errorf("creating YARA scanner: %w", err)
	}
	col := &collector{rs: rs}
	ys.SetFlags(scanFlagsNoTryCatch).SetTimeout(roundUpSeconds(timeout)).SetCallback(col)
	return &classScanner{ys: ys, col: col}, nil
}

// roundUpSeconds rounds d up to whole seconds, within what libyara's int
// takes; d <= 0 gives 0 (no timeout).
func roundUpSeconds(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	secs := d / time.Second
	if d%time.Second != 0 {
		secs++
	}
	return min(secs, math.MaxInt32) * time.Second
}

// errClosed is returned by Scan after Close.
var errClosed = errors.New("scanner is closed")

// Scan scans buf with v as the external variables and returns the rules
// that matched, nil when none did. On an error (such as the YARA timeout)
// it returns the matches found until then with the error. When the
// partition is in force it runs only the set of buf's class (ClassOf),
// which gives the matches of the whole set.
func (s *Scanner) Scan(buf []byte, v Vars) ([]Match, error) {
	if s.closed {
		return nil, fmt.Errorf("scanning: %w", errClosed)
	}
	cs := s.whole
	if cs == nil {
		if cs = s.class[ClassOf(buf)]; cs == nil {
			return nil, nil // no rule can match content of this class
		}
	}
	if err := cs.setVars(v); err != nil {
		return nil, err
	}
	err := cs.ys.ScanMem(buf)
	var out []Match
	if len(cs.col.matches) > 0 {
		out = slices.Clone(cs.col.matches)
	}
	clear(cs.col.matches)
	cs.col.matches = cs.col.matches[:0]
	if err != nil {
		return out, fmt.Errorf("scanning %d bytes: %w", len(buf), err)
	}
	return out, nil
}

// setVars defines the external variables that changed since the last scan.
func (s *classScanner) setVars(v Vars) error {
	values := [len(externals)]string{v.Filename, v.Filepath, v.Extension, v.Filetype, v.Owner}
	old := [len(externals)]string{s.vars.Filename, s.vars.Filepath, s.vars.Extension, s.vars.Filetype, s.vars.Owner}
	for i, name := range externals {
		if s.varsSet && values[i] == old[i] {
			continue
		}
		if err := s.ys.DefineVariable(name, values[i]); err != nil {
			s.varsSet = false
			return fmt.Errorf("setting external variable %s: %w", name, err)
		}
	}
	s.vars, s.varsSet = v, true
	return nil
}

// Close frees the scanner. Scan fails after Close; Close may be called
// more than once.
func (s *Scanner) Close() {
	if s.whole != nil {
		s.whole.ys.Destroy()
		s.whole = nil
	}
	for c, cs := range s.class {
		if cs != nil {
			cs.ys.Destroy()
			s.class[c] = nil
		}
	}
	s.closed = true
}

// collector is the scan callback: it gathers the matching rules with their
// metadata, keeping only the first string matches. Its slice is reused
// across scans, so a clean scan allocates nothing here.
type collector struct {
	rs      *Ruleset
	matches []Match
}

// RuleMatching implements yara.ScanCallback.
func (c *collector) RuleMatching(sc *yara.ScanContext, r *yara.Rule) (bool, error) {
	m := Match{Rule: r.Identifier(), Namespace: r.Namespace()}
	if info, ok := c.rs.index[ruleKey{m.Namespace, m.Rule}]; ok {
		m.File = info.file
		m.Tags = slices.Clone(info.tags)
		m.Meta = maps.Clone(info.meta)
		m.Action = info.action
	}
	m.Strings, m.StringsOmitted = matchedStrings(sc, r)
	c.matches = append(c.matches, m)
	return false, nil
}

// matchedStrings returns the first maxStringMatches string matches of r,
// each with at most maxMatchData bytes, and the number of the others.
func matchedStrings(sc *yara.ScanContext, r *yara.Rule) (out []StringMatch, omitted int) {
	for _, s := range r.Strings() {
		ms := s.Matches(sc)
		for i, m := range ms {
			if len(out) == maxStringMatches {
				omitted += len(ms) - i
				break
			}
			data := m.Data()
			n := len(data)
			if n > maxMatchData {
				data = slices.Clone(data[:maxMatchData])
			}
			out = append(out, StringMatch{ID: s.Identifier(), Offset: m.Base() + m.Offset(), Data: data, Len: n})
		}
	}
	return out, omitted
}

// VarsFor returns the external variables for a file at path whose content
// starts with head (16 bytes are enough: maxMagic), owned by the user named owner.
//
// Extension is the base name's last extension, lower-cased (ASCII letters
// only, other bytes kept as they are), with the dot; leading dots do not
// start an extension (".bashrc" has none). Filetype names the format as
// LOKI and THOR do, for the rules written for them (see fileMagics), among
// others:
//
//	"EXE"          DOS/Windows executable (MZ)
//	"ELF"          ELF executable or object (\x7fE)
//	"MACH-O"       Mach-O, thin or fat (universal) binary
//	"PDF"          PDF document (%PDF)
//	"ZIP"          ZIP archive (PK\x03\x04); "Office" and "JAR" when the
//	               first entry's header says so, "PKZIP" when empty
//	"GZIP"         gzip stream (\x1f\x8b\x08)
//	"UNIX SCRIPT"  script with an absolute interpreter (#!/); "Script" (#!)
//	"PHP", "JSP", "XML", "HTML", "RTF", "OLE", "BATCH", "JPEG", "RAR", ...
//	""             anything else
//
// The README lists every value.
func VarsFor(path string, head []byte, owner string) Vars {
	var v Vars
	if path != "" {
		v.Filename = filepath.Base(path)
		v.Filepath = filepath.Dir(path)
	}
	v.Extension = extension(v.Filename)
	v.Filetype = filetype(head)
	v.Owner = owner
	return v
}

// extension returns the lower-case extension of a base name, with the dot.
func extension(base string) string {
	i := 0
	for i < len(base) && base[i] == '.' {
		i++
	}
	ext := filepath.Ext(base[i:])
	if len(ext) <= 1 {
		return ""
	}
	b := []byte(ext)
	for j, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[j] = c + 'a' - 'A'
		}
	}
	return string(b)
}
