package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/fanguard/fanguard/daemon"
	"github.com/fanguard/fanguard/policy"
	"github.com/fanguard/fanguard/scanner"
	"github.com/fanguard/fanguard/systemd"
)

func newDaemonCommand() *cobra.Command {
	var flags configFlags
	var check bool
	cmd := &cobra.Command{
		Use:   "daemon",
		Short: "Run the on-access scanning daemon in the foreground",
		Long: `Run the on-access scanning daemon in the foreground. It needs root
(CAP_SYS_ADMIN for fanotify). It loads the rules, marks every protected
filesystem (protect.paths, or every local filesystem of protect.fs_types),
tells systemd READY=1, and answers every open until SIGTERM or SIGINT.
SIGHUP reloads the configuration and the rules, as fanguard reload does
(what is in force stays if the new ones do not load); SIGUSR1 logs the
counters. Logs go to the journal when standard error is the journal's
stream, else to standard error ([log] format).

With --check it only checks: it reads the configuration, compiles the
rules, prints the mode, the rules and the filesystems the daemon would
protect, and exits 0 if the daemon would start, 78 (EX_CONFIG) if not. It
places no mark and needs no privilege beyond reading the files.

Exit status: 0 after SIGTERM or SIGINT; 78 (EX_CONFIG) when the
configuration or the rules are wrong (an unknown key, a bad value, a
missing --rules-dir, no rule at all): fix them, restarting will not help;
2 on any other failure.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if check {
				return runCheck(&flags, cmd.Flags().Changed("config"), cmd.OutOrStdout())
			}
			return runDaemon(&flags, cmd.Flags().Changed("config"))
		},
	}
	flags.register(cmd.Flags())
	cmd.Flags().BoolVar(&check, "check", false, "check the configuration and the rules, print what would be protected, and exit (0: would start, 78: would not)")
	return cmd
}

func runDaemon(flags *configFlags, explicit bool) error {
	cfg, err := flags.load(explicit)
	if err != nil {
		return exitError{code: exitConfig, err: err}
	}
	level, err := zapcore.ParseLevel(cfg.Log.Level)
	if err != nil {
		return err
	}
	log, logDropped, closeLog, err := newLogger(zapcore.DebugLevel, cfg.Log.Format)
	if err != nil {
		return err
	}
	defer closeLog()
	// The level in force, which a reload changes (log.level).
	logLevel := zap.NewAtomicLevelAt(level)
	log = log.WithOptions(zap.WrapCore(func(c zapcore.Core) zapcore.Core {
		if lc, err := zapcore.NewIncreaseLevelCore(c, logLevel); err == nil {
			return lc
		}
		return c
	}))

	rules, err := loadRulesFallback(cfg, log)
	if err != nil {
		// The rule directories are configuration; no rules at all too:
		// the administrator must add or fix them. The error names the
		// directories and the broken files.
		return exitError{code: exitConfig, err: err}
	}
	for _, b := range rules.Broken {
		log.Error("rule file left out: "+quotePath(b.Error()), zap.String("file", b.Path), zap.Int("line", b.Line), zap.String("error", b.Msg))
	}
	for _, m := range rules.Masked {
		log.Info("rule file masked: "+quotePath(m), zap.String("name", m))
	}
	if rules.CacheError != nil {
		log.Warn("compiled-rules cache not used: "+rules.CacheError.Error(), zap.Error(rules.CacheError))
	}
	owners, err := daemon.LoadOwners("/etc/passwd")
	if err != nil {
		log.Warn("owner names unavailable, rules and logs see numeric uids: "+err.Error(), zap.Error(err))
	}

	// The quarantine log and vault, before any mark: opening them (and
	// settling moves a crash interrupted) touches files on protected
	// filesystems.
	var recorder daemon.Recorder
	if q, err := daemon.OpenQuarantine(context.Background(), cfg.Quarantine); err != nil {
		log.Error("quarantine unavailable: detections are denied and logged, not recorded nor moved: "+err.Error(), zap.Error(err))
	} else {
		defer q.Close()
		recorder = q
	}
	d, err := daemon.New(daemon.Options{
		Config:     cfg,
		Rules:      rules,
		LoadRules:  func() (*scanner.Ruleset, error) { return loadRulesFallback(cfg, log) },
		LoadConfig: func() (policy.Config, error) { return flags.load(explicit) },
		LogLevel:   &logLevel,
		RuleDirs:   cfg.Rules.Dirs,
		Logger:     log,
		Owners:     owners,
		Notify:     sdNotifier{log: log},
		LogDropped: logDropped,
		Recorder:   recorder,
		Version:    version,
		Feeds:      feedStatuses(cfg),
	})
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if interval, ok := systemd.WatchdogInterval(); ok {
		wd := systemd.NewWatchdog(systemd.WatchdogOptions{Interval: interval, Healthy: d.Healthy})
		go wd.Run(ctx)
	}
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGHUP, syscall.SIGUSR1)
	defer signal.Stop(signals)
	go func() {
		for sig := range signals {
			switch sig {
			case syscall.SIGHUP:
				go d.Reload() // logs its outcome; reloads are serialized
			case syscall.SIGUSR1:
				d.LogStats()
			}
		}
	}()
	if err := d.Run(ctx); err != nil {
		log.Error("daemon failed: "+err.Error(), zap.Error(err))
		return err
	}
	return nil
}

// newLogger logs natively to the journal when standard error is the
// journal, with structured fields (journalctl MESSAGE_ID=... lists
// detections); otherwise to standard error in the format of [log] format.
// Either way through a bounded queue: logging never waits, drops are
// counted.
func newLogger(level zapcore.Level, format string) (log *zap.Logger, dropped func() uint64, closeLog func(), err error) {
	enc, err := daemon.NewLogEncoder(format)
	if err != nil {
		return nil, nil, nil, err
	}
	if systemd.StderrIsJournal() {
		core, err := systemd.NewJournalCore(systemd.JournalOptions{Level: level})
		if err == nil {
			return zap.New(core, zap.AddCaller()), core.Dropped, func() { core.Close() }, nil
		}
		fmt.Fprintf(os.Stderr, "<4>fanguard: logging to standard error: %v\n", err)
	}
	sink := daemon.NewLogSink(os.Stderr, 8192)
	log = zap.New(zapcore.NewCore(enc, zapcore.AddSync(sink), level))
	return log, sink.Dropped, func() { sink.Close() }, nil
}

// sdNotifier tells systemd about the daemon's state; failures are logged,
// never fatal.
type sdNotifier struct {
	n   systemd.Notifier
	log *zap.Logger
}

func (s sdNotifier) Ready()             { s.check(s.n.Ready()) }
func (s sdNotifier) Reloading()         { s.check(s.n.Reloading()) }
func (s sdNotifier) Status(line string) { s.check(s.n.Status(line)) }
func (s sdNotifier) Stopping()          { s.check(s.n.Stopping()) }

func (s sdNotifier) check(err error) {
	if err != nil {
		s.log.Warn("cannot notify systemd: "+err.Error(), zap.Error(err))
	}
}
