package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/fanguard/fanguard/daemon"
	"github.com/fanguard/fanguard/scanner"
)

const rulesHelp = `fanguard's rules are YARA files (*.yar, *.yara) in drop-in directories:
by default /usr/lib/fanguard/rules.d (shipped with fanguard), then
/var/lib/fanguard/feeds.d (the rule feeds: "fanguard rules update"), then
/etc/fanguard/rules.d (yours). [rules] dirs in the configuration, or
--rules-dir, name other directories, in order.

  Names      Each directory is read with its subdirectories; a file's name is
             its path below its directory ("eicar.yar",
             "forge/packages/core/x.yar"). Names starting with "." are
             skipped. A symbolic link to a directory is followed at the top
             of a rule directory only (rule feeds are installed that way);
             links to files work at any depth. At most 16 levels of
             subdirectories and 100000 entries per directory: past that, or
             when a subdirectory cannot be read, no rules load from any of
             them (a running daemon keeps the rules in force).
  Override   Files are merged by name: a file in a later directory replaces
             the file of the same name in an earlier one. To change a shipped
             file, copy it to /etc/fanguard/rules.d under the same name (the
             same path, for a file in a subdirectory).
  Mask       An empty file, or a symbolic link to /dev/null, in a later
             directory masks the name: no file of that name loads. A name in
             a subdirectory is masked at the same path:
               ln -s /dev/null /etc/fanguard/rules.d/NAME.yar
               mkdir -p /etc/fanguard/rules.d/forge/packages/core
               ln -s /dev/null /etc/fanguard/rules.d/forge/packages/core/x.yar
  Order      Files load in lexical order of their names, whatever their
             directory ("10-x.yar" before "20-y.yar").
  Namespace  Each file's rules live in a namespace named after the file (its
             name, with subdirectories): two files may use the same rule name,
             and a detection names the rule and its file.
  Broken     A file that does not compile is left out, reported with file and
             line; the other files load. include works only for files inside
             the rule directories, or inside the directories their top-level
             links point to.
  Generation A digest of the files loaded (name, path, content and the
             content of their includes), the masked names and the libyara
             version: any change to the rules gives a new one.

  Feeds      Each rule feed ([[feeds]] in the configuration) is a link
             FEED -> .store/FEED/VERSION in [update] dir, swapped in one step
             by "fanguard rules update" once a new version passed the gate,
             and back by "fanguard rules rollback FEED". Its files are named
             "FEED/PATH"; mask or replace one at that path in
             /etc/fanguard/rules.d.

After changing the rules, check them with "fanguard rules check", then load
them into the running daemon with "fanguard reload" (or systemctl reload
fanguard).`

func newRulesCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "rules",
		Short: "Check, list and update the YARA rules (drop-in directories, feeds)",
		Long:  rulesHelp,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return cmd.Help()
		},
	}
	cmd.AddCommand(newRulesCheckCommand(), newRulesListCommand(), newRulesUpdateCommand(), newRulesRollbackCommand())
	return cmd
}

func newRulesCheckCommand() *cobra.Command {
	var flags configFlags
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "check [--json] [DIR...]",
		Short: "Compile the rules and report every error and warning",
		Long: `Compile the rules as the daemon would, without a daemon and without the
compiled-rules cache, and report every problem. DIR... are the rule
directories, in order; without them, [rules] dirs of the configuration (or
--rules-dir).

Output: one line per problem, "FILE:LINE: error: MESSAGE" or
"FILE:LINE: warning: MESSAGE", then a summary with the generation (its first
16 hex digits). With --json, one JSON document instead:
  {"files": [{"name", "path", "rules"}], "masked": [NAME...],
   "errors": [{"file", "line", "message"}], "warnings": [...],
   "rules": N, "generation": "..."}

Exit status: 0 the rules compile (warnings allowed), 1 an error: a file the
daemon would leave out, no rules at all, or a directory that cannot be read;
2 a usage or configuration error.

See "fanguard rules --help" for how the directories merge.`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runRulesCheck(&flags, cmd.Flags().Changed("config"), asJSON, args, cmd.OutOrStdout())
		},
	}
	flags.register(cmd.Flags())
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON document")
	return cmd
}

func newRulesListCommand() *cobra.Command {
	var flags configFlags
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "list [--json]",
		Short: "List the rule files in load order, with overrides and masks",
		Long: `List what the daemon would load from the rule directories ([rules] dirs of
the configuration, or --rules-dir): the rule files in load order with the
number of rules in each, the files replaced by a later directory's file of
the same name (with both paths), the masked names (with the mask: an empty
file or a symbolic link to /dev/null), the files left out because they do
not compile, and the generation. The rules are compiled for the counts,
without the compiled-rules cache.

It also shows the partition by file class: each scan runs only the rules
that can match its content's class (PE, ELF, Mach-O, other: decided by the
first bytes), compiled apart with only the modules they use. For each class,
the number of rules (private ones included) and the modules imported; the
files that go into every class as they are (they use include, or cannot be
split faithfully); or why the partition is not in force (every scan then
runs every rule).

With --json, one JSON document:
  {"generation": "...", "rules": N, "files": [{"name", "path", "rules"}],
   "overridden": [{"name", "path", "by"}],
   "masked": [{"name", "path", "null"}],  (null: a link to /dev/null)
   "errors": [{"file", "line", "message"}], "missing_dirs": [DIR...],
   "partition": {"in_force": BOOL, "reason": "...",
                 "classes": [{"class", "rules", "imports": [MODULE...]}],
                 "whole": [{"file", "line", "message"}]}}

Exit status: 0 listed, 1 no rule would load or a directory cannot be read,
2 a usage or configuration error.

See "fanguard rules --help" for how the directories merge.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runRulesList(&flags, cmd.Flags().Changed("config"), asJSON, cmd.OutOrStdout())
		},
	}
	flags.register(cmd.Flags())
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON document")
	return cmd
}

// ruleFileJSON is a loaded rule file in the --json output.
type ruleFileJSON struct {
	Name  string `json:"name"`
	Path  string `json:"path"`
	Rules int    `json:"rules"`
}

// problemJSON is an error or a warning in the --json output; File is ""
// and Line 0 when it is not about a file or a line.
type problemJSON struct {
	File    string `json:"file"`
	Line    int    `json:"line"`
	Message string `json:"message"`
}

// checkJSON is the --json output of "rules check".
type checkJSON struct {
	Files      []ruleFileJSON `json:"files"`
	Masked     []string       `json:"masked"`
	Errors     []problemJSON  `json:"errors"`
	Warnings   []problemJSON  `json:"warnings"`
	Rules      int            `json:"rules"`
	Generation string         `json:"generation"`
}

// listJSON is the --json output of "rules list".
type listJSON struct {
	Generation  string         `json:"generation"`
	Rules       int            `json:"rules"`
	Files       []ruleFileJSON `json:"files"`
	Overridden  []overrideJSON `json:"overridden"`
	Masked      []maskJSON     `json:"masked"`
	Errors      []problemJSON  `json:"errors"`
	MissingDirs []string       `json:"missing_dirs"`
	Partition   partitionJSON  `json:"partition"`
	// Feeds are the rule feeds of the configuration, as the daemon's
	// status shows them.
	Feeds []daemon.StatusFeed `json:"feeds"`
}

// partitionJSON is the partition by file class in the --json output.
type partitionJSON struct {
	InForce bool          `json:"in_force"`
	Reason  string        `json:"reason,omitempty"`
	Classes []classJSON   `json:"classes"`
	Whole   []problemJSON `json:"whole"`
}

type classJSON struct {
	Class   string   `json:"class"`
	Rules   int      `json:"rules"`
	Imports []string `json:"imports"`
}

// partitionDoc returns the partition of rs for --json.
func partitionDoc(p scanner.Partition) partitionJSON {
	doc := partitionJSON{InForce: p.InForce, Reason: p.Reason, Classes: []classJSON{}, Whole: []problemJSON{}}
	for _, c := range p.Classes {
		doc.Classes = append(doc.Classes, classJSON{Class: c.Class.String(), Rules: c.Rules, Imports: append([]string{}, c.Imports...)})
	}
	for _, w := range p.Whole {
		doc.Whole = append(doc.Whole, problemJSON{File: w.Path, Line: w.Line, Message: w.Msg})
	}
	return doc
}

type overrideJSON struct {
	Name string `json:"name"`
	Path string `json:"path"` // the file replaced
	By   string `json:"by"`   // the entry in force
}

type maskJSON struct {
	Name string `json:"name"`
	Path string `json:"path"` // the mask
	Null bool   `json:"null"` // a symbolic link to /dev/null, not an empty file
}

// rulesReport is what Load said, for check and list.
type rulesReport struct {
	rs       *scanner.Ruleset // nil when Load failed outright
	errors   []problemJSON    // Broken, then why Load failed
	warnings []problemJSON
}

// loadReport loads the rules of dirs without the cache and collects the
// problems. Any error of Load ends up in the report.
func loadReport(dirs []string) rulesReport {
	rs, err := scanner.Load(scanner.LoadOptions{Dirs: dirs})
	r := rulesReport{rs: rs, errors: []problemJSON{}, warnings: []problemJSON{}}
	if rs != nil {
		for _, b := range rs.Broken {
			r.errors = append(r.errors, problemJSON{File: b.Path, Line: b.Line, Message: b.Msg})
		}
		for _, w := range rs.Warnings {
			r.warnings = append(r.warnings, problemJSON{File: w.Path, Line: w.Line, Message: w.Msg})
		}
		for _, d := range rs.MissingDirs {
			r.warnings = append(r.warnings, problemJSON{File: d, Message: "rule directory does not exist (skipped)"})
		}
	}
	switch {
	case errors.Is(err, scanner.ErrNoRules):
		r.errors = append(r.errors, problemJSON{Message: "no rules to load from " + strings.Join(dirs, ", ")})
	case err != nil:
		r.errors = append(r.errors, problemJSON{Message: err.Error()})
	}
	return r
}

// files returns the loaded files for --json (never null).
func (r rulesReport) files() []ruleFileJSON {
	out := []ruleFileJSON{}
	if r.rs != nil {
		for _, f := range r.rs.Files {
			out = append(out, ruleFileJSON{Name: f.Name, Path: f.Path, Rules: f.Rules})
		}
	}
	return out
}

// exit is exit status 1 when the report holds an error, nil otherwise.
func (r rulesReport) exit() error {
	if len(r.errors) > 0 {
		return exitError{code: 1}
	}
	return nil
}

// problemLine formats a problem as "file:line: kind: message".
func problemLine(kind string, p problemJSON) string {
	switch {
	case p.File == "":
		return kind + ": " + p.Message
	case p.Line > 0:
		return fmt.Sprintf("%s:%d: %s: %s", p.File, p.Line, kind, p.Message)
	default:
		return fmt.Sprintf("%s: %s: %s", p.File, kind, p.Message)
	}
}

// ruleDirs returns the rule directories: dirs when given, else those of the
// configuration (or --rules-dir).
func ruleDirs(flags *configFlags, explicit bool, dirs []string) ([]string, error) {
	cfg, err := flags.load(explicit)
	if err != nil {
		return nil, err
	}
	if len(dirs) > 0 {
		return dirs, nil
	}
	return cfg.Rules.Dirs, nil
}

func runRulesCheck(flags *configFlags, explicit, asJSON bool, args []string, stdout io.Writer) error {
	dirs, err := ruleDirs(flags, explicit, args)
	if err != nil {
		return exitError{code: 2, err: err}
	}
	r := loadReport(dirs)
	var gen string
	var count int
	var masked []string
	if r.rs != nil {
		gen, count, masked = r.rs.Generation, r.rs.Count, r.rs.Masked
	}
	if asJSON {
		doc := checkJSON{Files: r.files(), Masked: append([]string{}, masked...), Errors: r.errors,
			Warnings: r.warnings, Rules: count, Generation: gen}
		if err := writeJSON(stdout, doc); err != nil {
			return exitError{code: 2, err: err}
		}
		return r.exit()
	}
	for _, e := range r.errors {
		fmt.Fprintln(stdout, problemLine("error", e))
	}
	for _, w := range r.warnings {
		fmt.Fprintln(stdout, problemLine("warning", w))
	}
	files := 0
	if r.rs != nil {
		files = len(r.rs.Files)
	}
	summary := fmt.Sprintf("%s loaded, %s, %s, %s, %d masked", plural(files, "rule file"), plural(count, "rule"),
		plural(len(r.errors), "error"), plural(len(r.warnings), "warning"), len(masked))
	if r.rs != nil {
		summary += "; generation " + r.rs.ShortGeneration()
	}
	fmt.Fprintln(stdout, summary)
	return r.exit()
}

func runRulesList(flags *configFlags, explicit, asJSON bool, stdout io.Writer) error {
	cfg, err := flags.load(explicit)
	if err != nil {
		return exitError{code: 2, err: err}
	}
	dirs := cfg.Rules.Dirs
	r := loadReport(dirs)
	rs := r.rs
	if rs == nil {
		// No listing without the directories: say why.
		return exitError{code: 1, err: errors.New(r.errors[len(r.errors)-1].Message)}
	}
	if asJSON {
		doc := listJSON{Generation: rs.Generation, Rules: rs.Count, Files: r.files(),
			Overridden: []overrideJSON{}, Masked: []maskJSON{}, Errors: r.errors, MissingDirs: append([]string{}, rs.MissingDirs...),
			Partition: partitionDoc(rs.Partition), Feeds: feedDocs(cfg, time.Now())}
		for _, o := range rs.Overridden {
			doc.Overridden = append(doc.Overridden, overrideJSON(o))
		}
		for _, m := range rs.Masks {
			doc.Masked = append(doc.Masked, maskJSON(m))
		}
		if err := writeJSON(stdout, doc); err != nil {
			return exitError{code: 2, err: err}
		}
		return listExit(rs)
	}

	fmt.Fprintf(stdout, "Rule directories, in order: %s\n", strings.Join(dirs, ", "))
	for _, d := range rs.MissingDirs {
		fmt.Fprintf(stdout, "  (%s does not exist)\n", d)
	}
	fmt.Fprintf(stdout, "Generation %s\n", rs.Generation)
	fmt.Fprintf(stdout, "\nRule files, in load order (%s in all):\n", plural(rs.Count, "rule"))
	tw := tabwriter.NewWriter(stdout, 0, 8, 2, ' ', 0)
	for _, f := range rs.Files {
		fmt.Fprintf(tw, "  %s\t%d\t%s\n", f.Name, f.Rules, f.Path)
	}
	if len(rs.Files) == 0 {
		fmt.Fprintln(tw, "  (none)")
	}
	tw.Flush()
	if len(rs.Overridden) > 0 {
		fmt.Fprintln(stdout, "\nOverridden (a later directory's entry of the same name is used):")
		for _, o := range rs.Overridden {
			fmt.Fprintf(tw, "  %s\t%s\tby %s\n", o.Name, o.Path, o.By)
		}
		tw.Flush()
	}
	if len(rs.Masks) > 0 {
		fmt.Fprintln(stdout, "\nMasked (no file of the name loads):")
		for _, m := range rs.Masks {
			how := "empty file"
			if m.Null {
				how = "symbolic link to /dev/null"
			}
			fmt.Fprintf(tw, "  %s\tby %s\t(%s)\n", m.Name, m.Path, how)
		}
		tw.Flush()
	}
	writePartition(stdout, rs.Partition)
	writeFeeds(stdout, cfg, time.Now())
	if len(r.errors) > 0 {
		fmt.Fprintln(stdout, "\nLeft out (see fanguard rules check):")
		for _, e := range r.errors {
			fmt.Fprintln(stdout, "  "+problemLine("error", e))
		}
	}
	return listExit(rs)
}

// writePartition writes the partition by file class of "rules list".
func writePartition(w io.Writer, p scanner.Partition) {
	if !p.InForce {
		reason := p.Reason
		if reason == "" {
			reason = "no rules"
		}
		fmt.Fprintf(w, "\nPartition by file class: not in force, every scan runs every rule (%s)\n", reason)
		return
	}
	fmt.Fprintln(w, "\nPartition by file class (each scan runs the rules of its content's class):")
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "  class\trules\timports")
	for _, c := range p.Classes {
		imports := strings.Join(c.Imports, ", ")
		if imports == "" {
			imports = "-"
		}
		fmt.Fprintf(tw, "  %s\t%d\t%s\n", c.Class, c.Rules, imports)
	}
	tw.Flush()
	if len(p.Whole) > 0 {
		fmt.Fprintln(w, "  In every class as they are:")
		for _, f := range p.Whole {
			fmt.Fprintf(w, "    %s\n", f.Error())
		}
	}
}

// listExit is list's exit status: 1 when no rule would load.
func listExit(rs *scanner.Ruleset) error {
	if rs.Count == 0 {
		return exitError{code: 1}
	}
	return nil
}

// writeJSON writes v as indented JSON.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return fmt.Errorf("writing JSON: %w", err)
	}
	return nil
}

// plural formats n with noun, adding "s" unless n is 1.
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
