package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os/signal"
	"strconv"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/fanguard/fanguard/daemon"
	"github.com/fanguard/fanguard/scanner"
)

func newScanCommand() *cobra.Command {
	var flags configFlags
	var o scanOutput
	var noProgress bool
	cmd := &cobra.Command{
		Use:   "scan [--json] [--quiet] PATH...",
		Short: "Scan files and directories on demand with the daemon's rules",
		Long: `Scan files and directories (recursively, without following symbolic links
inside them) with the same rules and engine as the daemon, in parallel
(workers from the configuration). Files above max_file_size and files that
are not regular are skipped; so are files that cannot be read, which count
as errors.

Output: one line per detection ("PATH: RULE (RULE_FILE)") on standard
output. Each skipped file is named on standard error with the reason
("fanguard: skipped PATH: larger than max_file_size (N bytes)", "...: not a
regular file", "...: unreadable (permission denied)"), and a summary ends
it: "fanguard: scanned 3 files, 1 detection, 2 skipped, 0 errors".

With --json, standard output holds one JSON object per line: a detection
(path, path_b64, size, rule, namespace, rule_file, tags, meta, action, and
strings: id, offset, data as text with invalid UTF-8 bytes as \xNN, data_b64
the exact bytes), or a skipped file (path, path_b64, skipped: "oversize",
"not_regular", "unreadable" or "error", reason, size, error). The summary
stays on standard error.

--quiet prints only detections and errors: no skipped files that are not
errors, no summary, no progress bar.

When standard error is a terminal, a progress bar is shown there while
scanning (files, bytes, rate, detections, time left once the paths have been
counted); --no-progress turns it off. Nothing is added when standard error
is not a terminal.

Exit status: 0 nothing found, 1 at least one detection, 2 an error and no
detection (a file could not be read, or the rules could not be loaded).`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.stdout, o.stderr = cmd.OutOrStdout(), cmd.ErrOrStderr()
			return runScan(&flags, cmd.Flags().Changed("config"), &o, !noProgress && !o.quiet, args)
		},
	}
	flags.register(cmd.Flags())
	cmd.Flags().BoolVar(&o.asJSON, "json", false, "print one JSON object per detection or skipped file")
	cmd.Flags().BoolVarP(&o.quiet, "quiet", "q", false, "print only detections and errors (no skipped files, no summary, no progress)")
	cmd.Flags().BoolVar(&noProgress, "no-progress", false, "show no progress bar, even on a terminal")
	return cmd
}

// scanOutput is where and how scan writes its results.
type scanOutput struct {
	asJSON, quiet  bool
	stdout, stderr io.Writer
	enc            *json.Encoder // on stdout, for asJSON
}

// detectionJSON is the --json form of one detection.
type detectionJSON struct {
	Path      string            `json:"path"`
	PathB64   []byte            `json:"path_b64"`
	Size      int64             `json:"size"`
	Rule      string            `json:"rule"`
	Namespace string            `json:"namespace"`
	RuleFile  string            `json:"rule_file"`
	Tags      []string          `json:"tags,omitempty"`
	Meta      map[string]string `json:"meta,omitempty"`
	Action    string            `json:"action"`
	Strings   []stringJSON      `json:"strings,omitempty"`
}

type stringJSON struct {
	ID      string `json:"id"`
	Offset  int64  `json:"offset"`
	Data    string `json:"data"`     // as text: invalid UTF-8 bytes as \xNN
	DataB64 []byte `json:"data_b64"` // the exact bytes, in base64
}

// skippedJSON is the --json form of a file not scanned.
type skippedJSON struct {
	Path    string `json:"path"`
	PathB64 []byte `json:"path_b64"`
	Skipped string `json:"skipped"` // oversize, not_regular, unreadable or error
	Reason  string `json:"reason"`  // for people
	Size    int64  `json:"size,omitempty"`
	Error   string `json:"error,omitempty"`
}

// The values of skippedJSON.Skipped.
const (
	skipOversize   = "oversize"
	skipNotRegular = "not_regular"
	skipUnreadable = "unreadable"
	skipError      = "error"
)

// skipOf classifies a result that was not scanned: its skippedJSON.
// maxSize is the size limit in force.
func skipOf(r scanner.PathResult, maxSize int64) skippedJSON {
	j := skippedJSON{Path: jsonText([]byte(r.Path)), PathB64: nonNilBytes([]byte(r.Path)), Size: r.Size}
	switch {
	case r.Err != nil:
		var pe *fs.PathError
		if errors.As(r.Err, &pe) {
			j.Skipped, j.Error = skipUnreadable, pe.Err.Error()
			j.Reason = "unreadable (" + j.Error + ")"
		} else {
			j.Skipped, j.Error = skipError, r.Err.Error()
			j.Reason = "not scanned: " + j.Error
		}
	case r.Skipped == scanner.SkippedTooLarge:
		j.Skipped = skipOversize
		j.Reason = fmt.Sprintf("larger than max_file_size (%d bytes, the limit is %d)", r.Size, maxSize)
	default:
		j.Skipped, j.Reason = skipNotRegular, r.Skipped
	}
	return j
}

func runScan(flags *configFlags, explicit bool, o *scanOutput, showProgress bool, paths []string) error {
	stdout, stderr := o.stdout, o.stderr
	cfg, err := flags.load(explicit)
	if err != nil {
		return exitError{code: 2, err: err}
	}
	rules, err := loadRules(cfg)
	if err != nil {
		return exitError{code: 2, err: err}
	}
	for _, b := range rules.Broken {
		fmt.Fprintf(stderr, "fanguard: rule file left out: %v\n", b)
	}
	owners, _ := daemon.LoadOwners("/etc/passwd")
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	maxSize := cfg.MaxFileSize
	if maxSize <= 0 {
		maxSize = scanner.DefaultMaxFileSize
	}
	var files, detections, errs, skipped int
	o.enc = json.NewEncoder(stdout)
	var bar *progress // nil: no bar
	if showProgress {
		bar = newProgress(stderr, paths, maxSize)
	}
	err = rules.ScanPaths(ctx, paths, scanner.PathOptions{
		Workers:     cfg.Workers,
		MaxFileSize: cfg.MaxFileSize,
		Timeout:     cfg.ScanTimeout,
		Owner: func(uid uint32) string {
			if n, ok := owners[uid]; ok {
				return n
			}
			return strconv.FormatUint(uint64(uid), 10)
		},
	}, func(r scanner.PathResult) {
		if r.Err != nil || r.Skipped != "" {
			if r.Err != nil {
				errs++
				bar.add(r.Size, 0)
			} else {
				skipped++
			}
			if r.Err == nil && o.quiet {
				return
			}
			bar.print(func() { o.skipped(skipOf(r, maxSize), r.Path) })
			return
		}
		files++
		bar.add(r.Size, len(r.Matches))
		if len(r.Matches) == 0 {
			return
		}
		bar.print(func() {
			for _, m := range r.Matches {
				detections++
				o.detection(r, m)
			}
		})
	})
	bar.stop()
	if !o.quiet {
		fmt.Fprintf(stderr, "fanguard: scanned %s, %s, %d skipped, %s\n", plural(files, "file"), plural(detections, "detection"),
			skipped, plural(errs, "error"))
	}
	switch {
	case err != nil:
		return exitError{code: 2, err: err}
	case detections > 0:
		return exitError{code: 1}
	case errs > 0:
		return exitError{code: 2}
	}
	return nil
}

// skipped reports a file not scanned: on standard error, or as a JSON
// object on standard output.
func (o *scanOutput) skipped(j skippedJSON, path string) {
	if o.asJSON {
		o.enc.Encode(j)
		return
	}
	fmt.Fprintf(o.stderr, "fanguard: skipped %s: %s\n", quotePath(path), j.Reason)
}

// detection reports one matching rule of a file.
func (o *scanOutput) detection(r scanner.PathResult, m scanner.Match) {
	if !o.asJSON {
		fmt.Fprintf(o.stdout, "%s: %s (%s)\n", quotePath(r.Path), m.Rule, m.File)
		return
	}
	dj := detectionJSON{Path: jsonText([]byte(r.Path)), PathB64: nonNilBytes([]byte(r.Path)), Size: r.Size, Rule: m.Rule,
		Namespace: m.Namespace, RuleFile: m.File, Tags: m.Tags, Meta: m.Meta, Action: m.Action.String()}
	for _, s := range m.Strings {
		dj.Strings = append(dj.Strings, stringJSON{ID: s.ID, Offset: s.Offset, Data: jsonText(s.Data), DataB64: nonNilBytes(s.Data)})
	}
	o.enc.Encode(dj)
}

// quotePath shows a path as it is when it is printable, and Go-quoted (with
// escapes) when it holds newlines, control bytes or invalid UTF-8, so that
// one detection is always one line.
func quotePath(p string) string {
	q := strconv.Quote(p)
	if q[1:len(q)-1] == p {
		return p
	}
	return q
}
