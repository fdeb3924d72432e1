package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/fanguard/fanguard/daemon"
	"github.com/fanguard/fanguard/feeds"
	"github.com/fanguard/fanguard/policy"
	"github.com/fanguard/fanguard/scanner"
)

func newRulesUpdateCommand() *cobra.Command {
	var flags configFlags
	var force, noReload bool
	cmd := &cobra.Command{
		Use:   "update [--force] [--no-reload] [FEED...]",
		Short: "Download the rule feeds and install the new versions that pass the gate",
		Long: `Check each rule feed of the configuration ([[feeds]]; FEED... names some of
them) for a new version, and install it when it passes the gate; then reload
the daemon, if one runs.

For each feed:
  1. download the archive over HTTPS (a conditional request: an unchanged
     feed is not downloaded again), or copy the local directory;
  2. verify it: the pinned sha256, the minisign signature;
  3. unpack it safely: no absolute or ".." paths, links, devices, nor more
     than the bounds on entries and sizes; only the files of subdir that
     match include and not exclude;
  4. the gate: the new version must compile together with the rules in
     force (every error named with file and line); it is scanned against
     [update] canary_files files of this host that its packages vouch for
     (their content matches dpkg's md5sums): a rule that matches one is a
     likely false positive and is held back (kept out, with the rules that
     use it) and named with the file; and the mean scan cost per file must
     stay under [update] max_scan_cost;
  5. then the feed's link in [update] dir is swapped to it in one step; the
     previous version is kept for "fanguard rules rollback".
A feed that fails any step leaves its version in force untouched; the other
feeds go on.

The daemon loads [update] dir between the shipped rules and yours: a file of
yours in /etc/fanguard/rules.d at the same relative path ("FEED/dir/x.yar")
replaces or masks the feed's file.

Exit status: 0 every feed is current (installed or unchanged), or there is
no feed in the configuration; 1 a feed failed or the reload failed; 2 a
usage or configuration error (such as a FEED the configuration does not
name).`,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runRulesUpdate(cmd.Context(), &flags, cmd.Flags().Changed("config"), args, force, noReload, cmd.OutOrStdout())
		},
	}
	flags.register(cmd.Flags())
	cmd.Flags().BoolVar(&force, "force", false, "download and install even an unchanged version, or one rolled back from")
	cmd.Flags().BoolVar(&noReload, "no-reload", false, "do not ask the daemon to reload")
	return cmd
}

func newRulesRollbackCommand() *cobra.Command {
	var flags configFlags
	var noReload bool
	cmd := &cobra.Command{
		Use:   "rollback [--no-reload] FEED",
		Short: "Put the previous version of a rule feed back in force",
		Long: `Swap the feed's link back to the version installed before the current one,
then reload the daemon, if one runs. The version left is not installed again
by "fanguard rules update" until the feed publishes another one (or with
--force). Rolling back twice returns to where you started.

Exit status: 0 rolled back, 1 no previous version or the reload failed, 2 a
usage or configuration error.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runRulesRollback(cmd.Context(), &flags, cmd.Flags().Changed("config"), args[0], noReload, cmd.OutOrStdout())
		},
	}
	flags.register(cmd.Flags())
	cmd.Flags().BoolVar(&noReload, "no-reload", false, "do not ask the daemon to reload")
	return cmd
}

// selectFeeds returns the feeds of cfg named by names, all when none.
func selectFeeds(cfg policy.Config, names []string) ([]policy.FeedConfig, error) {
	if len(cfg.Feeds) == 0 {
		return nil, errors.New("no rule feeds in the configuration: add a [[feeds]] entry (see fanguard.toml)")
	}
	if len(names) == 0 {
		return cfg.Feeds, nil
	}
	var out []policy.FeedConfig
	for _, n := range names {
		i := slices.IndexFunc(cfg.Feeds, func(f policy.FeedConfig) bool { return f.Name == n })
		if i < 0 {
			return nil, fmt.Errorf("no feed named %q in the configuration (feeds: %s)", n, strings.Join(feedNames(cfg), ", "))
		}
		out = append(out, cfg.Feeds[i])
	}
	return out, nil
}

func feedNames(cfg policy.Config) []string {
	var names []string
	for _, f := range cfg.Feeds {
		names = append(names, f.Name)
	}
	return names
}

func runRulesUpdate(ctx context.Context, flags *configFlags, explicit bool, names []string, force, noReload bool, out io.Writer) error {
	if ctx == nil {
		ctx = context.Background()
	}
	cfg, err := flags.load(explicit)
	if err != nil {
		return exitError{code: 2, err: err}
	}
	if len(cfg.Feeds) == 0 && len(names) == 0 {
		// The timer runs on every machine with the package, feeds or not.
		fmt.Fprintln(out, "no rule feeds in the configuration ([[feeds]]): nothing to update")
		return nil
	}
	sel, err := selectFeeds(cfg, names)
	if err != nil {
		return exitError{code: 2, err: err}
	}
	results, err := feeds.Update(ctx, feeds.Options{
		Dir: cfg.Update.Dir, RuleDirs: cfg.Rules.Dirs, Feeds: sel,
		CanaryFiles: cfg.Update.CanaryFiles, Canary: feeds.CanaryOptions{MaxFileSize: cfg.MaxFileSize},
		MaxScanCost: cfg.Update.MaxScanCost, Timeout: cfg.Update.Timeout, ScanTimeout: cfg.ScanTimeout,
		Force: force, UserAgent: "fanguard/" + version,
		Progress: func(feed, msg string) { fmt.Fprintf(out, "%s: %s\n", feed, msg) },
	})
	if err != nil && len(results) == 0 {
		return exitError{code: 1, err: err}
	}
	failed, installed := 0, 0
	for _, r := range results {
		switch r.Outcome {
		case feeds.Failed:
			failed++
			fmt.Fprintf(out, "%s: failed, the version in force stays: %v\n", r.Feed, r.Err)
		case feeds.Unchanged:
			fmt.Fprintf(out, "%s: unchanged, %s\n", r.Feed, versionLine(r.State.Current))
		case feeds.Installed:
			installed++
			v := r.State.Current
			took := r.Took.Round(time.Millisecond).String()
			if r.Downloaded > 0 {
				took += ", " + bytesString(float64(r.Downloaded)) + " downloaded"
			}
			fmt.Fprintf(out, "%s: installed %s in %s\n", r.Feed, versionLine(v), took)
			fmt.Fprintf(out, "%s: gate: %.1fs: compiled in %.1fs; %d trusted files (%s) scanned, %v per file; %s\n",
				r.Feed, v.Gate.Seconds, v.Gate.CompileSecs, v.Gate.Sampled, bytesString(float64(v.Gate.SampleBytes)),
				v.Gate.Cost().Round(time.Microsecond), plural(len(v.HeldBack), "rule")+" held back")
			for _, h := range v.HeldBack {
				fmt.Fprintf(out, "%s: held back %s\n", r.Feed, heldLine(h))
			}
		}
	}
	if err != nil {
		fmt.Fprintf(out, "update interrupted: %v\n", err)
		failed++
	}
	if installed > 0 && !noReload {
		if rerr := reloadIfRunning(ctx, cfg.Control.Socket, out); rerr != nil {
			return rerr
		}
	}
	if failed > 0 {
		return exitError{code: 1, err: fmt.Errorf("%s of %d failed", plural(failed, "feed"), len(sel))}
	}
	return nil
}

func runRulesRollback(ctx context.Context, flags *configFlags, explicit bool, name string, noReload bool, out io.Writer) error {
	cfg, err := flags.load(explicit)
	if err != nil {
		return exitError{code: 2, err: err}
	}
	if _, err := selectFeeds(cfg, []string{name}); err != nil {
		return exitError{code: 2, err: err}
	}
	st, err := feeds.Rollback(cfg.Update.Dir, name, "")
	if err != nil {
		return exitError{code: 1, err: err}
	}
	fmt.Fprintf(out, "%s: rolled back to %s\n", name, versionLine(st.Current))
	if slices.Contains(st.Rejected, st.Previous.ID) {
		fmt.Fprintf(out, "%s: version %.16s is not installed again unless forced (fanguard rules update --force)\n", name, st.Previous.ID)
	}
	if !noReload {
		return reloadIfRunning(ctx, cfg.Control.Socket, out)
	}
	return nil
}

// reloadIfRunning asks the daemon to reload, and says so when none runs
// (the rules load when it starts).
func reloadIfRunning(ctx context.Context, socket string, out io.Writer) error {
	err := runReload(ctx, socket, out)
	var ee exitError
	if errors.As(err, &ee) && ee.code == 3 {
		fmt.Fprintf(out, "no daemon is running (%s): the rules load when it starts\n", socket)
		return nil
	}
	return err
}

// versionLine describes an installed version in one line.
func versionLine(v *feeds.Version) string {
	if v == nil {
		return "no version installed"
	}
	return fmt.Sprintf("version %.16s (%s, %s, installed %s)", v.ID, plural(v.Rules, "rule"), plural(v.Files, "file"),
		v.Installed.Local().Format("2006-01-02 15:04"))
}

func heldLine(h feeds.HeldRule) string {
	s := h.File + ": " + h.Rule + ": " + h.Reason
	if h.Match != "" {
		s += " (" + h.Match + ")"
	}
	return s
}

// feedStatuses returns the function through which the daemon reports the
// feeds of cfg.
func feedStatuses(cfg policy.Config) func() []daemon.StatusFeed {
	if len(cfg.Feeds) == 0 {
		return nil
	}
	return func() []daemon.StatusFeed {
		out := make([]daemon.StatusFeed, 0, len(cfg.Feeds))
		for _, fc := range cfg.Feeds {
			out = append(out, statusFeed(cfg.Update.Dir, fc))
		}
		return out
	}
}

func statusFeed(dir string, fc policy.FeedConfig) daemon.StatusFeed {
	f := daemon.StatusFeed{Name: fc.Name, Source: fc.URL, HeldBack: []string{}}
	st, err := feeds.ReadState(dir, fc.Name)
	if err != nil {
		f.LastError = err.Error()
		return f
	}
	f.Checked, f.LastError = st.Checked, st.LastError
	if st.Source != "" {
		f.Source = st.Source
	}
	if v := st.Current; v != nil {
		f.Version, f.Installed, f.Rules = v.ID, v.Installed, v.Rules
		for _, h := range v.HeldBack {
			f.HeldBack = append(f.HeldBack, heldLine(h))
		}
	}
	return f
}

// feedLine describes a feed of the status in one line.
func feedLine(f daemon.StatusFeed) string {
	if f.Version == "" {
		s := "never installed (fanguard rules update)"
		if f.LastError != "" {
			s += "; last error: " + firstLine(f.LastError)
		}
		return s
	}
	age := "never checked"
	if f.AgeSeconds >= 0 {
		age = "checked " + time.Duration(f.AgeSeconds*float64(time.Second)).Round(time.Minute).String() + " ago"
	}
	s := fmt.Sprintf("%.16s, %s, %d held back, %s", f.Version, plural(f.Rules, "rule"), len(f.HeldBack), age)
	if f.Stale {
		s += " (stale)"
	}
	if f.LastError != "" {
		s += "; last error: " + firstLine(f.LastError)
	}
	return s
}

func firstLine(s string) string {
	first, _, _ := strings.Cut(s, "\n")
	return first
}

// feedDocs returns the feeds of cfg as the daemon's status shows them,
// aged as of now; never nil.
func feedDocs(cfg policy.Config, now time.Time) []daemon.StatusFeed {
	fs := []daemon.StatusFeed{}
	if f := feedStatuses(cfg); f != nil {
		fs = f()
	}
	daemon.AgeFeeds(fs, now, cfg.Update.MaxAge)
	return fs
}

// writeFeeds writes the feeds section of "rules list".
func writeFeeds(w io.Writer, cfg policy.Config, now time.Time) {
	fs := feedDocs(cfg, now)
	if len(fs) == 0 {
		return
	}
	fmt.Fprintf(w, "\nRule feeds (in %s):\n", cfg.Update.Dir)
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	for _, f := range fs {
		fmt.Fprintf(tw, "  %s\t%s\t%s\n", f.Name, feedLine(f), f.Source)
	}
	tw.Flush()
	for _, f := range fs {
		for _, h := range f.HeldBack {
			fmt.Fprintf(w, "  %s: held back %s\n", f.Name, h)
		}
	}
}

// loadRulesFallback loads the rules as the daemon does, and when a feed is
// broken (its link leads nowhere, or a file of it no longer compiles: a
// libyara upgrade, a damaged disk) rolls that feed back to its previous
// version and loads again: the daemon keeps running on the last good
// version instead of without the feed's rules.
func loadRulesFallback(cfg policy.Config, log *zap.Logger) (*scanner.Ruleset, error) {
	rs, err := loadRules(cfg)
	if len(cfg.Feeds) == 0 || !slices.Contains(cfg.Rules.Dirs, cfg.Update.Dir) {
		return rs, err
	}
	broken := feeds.Broken(cfg.Update.Dir, feedNames(cfg))
	if rs != nil {
		for _, b := range rs.Broken {
			if name := feeds.FeedOf(cfg.Update.Dir, b.Path); name != "" && broken[name] == "" {
				broken[name] = b.Error()
			}
		}
	}
	rolled := false
	for _, name := range feedNames(cfg) {
		why := broken[name]
		if why == "" {
			continue
		}
		st, rerr := feeds.FallBack(cfg.Update.Dir, name, why)
		if rerr != nil {
			log.Error(fmt.Sprintf("rule feed %s broken, and no version to fall back on: %s (%v)", name, why, rerr), zap.String("feed", name), zap.String("problem", why), zap.Error(rerr))
			continue
		}
		rolled = true
		log.Error(fmt.Sprintf("rule feed broken: rolled back to its previous version: feed %s, now version %s: %s", name, st.Current.ID, why), zap.String("feed", name),
			zap.String("problem", why), zap.String("version", st.Current.ID))
	}
	if !rolled {
		return rs, err
	}
	if rs != nil {
		rs.Close()
	}
	return loadRules(cfg)
}
