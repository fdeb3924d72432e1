package feeds

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/fanguard/fanguard/scanner"
)

// gateOptions says what gate checks a candidate version against.
type gateOptions struct {
	ruleDirs  []string // the rule directories in force, [rules] dirs
	dir       string   // which of them is the feeds directory
	feed      string
	candidate string        // the unpacked version, absolute
	canary    []TrustedFile // trusted files to scan; none: no canary, no cost
	maxCost   time.Duration // mean scan time per trusted file; 0: no bound
	timeout   time.Duration // one scan's bound
}

// gateResult is what a candidate that passed the gate is installed with.
type gateResult struct {
	files    int
	rules    int
	heldBack []HeldRule
	report   GateReport
}

// GateError says why a version did not pass the gate; the rules in force
// are untouched. A plain value.
type GateError struct {
	Feed     string
	Stage    string   // "compile", "canary", "cost"
	Problems []string // one line each: "FILE:LINE: message", a rule and the file it matched, a figure
}

func (e *GateError) Error() string {
	var b strings.Builder
	switch e.Stage {
	case "compile":
		fmt.Fprintf(&b, "feed %s does not compile with the rules in force; not installed:", e.Feed)
	case "cost":
		fmt.Fprintf(&b, "feed %s is held back: its rules cost too much to scan with; not installed:", e.Feed)
	default:
		fmt.Fprintf(&b, "feed %s did not pass the gate (%s); not installed:", e.Feed, e.Stage)
	}
	for _, p := range e.Problems {
		b.WriteString("\n  ")
		b.WriteString(p)
	}
	return b.String()
}

// gate puts a candidate version of a feed through the checks it must pass
// before it goes live: it compiles together with the rules in force (every
// error named with file and line), it matches none of this host's trusted
// files (a rule that does is held back: removed from the candidate, with
// the rules that depend on it), and scanning the trusted files with the
// whole rule set costs at most maxCost per file. It may rewrite files of
// the candidate (holding rules back); it never touches the rules in force.
func gate(opts gateOptions) (gateResult, error) {
	start := time.Now()
	// The loader reports the paths it read, links resolved.
	if c, err := filepath.EvalSymlinks(opts.candidate); err == nil {
		opts.candidate = c
	}
	view, err := makeView(opts.dir, opts.feed, opts.candidate)
	if err != nil {
		return gateResult{}, err
	}
	defer os.RemoveAll(view)
	dirs := slices.Clone(opts.ruleDirs)
	for i, d := range dirs {
		if filepath.Clean(d) == filepath.Clean(opts.dir) {
			dirs[i] = view
		}
	}
	prefix := opts.feed + "/"

	rs, err := loadFeed(dirs, opts.candidate, opts.feed)
	if err != nil {
		return gateResult{}, err
	}
	defer func() {
		if rs != nil {
			rs.Close()
		}
	}()
	var res gateResult
	res.report.CompileSecs = time.Since(start).Seconds()

	// The canary: which of the feed's rules match a trusted file, and
	// what a scan costs.
	first, err := scanTrusted(rs, opts.canary, opts.timeout)
	if err != nil {
		return gateResult{}, err
	}
	res.report.Sampled, res.report.SampleBytes = first.files, first.bytes
	res.report.Matches = len(first.matches)
	if first.files > 0 {
		res.report.CostNanos = int64(first.scanTime) / int64(first.files)
	}
	if opts.maxCost > 0 && first.files > 0 && res.report.Cost() > opts.maxCost {
		return gateResult{}, &GateError{Feed: opts.feed, Stage: "cost", Problems: []string{fmt.Sprintf(
			"a scan costs %v per file on average over %d trusted files (%s) with it, more than update.max_scan_cost = %v",
			res.report.Cost().Round(time.Microsecond), first.files, sizeString(first.bytes), opts.maxCost)}}
	}

	// Hold back, file by file, the feed's rules that matched.
	byFile := make(map[string][]string)   // rule file (relative to the feed) → rules to drop
	matched := make(map[[2]string]string) // (file, rule) → the first trusted file matched
	var again []TrustedFile
	for _, m := range first.matches {
		rel, ok := strings.CutPrefix(m.ns, prefix)
		if !ok {
			continue // a rule in force, not the feed's: not ours to hold back
		}
		k := [2]string{rel, m.rule}
		if _, seen := matched[k]; !seen {
			matched[k] = m.file.Path
			byFile[rel] = append(byFile[rel], m.rule)
		}
		if !slices.ContainsFunc(again, func(t TrustedFile) bool { return t.Path == m.file.Path }) {
			again = append(again, m.file)
		}
	}
	files := make([]string, 0, len(byFile))
	for f := range byFile {
		files = append(files, f)
	}
	slices.Sort(files)
	for _, rel := range files {
		held, err := holdBackIn(opts.candidate, rel, byFile[rel], matched)
		if err != nil {
			return gateResult{}, err
		}
		res.heldBack = append(res.heldBack, held...)
	}
	if len(files) > 0 {
		// Compile again without them, and check that nothing of the
		// feed matches the trusted files that matched.
		rs.Close()
		if rs, err = loadFeed(dirs, opts.candidate, opts.feed); err != nil {
			return gateResult{}, err
		}
		second, err := scanTrusted(rs, again, opts.timeout)
		if err != nil {
			return gateResult{}, err
		}
		var still []string
		for _, m := range second.matches {
			if strings.HasPrefix(m.ns, prefix) {
				still = append(still, fmt.Sprintf("%s: rule %s still matches %s", strings.TrimPrefix(m.ns, prefix), m.rule, m.file.Path))
			}
		}
		if len(still) > 0 {
			return gateResult{}, &GateError{Feed: opts.feed, Stage: "canary", Problems: still}
		}
	}
	for _, f := range rs.Files {
		if strings.HasPrefix(f.Name, prefix) {
			res.files++
			res.rules += f.Rules
		}
	}
	res.report.Seconds = time.Since(start).Seconds()
	return res, nil
}

// loadFeed compiles the rules of dirs (the feeds directory replaced by a
// view in which feed is the candidate) and fails with a GateError naming
// every error in the candidate's files. Errors in other files are not the
// feed's doing: they are left out as the daemon would.
func loadFeed(dirs []string, candidate, feed string) (*scanner.Ruleset, error) {
	rs, err := scanner.Load(scanner.LoadOptions{Dirs: dirs})
	if err != nil && !errors.Is(err, scanner.ErrNoRules) {
		return nil, fmt.Errorf("compiling feed %s: %w", feed, err)
	}
	var problems []string
	for _, b := range rs.Broken {
		rel, ok := below(candidate, b.Path)
		if !ok {
			continue
		}
		b.Path = feed + "/" + rel
		problems = append(problems, b.Error())
	}
	n := 0
	for _, f := range rs.Files {
		if strings.HasPrefix(f.Name, feed+"/") {
			n++
		}
	}
	if len(problems) == 0 && n == 0 {
		problems = append(problems, "it holds no rule file (check its subdir, include and exclude)")
	}
	if len(problems) > 0 || err != nil {
		rs.Close()
		if len(problems) == 0 {
			return nil, fmt.Errorf("compiling feed %s: %w", feed, err)
		}
		return nil, &GateError{Feed: feed, Stage: "compile", Problems: problems}
	}
	return rs, nil
}

// below returns p relative to dir, slash-separated, when p lies below dir.
func below(dir, p string) (string, bool) {
	rel, err := filepath.Rel(dir, p)
	if err != nil || rel == "." || strings.HasPrefix(rel, "..") {
		return "", false
	}
	return filepath.ToSlash(rel), true
}

// makeView makes a rules directory like dir, in which feed is the
// candidate: every other entry of dir is a link to dir's. It lies in dir's
// hidden store, so that the daemon's loader never sees it.
func makeView(dir, feed, candidate string) (string, error) {
	parent := filepath.Join(dir, storeDir)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return "", fmt.Errorf("preparing the gate: %w", err)
	}
	view, err := os.MkdirTemp(parent, ".gate-")
	if err != nil {
		return "", fmt.Errorf("preparing the gate: %w", err)
	}
	des, err := os.ReadDir(dir)
	if err != nil {
		os.RemoveAll(view)
		return "", fmt.Errorf("preparing the gate: %w", err)
	}
	for _, de := range des {
		name := de.Name()
		if strings.HasPrefix(name, ".") || name == feed {
			continue
		}
		if err := os.Symlink(filepath.Join(dir, name), filepath.Join(view, name)); err != nil {
			os.RemoveAll(view)
			return "", fmt.Errorf("preparing the gate: %w", err)
		}
	}
	if err := os.Symlink(candidate, filepath.Join(view, feed)); err != nil {
		os.RemoveAll(view)
		return "", fmt.Errorf("preparing the gate: %w", err)
	}
	return view, nil
}

// trustedMatch is a rule that matched a trusted file.
type trustedMatch struct {
	ns, rule string
	file     TrustedFile
}

// trustedScan is what scanning the trusted files gave.
type trustedScan struct {
	files    int
	bytes    int64
	scanTime time.Duration // in YARA only, not reading
	matches  []trustedMatch
}

// scanTrusted scans files with rs as the daemon would (same external
// variables, same partition by class). A file that cannot be read any more
// is passed over; a scan error (a timeout) is an error: a rule set that
// cannot scan a trusted file in time must not go live.
func scanTrusted(rs *scanner.Ruleset, files []TrustedFile, timeout time.Duration) (trustedScan, error) {
	var out trustedScan
	if len(files) == 0 {
		return out, nil
	}
	s, err := rs.NewScanner(timeout)
	if err != nil {
		return out, fmt.Errorf("scanning trusted files: %w", err)
	}
	defer s.Close()
	for _, f := range files {
		data, err := os.ReadFile(f.Path)
		if err != nil {
			continue
		}
		v := scanner.VarsFor(f.Path, data[:min(len(data), 512)], "root")
		t0 := time.Now()
		ms, err := s.Scan(data, v)
		out.scanTime += time.Since(t0)
		if err != nil {
			return out, fmt.Errorf("scanning trusted file %s: %w", f.Path, err)
		}
		out.files++
		out.bytes += int64(len(data))
		for _, m := range ms {
			out.matches = append(out.matches, trustedMatch{ns: m.Namespace, rule: m.Rule, file: f})
		}
	}
	return out, nil
}

// holdBackIn removes rules from the candidate's file rel (and the rules
// that depend on them), and says what it held back and why. A file that
// cannot be rewritten faithfully is held back whole.
func holdBackIn(candidate, rel string, rules []string, matched map[[2]string]string) ([]HeldRule, error) {
	p := filepath.Join(candidate, filepath.FromSlash(rel))
	src, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("holding back rules of %s: %w", rel, err)
	}
	out, removed, err := HoldBack(src, rules)
	if err != nil {
		if rerr := os.Remove(p); rerr != nil {
			return nil, fmt.Errorf("holding back %s: %w", rel, rerr)
		}
		var held []HeldRule
		for _, r := range rules {
			held = append(held, HeldRule{File: rel, Rule: r, Match: matched[[2]string{rel, r}],
				Reason: "matched a trusted file; the whole file is held back, since it could not be rewritten without the rule (" + err.Error() + ")"})
		}
		return held, nil
	}
	if err := os.WriteFile(p, out, 0o644); err != nil {
		return nil, fmt.Errorf("holding back rules of %s: %w", rel, err)
	}
	var held []HeldRule
	for _, r := range removed {
		h := HeldRule{File: rel, Rule: r, Match: matched[[2]string{rel, r}]}
		if h.Match != "" {
			h.Reason = "matched a trusted file"
		} else {
			h.Reason = "uses a rule held back"
		}
		held = append(held, h)
	}
	return held, nil
}

// sizeString prints a byte count in binary units.
func sizeString(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d bytes", n)
}
