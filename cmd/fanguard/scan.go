package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os/signal"
	"strconv"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/fanguard/fanguard/daemon"
	"github.com/fanguard/fanguard/scanner"
)

func newScanCommand() *cobra.Command {
	var flags configFlags
	var asJSON, noProgress bool
	cmd := &cobra.Command{
		Use:   "scan [--json] PATH...",
		Short: "Scan files and directories on demand with the daemon's rules",
		Long: `Scan files and directories (recursively, without following symbolic links
inside them) with the same rules and engine as the daemon, in parallel
(workers from the configuration). Files above max_file_size and files that
are not regular are skipped.

Output: one line per detection ("PATH: RULE (RULE_FILE)"), or with --json one
JSON object per detection. Errors and a summary go to standard error.
When standard error is a terminal, a progress bar is shown there while
scanning (files, bytes, rate, detections, time left once the paths have been
counted); --no-progress turns it off. Nothing is added when standard error
is not a terminal.

Exit status: 0 nothing found, 1 at least one detection, 2 an error and no
detection (a file could not be read, or the rules could not be loaded).`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runScan(&flags, cmd.Flags().Changed("config"), asJSON, !noProgress, args, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	flags.register(cmd.Flags())
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object per detection")
	cmd.Flags().BoolVar(&noProgress, "no-progress", false, "show no progress bar, even on a terminal")
	return cmd
}

// detectionJSON is the --json form of one detection.
type detectionJSON struct {
	Path      string            `json:"path"`
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
	ID     string `json:"id"`
	Offset int64  `json:"offset"`
	Data   string `json:"data"` // Go-quoted: non-printable bytes escaped
}

func runScan(flags *configFlags, explicit, asJSON, showProgress bool, paths []string, stdout, stderr io.Writer) error {
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

	var files, detections, errs, skipped int
	enc := json.NewEncoder(stdout)
	var bar *progress // nil: no bar
	if showProgress {
		maxSize := cfg.MaxFileSize
		if maxSize <= 0 {
			maxSize = scanner.DefaultMaxFileSize
		}
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
		switch {
		case r.Err != nil:
			errs++
			bar.add(r.Size, 0)
			bar.print(func() { fmt.Fprintf(stderr, "fanguard: %s: %v\n", strconv.Quote(r.Path), r.Err) })
			return
		case r.Skipped != "":
			skipped++
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
				if !asJSON {
					fmt.Fprintf(stdout, "%s: %s (%s)\n", quotePath(r.Path), m.Rule, m.File)
					continue
				}
				dj := detectionJSON{Path: r.Path, Size: r.Size, Rule: m.Rule, Namespace: m.Namespace,
					RuleFile: m.File, Tags: m.Tags, Meta: m.Meta, Action: m.Action.String()}
				for _, s := range m.Strings {
					dj.Strings = append(dj.Strings, stringJSON{ID: s.ID, Offset: s.Offset, Data: strconv.Quote(string(s.Data))})
				}
				enc.Encode(dj)
			}
		})
	})
	bar.stop()
	fmt.Fprintf(stderr, "fanguard: scanned %d files, %d detections, %d skipped, %d errors\n", files, detections, skipped, errs)
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
