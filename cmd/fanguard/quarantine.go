package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"net/http"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/fanguard/fanguard/quarantine"
)

// quarantineFlags are the flags of the quarantine and allow commands.
type quarantineFlags struct {
	config string
	db     string
	vault  string
}

func (f *quarantineFlags) register(fs *pflag.FlagSet) {
	fs.StringVarP(&f.config, "config", "c", defaultConfigPath, "configuration file (TOML); a missing default file means built-in defaults")
	fs.StringVar(&f.db, "db", "", "quarantine database, instead of [quarantine] db of the configuration")
	fs.StringVar(&f.vault, "vault", "", "vault directory, instead of [quarantine] vault of the configuration")
}

// qenv is what a quarantine subcommand works with.
type qenv struct {
	store    *quarantine.Store
	vaultDir string
	maxAge   time.Duration
	maxBytes int64
	socket   string // the daemon's control socket, to tell it the allow list changed
}

// open reads the configuration and opens the database, which must exist:
// reading or changing records never creates it.
func (f *quarantineFlags) open(cmd *cobra.Command) (*qenv, error) { return f.openDB(cmd, false) }

// openCreating is open for a command that may be the database's first
// writer (allow add).
func (f *quarantineFlags) openCreating(cmd *cobra.Command) (*qenv, error) { return f.openDB(cmd, true) }

func (f *quarantineFlags) openDB(cmd *cobra.Command, create bool) (*qenv, error) {
	cf := configFlags{path: f.config}
	cfg, err := cf.load(cmd.Flags().Changed("config"))
	if err != nil {
		return nil, exitError{code: 2, err: err}
	}
	e := &qenv{vaultDir: cfg.Quarantine.Vault, maxAge: cfg.Quarantine.MaxAge, maxBytes: cfg.Quarantine.MaxBytes,
		socket: cfg.Control.Socket}
	db := cfg.Quarantine.DB
	if f.db != "" {
		db = f.db
	}
	if f.vault != "" {
		e.vaultDir = f.vault
	}
	if !create {
		if _, err := os.Lstat(db); errors.Is(err, fs.ErrNotExist) {
			return nil, exitError{code: 1, err: fmt.Errorf("no quarantine database at %s: no detection recorded yet, or [quarantine] db points elsewhere (see --config, --db)", db)}
		}
	}
	if e.store, err = quarantine.Open(db); err != nil {
		return nil, exitError{code: 1, err: err}
	}
	return e, nil
}

func (e *qenv) close() { e.store.Close() }

func (e *qenv) mover() (*quarantine.Mover, error) {
	v, err := quarantine.OpenVault(e.vaultDir)
	if err != nil {
		return nil, exitError{code: 1, err: err}
	}
	return &quarantine.Mover{Store: e.store, Vault: v}, nil
}

// requireRoot refuses everyone but root: the quarantine holds malware and
// the paths and command lines of every user.
func requireRoot(cmd *cobra.Command, _ []string) error {
	if os.Geteuid() != 0 {
		return exitError{code: 1, err: fmt.Errorf("%s: permission denied: the quarantine is for root only (try sudo)", cmd.CommandPath())}
	}
	return nil
}

// actor is who runs the command, for the history: the user behind sudo if
// there is one.
func actor() quarantine.Actor {
	if su, id := os.Getenv("SUDO_USER"), os.Getenv("SUDO_UID"); su != "" && id != "" && os.Getuid() == 0 {
		if uid, err := strconv.ParseUint(id, 10, 32); err == nil {
			return quarantine.Actor{UID: uint32(uid), Name: su + " (sudo)"}
		}
	}
	uid := os.Getuid()
	name := strconv.Itoa(uid)
	if u, err := user.LookupId(name); err == nil {
		name = u.Username
	}
	return quarantine.Actor{UID: uint32(uid), Name: name}
}

func newQuarantineCommand() *cobra.Command {
	flags := &quarantineFlags{}
	cmd := &cobra.Command{
		Use:   "quarantine",
		Short: "Review detections: list, show, restore, delete, purge, export",
		Long: `Review what fanguard caught. Every detection is a record in the quarantine
log ([quarantine] db): when, which rule, which file (path, inode, owner, mode,
sha256), which process opened it, and what became of it. Files caught under
the "quarantine" action sit in the vault ([quarantine] vault) until they are
restored or deleted.

Root only. Exit status: 0 done, 1 an error (no such record, a refusal), 2 a
usage error.`,
		PersistentPreRunE: requireRoot,
	}
	flags.register(cmd.PersistentFlags())
	cmd.AddCommand(newQListCommand(flags), newQShowCommand(flags), newQRestoreCommand(flags),
		newQDeleteCommand(flags), newQPurgeCommand(flags), newQExportCommand(flags))
	return cmd
}

func newQListCommand(flags *quarantineFlags) *cobra.Command {
	var (
		since, until, rule, glob, action string
		limit                            int
		asJSON                           bool
	)
	cmd := &cobra.Command{
		Use:   "list [--since DUR|TIME] [--until DUR|TIME] [--rule R] [--path GLOB] [--action A] [--limit N] [--json]",
		Short: "List detections, newest first",
		Long: `List detections, newest first, as a table: ID, TIME, COUNT, LAST, ACTION,
STATE, RULE, PATH, PROCESS. TIME is when a detection was first seen, COUNT
how many times it was seen (the same file, unchanged, opened by the same
user and program), LAST when it was last seen ("-" when seen once). Paths
and names with control bytes or invalid UTF-8 are shown Go-quoted, with
escapes, never raw.

--since and --until take a duration back from now ("36h", "7d") or a time
("2025-03-01", "2025-03-01 14:00", RFC 3339). --path takes a glob matched
against the whole path: "*" and "?" do not match "/", "**" does.

--json prints one JSON array of records: "path" is the path as a string
(invalid UTF-8 bytes as \xNN), "path_b64" its exact bytes in base64.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f := quarantine.Filter{Rule: rule, PathGlob: glob, Action: action, Limit: limit}
			var err error
			if f.Since, err = parseWhen(since); err != nil {
				return exitError{code: 2, err: fmt.Errorf("--since: %w", err)}
			}
			if f.Until, err = parseWhen(until); err != nil {
				return exitError{code: 2, err: fmt.Errorf("--until: %w", err)}
			}
			switch action {
			case "", quarantine.ActionAudit, quarantine.ActionDeny, quarantine.ActionQuarantine:
			default:
				return exitError{code: 2, err: fmt.Errorf("--action %q: want audit, deny or quarantine", action)}
			}
			e, err := flags.open(cmd)
			if err != nil {
				return err
			}
			defer e.close()
			recs, err := e.store.List(ctxOf(cmd), f)
			if err != nil {
				return exitError{code: 1, err: err}
			}
			out := cmd.OutOrStdout()
			if asJSON {
				js := make([]recordJSON, 0, len(recs))
				for i := range recs {
					js = append(js, toJSON(&recs[i], nil))
				}
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				return enc.Encode(js)
			}
			tw := tabwriter.NewWriter(out, 0, 8, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tTIME\tCOUNT\tLAST\tACTION\tSTATE\tRULE\tPATH\tPROCESS")
			for _, r := range recs {
				act := r.Action
				if r.Late {
					act += " (late)"
				}
				if r.OnClose {
					act += " (on close)"
				}
				last := "-"
				if r.Count > 1 {
					last = r.LastSeen.Local().Format("2006-01-02 15:04:05")
				}
				fmt.Fprintf(tw, "%d\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\n", r.ID, r.Time.Local().Format("2006-01-02 15:04:05"), r.Count, last,
					act, r.State, ruleNames(r.Matches, r.MatchesOmitted), escape(r.Path), fmt.Sprintf("%s [%d]", escape(r.Exe), r.PID))
			}
			return tw.Flush()
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&since, "since", "", "records at or after this time, or this long ago (\"24h\", \"7d\")")
	fs.StringVar(&until, "until", "", "records before this time, or this long ago")
	fs.StringVar(&rule, "rule", "", "records with a match of this rule")
	fs.StringVar(&glob, "path", "", "records whose path matches this glob (\"*\" stays within a directory, \"**\" does not)")
	fs.StringVar(&action, "action", "", "records of this action: audit, deny or quarantine")
	fs.IntVar(&limit, "limit", 0, "at most this many records (0: all)")
	fs.BoolVar(&asJSON, "json", false, "print a JSON array")
	return cmd
}

func newQShowCommand(flags *quarantineFlags) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "show ID [--json]",
		Short: "Show one detection whole: file, process, matched strings, history",
		Long: `Show one detection: the file, the process that opened it, each matched
string with its offset and an escaped excerpt of the bytes around it (from
the vault when the file is there), and the record's history.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := parseID(args[0])
			if err != nil {
				return err
			}
			e, err := flags.open(cmd)
			if err != nil {
				return err
			}
			defer e.close()
			r, err := e.store.Get(ctxOf(cmd), id)
			if err != nil {
				return exitError{code: 1, err: err}
			}
			ctx := e.contexts(r)
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(toJSON(r, ctx))
			}
			return showRecord(cmd.OutOrStdout(), r, ctx)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print a JSON object")
	return cmd
}

func newQRestoreCommand(flags *quarantineFlags) *cobra.Command {
	var (
		to           string
		force, allow bool
	)
	cmd := &cobra.Command{
		Use:   "restore ID [--to PATH] [--force] [--allow]",
		Short: "Put a quarantined file back, with its mode, owner and modification time",
		Long: `Write a quarantined file back to its original path (or --to PATH) with its
mode, owner and modification time. It refuses to replace an existing file
unless --force, and refuses any symbolic link in the target path. The
directory must exist. --allow first adds the file's sha256 to the allow list,
and tells the running daemon ([control] socket), so that fanguard does not
catch it again.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := parseID(args[0])
			if err != nil {
				return err
			}
			var target []byte
			if to != "" {
				abs, err := filepath.Abs(to)
				if err != nil {
					return exitError{code: 2, err: fmt.Errorf("--to: %w", err)}
				}
				target = []byte(abs)
			}
			e, err := flags.open(cmd)
			if err != nil {
				return err
			}
			defer e.close()
			m, err := e.mover()
			if err != nil {
				return err
			}
			allowed := func(ctx context.Context) { e.allowListChanged(ctx, cmd.ErrOrStderr(), true) }
			return runRestore(ctxOf(cmd), cmd.OutOrStdout(), m, id, target, force, allow, allowed)
		},
	}
	cmd.Flags().StringVar(&to, "to", "", "restore to this path instead of the original one")
	cmd.Flags().BoolVar(&force, "force", false, "replace an existing file at the target")
	cmd.Flags().BoolVar(&allow, "allow", false, "also add the file's sha256 to the allow list")
	return cmd
}

// runRestore restores record id; with allow, it first adds its sha256 to
// the allow list and calls allowed, which makes sure the daemon has it.
func runRestore(ctx context.Context, out io.Writer, m *quarantine.Mover, id int64, to []byte, force, allow bool,
	allowed func(context.Context)) error {
	if ctx == nil {
		ctx = context.Background()
	}
	r, err := m.Store.Get(ctx, id)
	if err != nil {
		return exitError{code: 1, err: err}
	}
	if r.State != quarantine.StateQuarantined {
		return exitError{code: 1, err: fmt.Errorf("record %d is %s, not quarantined: nothing to restore", id, r.State)}
	}
	by := actor()
	// Allow first: the daemon must not catch the file again the moment it
	// is back.
	newlyAllowed := false
	if allow {
		was, err := m.Store.IsAllowed(ctx, r.SHA256)
		if err != nil {
			return exitError{code: 1, err: err}
		}
		if err := m.Store.Allow(ctx, r.SHA256, fmt.Sprintf("restored from quarantine record %d", id), by); err != nil {
			return exitError{code: 1, err: err}
		}
		newlyAllowed = !was
		allowed(ctx)
	}
	target := to
	if target == nil {
		target = r.Path
	}
	if err := m.Restore(ctx, id, to, force, by); err != nil {
		if newlyAllowed {
			m.Store.Disallow(ctx, r.SHA256)
		}
		switch {
		case errors.Is(err, quarantine.ErrExist):
			err = fmt.Errorf("%w; use --force to replace it, or --to to restore elsewhere", err)
		case errors.Is(err, quarantine.ErrSymlink):
			err = fmt.Errorf("%w; refused: name a path without symbolic links (--to)", err)
		}
		return exitError{code: 1, err: err}
	}
	if allow {
		ev := quarantine.Event{What: quarantine.EventAllowed, By: by, Detail: "sha256 " + r.SHA256 + " added to the allow list"}
		if err := m.Store.AddEvent(ctx, id, ev); err != nil {
			return exitError{code: 1, err: err}
		}
	}
	fmt.Fprintf(out, "record %d restored to %s\n", id, escape(target))
	if allow {
		fmt.Fprintf(out, "sha256 %s is on the allow list\n", r.SHA256)
	}
	return nil
}

func newQDeleteCommand(flags *quarantineFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "delete ID",
		Short: "Delete a quarantined file from the vault (the record stays)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := parseID(args[0])
			if err != nil {
				return err
			}
			e, err := flags.open(cmd)
			if err != nil {
				return err
			}
			defer e.close()
			m, err := e.mover()
			if err != nil {
				return err
			}
			if err := m.Delete(ctxOf(cmd), id, actor()); err != nil {
				return exitError{code: 1, err: err}
			}
			fmt.Fprintf(cmd.OutOrStdout(), "record %d: the file is deleted from the vault\n", id)
			return nil
		},
	}
}

func newQPurgeCommand(flags *quarantineFlags) *cobra.Command {
	var olderThan, maxBytes string
	cmd := &cobra.Command{
		Use:   "purge [--older-than DUR] [--max-bytes SIZE]",
		Short: "Delete vault content by age and by total size (the records stay)",
		Long: `Delete from the vault the files of records older than --older-than (default
[quarantine] max_age; "0" for no age bound), then the oldest ones until the
vault holds at most --max-bytes (default [quarantine] max_bytes; "0" for no
bound). The records stay, in state "deleted" with a "purged" event. The
daemon does the same at start and daily.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			e, err := flags.open(cmd)
			if err != nil {
				return err
			}
			defer e.close()
			age, size := e.maxAge, e.maxBytes
			if cmd.Flags().Changed("older-than") {
				if age, err = parseDuration(olderThan); err != nil {
					return exitError{code: 2, err: fmt.Errorf("--older-than: %w", err)}
				}
			}
			if cmd.Flags().Changed("max-bytes") {
				var ok bool
				if size, ok = parseSize(maxBytes); !ok {
					return exitError{code: 2, err: fmt.Errorf("--max-bytes %q: want a size such as 10G, 500MiB or 1000000", maxBytes)}
				}
			}
			m, err := e.mover()
			if err != nil {
				return err
			}
			var before time.Time
			if age > 0 {
				before = time.Now().Add(-age)
			}
			res, err := e.store.Purge(ctxOf(cmd), before, size, m.Vault)
			if err != nil {
				return exitError{code: 1, err: err}
			}
			fmt.Fprintf(cmd.OutOrStdout(), "purged %d records: %d files, %d bytes freed\n", res.Records, res.Files, res.Bytes)
			return nil
		},
	}
	cmd.Flags().StringVar(&olderThan, "older-than", "", "purge records older than this (\"90d\", \"720h\"; 0: no bound)")
	cmd.Flags().StringVar(&maxBytes, "max-bytes", "", "then purge the oldest until the vault holds at most this (\"1G\"; 0: no bound)")
	return cmd
}

func newQExportCommand(flags *quarantineFlags) *cobra.Command {
	var since string
	cmd := &cobra.Command{
		Use:   "export [--since DUR|TIME]",
		Short: "Print every record as JSON Lines (one record per line, with history)",
		Long: `Print the records as JSON Lines, oldest first, one record per line with its
history: for shipping to a SIEM. The fields are those of "list --json".`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			t, err := parseWhen(since)
			if err != nil {
				return exitError{code: 2, err: fmt.Errorf("--since: %w", err)}
			}
			e, err := flags.open(cmd)
			if err != nil {
				return err
			}
			defer e.close()
			ctx := ctxOf(cmd)
			recs, err := e.store.List(ctx, quarantine.Filter{Since: t})
			if err != nil {
				return exitError{code: 1, err: err}
			}
			enc := json.NewEncoder(cmd.OutOrStdout())
			for i := len(recs) - 1; i >= 0; i-- {
				r, err := e.store.Get(ctx, recs[i].ID)
				if err != nil {
					return exitError{code: 1, err: err}
				}
				if err := enc.Encode(toJSON(r, nil)); err != nil {
					return exitError{code: 1, err: err}
				}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&since, "since", "", "records at or after this time, or this long ago")
	return cmd
}

func newAllowCommand() *cobra.Command {
	flags := &quarantineFlags{}
	cmd := &cobra.Command{
		Use:   "allow",
		Short: "The allow list: sha256 sums of files fanguard lets through",
		Long: `The allow list holds sha256 sums of files that fanguard lets through even
when a rule matches them (false positives). The daemon consults it before it
acts on a detection. Root only.`,
		PersistentPreRunE: requireRoot,
	}
	flags.register(cmd.PersistentFlags())

	var asJSON bool
	list := &cobra.Command{
		Use:   "list [--json]",
		Short: "List the allow list",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			e, err := flags.open(cmd)
			if err != nil {
				return err
			}
			defer e.close()
			al, err := e.store.AllowList(ctxOf(cmd))
			if err != nil {
				return exitError{code: 1, err: err}
			}
			if asJSON {
				type allowedJSON struct {
					SHA256  string    `json:"sha256"`
					Comment string    `json:"comment"`
					AddedAt time.Time `json:"added_at"`
					AddedBy actorJSON `json:"added_by"`
				}
				js := []allowedJSON{}
				for _, a := range al {
					js = append(js, allowedJSON{a.SHA256, a.Comment, a.AddedAt, actorJSON{a.AddedBy.UID, a.AddedBy.Name}})
				}
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(js)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 8, 2, ' ', 0)
			fmt.Fprintln(tw, "SHA256\tADDED\tBY\tCOMMENT")
			for _, a := range al {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", a.SHA256, a.AddedAt.Local().Format("2006-01-02 15:04:05"),
					escape([]byte(a.AddedBy.String())), escape([]byte(a.Comment)))
			}
			return tw.Flush()
		},
	}
	list.Flags().BoolVar(&asJSON, "json", false, "print a JSON array")

	var comment string
	add := &cobra.Command{
		Use:   "add SHA256 [--comment C]",
		Short: "Add a sha256 to the allow list",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			sum, err := parseSHA256(args[0])
			if err != nil {
				return err
			}
			e, err := flags.openCreating(cmd)
			if err != nil {
				return err
			}
			defer e.close()
			if err := e.store.Allow(ctxOf(cmd), sum, comment, actor()); err != nil {
				return exitError{code: 1, err: err}
			}
			e.allowListChanged(ctxOf(cmd), cmd.ErrOrStderr(), false)
			fmt.Fprintf(cmd.OutOrStdout(), "%s added to the allow list\n", sum)
			return nil
		},
	}
	add.Flags().StringVar(&comment, "comment", "", "why this file is allowed")

	remove := &cobra.Command{
		Use:   "remove SHA256",
		Short: "Remove a sha256 from the allow list",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			sum, err := parseSHA256(args[0])
			if err != nil {
				return err
			}
			e, err := flags.open(cmd)
			if err != nil {
				return err
			}
			defer e.close()
			ok, err := e.store.Disallow(ctxOf(cmd), sum)
			if err != nil {
				return exitError{code: 1, err: err}
			}
			if !ok {
				return exitError{code: 1, err: fmt.Errorf("%s is not on the allow list", sum)}
			}
			e.allowListChanged(ctxOf(cmd), cmd.ErrOrStderr(), false)
			fmt.Fprintf(cmd.OutOrStdout(), "%s removed from the allow list\n", sum)
			return nil
		},
	}
	cmd.AddCommand(list, add, remove)
	return cmd
}

// allowListChanged tells the running daemon, if there is one, that the
// allow list changed, and returns once the daemon has the new list in
// force. Unasked, the daemon finds the change within about a second. If
// the daemon cannot be told (another error than none listening), it says
// so on errOut and, with wait, waits the two seconds in which the daemon
// finds the change by itself.
func (e *qenv) allowListChanged(ctx context.Context, errOut io.Writer, wait bool) {
	if e.socket == "" {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://fanguard/allowlist", nil)
	resp, err := controlClient(e.socket).Do(req)
	if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
		return // no daemon: the next one reads the list at its start
	}
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			return
		}
		err = errors.New(resp.Status)
	}
	fmt.Fprintf(errOut, "warning: the daemon on %s could not be told that the allow list changed (%v); it finds out within a few seconds\n", e.socket, err)
	if wait {
		time.Sleep(2 * time.Second)
	}
}

func ctxOf(cmd *cobra.Command) context.Context {
	if ctx := cmd.Context(); ctx != nil {
		return ctx
	}
	return context.Background()
}

func parseID(s string) (int64, error) {
	id, err := strconv.ParseInt(s, 10, 64)
	if err != nil || id <= 0 {
		return 0, exitError{code: 2, err: fmt.Errorf("%q is not a record id (a positive number, see \"fanguard quarantine list\")", s)}
	}
	return id, nil
}

func parseSHA256(s string) (string, error) {
	if !quarantine.ValidSHA256(s) {
		return "", exitError{code: 2, err: fmt.Errorf("%q is not a sha256 (64 hex digits)", s)}
	}
	return strings.ToLower(s), nil
}

// parseDuration parses a Go duration ("36h", "90m") or a number of days
// ("7d").
func parseDuration(s string) (time.Duration, error) {
	if n, ok := strings.CutSuffix(s, "d"); ok {
		d, err := strconv.ParseFloat(n, 64)
		if err != nil || d < 0 || d > math.MaxInt64/float64(24*time.Hour) {
			return 0, fmt.Errorf("%q is not a number of days", s)
		}
		return time.Duration(d * float64(24*time.Hour)), nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("%q is not a duration such as 36h or 7d", s)
	}
	return d, nil
}

// parseWhen parses a time ("2025-03-01", "2025-03-01 14:00", RFC 3339, in
// local time unless it says otherwise) or a duration back from now. ""
// gives the zero time (no bound).
func parseWhen(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if d, err := parseDuration(s); err == nil {
		return time.Now().Add(-d), nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	for _, layout := range []string{"2006-01-02T15:04:05", "2006-01-02 15:04:05", "2006-01-02 15:04", "2006-01-02"} {
		if t, err := time.ParseInLocation(layout, s, time.Local); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("%q is neither a duration (36h, 7d) nor a time (2025-03-01, 2025-03-01 14:00, RFC 3339)", s)
}

// parseSize parses a byte count as the configuration does: "1000000",
// "500MiB", "10G" (K, M, G, T and KiB... are powers of 1024, KB, MB... of
// 1000).
func parseSize(s string) (int64, bool) {
	s = strings.TrimSpace(s)
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	if i == 0 {
		return 0, false
	}
	mult := map[string]int64{"": 1, "b": 1, "k": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mib": 1 << 20, "g": 1 << 30, "gib": 1 << 30,
		"t": 1 << 40, "tib": 1 << 40, "kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12}[strings.ToLower(strings.TrimSpace(s[i:]))]
	if mult == 0 {
		return 0, false
	}
	n, err := strconv.ParseInt(s[:i], 10, 64)
	if err != nil || n > math.MaxInt64/mult {
		return math.MaxInt64, true
	}
	return n * mult, true
}

// escape shows bytes as they are when they are printable UTF-8, and
// Go-quoted (with escapes) otherwise, so that one record is one line and
// no control byte reaches the terminal.
func escape(b []byte) string { return quotePath(string(b)) }

// jsonText gives bytes as a JSON-safe string: valid UTF-8 as it is, each
// invalid byte as the four characters \xNN. The exact bytes go alongside in
// base64.
func jsonText(b []byte) string {
	if utf8.Valid(b) {
		return string(b)
	}
	var sb strings.Builder
	for len(b) > 0 {
		r, n := utf8.DecodeRune(b)
		if r == utf8.RuneError && n == 1 {
			fmt.Fprintf(&sb, `\x%02x`, b[0])
		} else {
			sb.Write(b[:n])
		}
		b = b[n:]
	}
	return sb.String()
}

// ruleNames lists the rule names of a record's matches, and how many more
// matched that the record does not keep.
func ruleNames(ms []quarantine.Match, omitted int) string {
	var names []string
	for _, m := range ms {
		names = append(names, escape([]byte(m.Rule)))
	}
	if omitted > 0 {
		names = append(names, fmt.Sprintf("(%d more)", omitted))
	}
	if len(names) == 0 {
		return "-"
	}
	return strings.Join(names, ",")
}

// grouped writes n with its digits in groups of three: 6,291,456.
func grouped(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// matchContext is the excerpt of the vault content around one matched
// string: up to contextBytes before and after it.
type matchContext struct {
	before, data, after []byte
}

const contextBytes = 16

// contexts reads, for a record whose file is in the vault, the bytes
// around each matched string. It returns nil when the file is not there.
func (e *qenv) contexts(r *quarantine.Record) map[[2]int]matchContext {
	if r.State != quarantine.StateQuarantined || r.VaultName == "" {
		return nil
	}
	if _, err := os.Stat(e.vaultDir); err != nil {
		return nil
	}
	v, err := quarantine.OpenVault(e.vaultDir)
	if err != nil {
		return nil
	}
	out := make(map[[2]int]matchContext)
	for i, m := range r.Matches {
		for j, s := range m.Strings {
			if c, err := readContext(v, r.VaultName, s.Offset, len(s.Data)); err == nil {
				out[[2]int{i, j}] = c
			}
		}
	}
	return out
}

func readContext(v *quarantine.Vault, name string, off int64, n int) (matchContext, error) {
	if n == 0 {
		n = 1
	}
	start := max(off-contextBytes, 0)
	rc, err := v.Open(name)
	if err != nil {
		return matchContext{}, err
	}
	defer rc.Close()
	if _, err := io.CopyN(io.Discard, rc, start); err != nil {
		return matchContext{}, err
	}
	buf := make([]byte, off-start+int64(n)+contextBytes)
	k, err := io.ReadFull(rc, buf)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return matchContext{}, err
	}
	buf = buf[:k]
	b := int(off - start)
	if b > len(buf) {
		return matchContext{}, io.ErrUnexpectedEOF
	}
	d := min(b+n, len(buf))
	return matchContext{before: buf[:b], data: buf[b:d], after: buf[d:]}, nil
}

func showRecord(out io.Writer, r *quarantine.Record, ctx map[[2]int]matchContext) error {
	tw := tabwriter.NewWriter(out, 0, 8, 1, ' ', 0)
	when := r.Time.Local().Format("2006-01-02 15:04:05.000 MST")
	if r.Late {
		when += " (late: after the open was answered)"
	}
	if r.OnClose {
		when += " (on close: found when the writer below closed the file, before any open)"
	}
	state := r.State
	if r.VaultName != "" {
		state += " (vault file " + r.VaultName + ")"
	}
	fmt.Fprintf(tw, "record\t%d\n", r.ID)
	fmt.Fprintf(tw, "time\t%s\n", when)
	if r.Count > 1 {
		fmt.Fprintf(tw, "seen\t%s times, last at %s\n", grouped(r.Count), r.LastSeen.Local().Format("2006-01-02 15:04:05.000 MST"))
	} else {
		fmt.Fprintf(tw, "seen\tonce\n")
	}
	fmt.Fprintf(tw, "action\t%s\n", r.Action)
	fmt.Fprintf(tw, "state\t%s\n", state)
	fmt.Fprintf(tw, "path\t%s\n", escape(r.Path))
	fmt.Fprintf(tw, "sha256\t%s\n", r.SHA256)
	fmt.Fprintf(tw, "size\t%d bytes\n", r.Size)
	fmt.Fprintf(tw, "file\tmode %s (%04o), owner %d:%d, mtime %s, device %d, inode %d\n", os.FileMode(r.Mode&0o777),
		r.Mode&0o7777, r.UID, r.GID, r.Mtime.Local().Format("2006-01-02 15:04:05.000000000"), r.Dev, r.Ino)
	user := ""
	if r.ProcUser != "" {
		user = " " + quotePath(r.ProcUser)
	}
	exe := escape(r.Exe)
	if len(r.Exe) == 0 {
		exe = "executable unknown (the process was gone, or its /proc not read in time)"
	}
	fmt.Fprintf(tw, "process\tpid %d, uid %d%s, %s\n", r.PID, r.ProcUID, user, exe)
	if r.Unit != "" {
		fmt.Fprintf(tw, "unit\t%s\n", quotePath(r.Unit))
	}
	if r.Container != "" {
		fmt.Fprintf(tw, "container\t%s\n", quotePath(r.Container))
	}
	cmdline := commandLine(r.Cmdline)
	if r.CmdlineLen > int64(len(r.Cmdline)) {
		cmdline += fmt.Sprintf(" ... (truncated: the first %s of %s bytes in all)", grouped(int64(len(r.Cmdline))), grouped(r.CmdlineLen))
	}
	if len(r.Cmdline) == 0 {
		cmdline = "unknown"
	}
	fmt.Fprintf(tw, "command line\t%s\n", cmdline)
	fmt.Fprintf(tw, "rules generation\t%s\n", r.RulesGeneration)
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(out, "\nmatches:")
	for i, m := range r.Matches {
		fmt.Fprintf(out, "  %s", escape([]byte(m.Rule)))
		if m.Namespace != "" || m.RuleFile != "" {
			fmt.Fprintf(out, " (%s, %s)", escape([]byte(m.Namespace)), escape([]byte(m.RuleFile)))
		}
		fmt.Fprintln(out)
		if len(m.Tags) > 0 {
			var tags []string
			for _, t := range m.Tags {
				tags = append(tags, escape([]byte(t)))
			}
			fmt.Fprintf(out, "    tags: %s\n", strings.Join(tags, ", "))
		}
		if len(m.Meta) > 0 {
			keys := make([]string, 0, len(m.Meta))
			for k := range m.Meta {
				keys = append(keys, k)
			}
			slices.Sort(keys)
			for _, k := range keys {
				fmt.Fprintf(out, "    meta: %s = %s\n", escape([]byte(k)), strconv.Quote(m.Meta[k]))
			}
		}
		for j, s := range m.Strings {
			cut := ""
			if s.Len > int64(len(s.Data)) {
				cut = fmt.Sprintf(" (the first %s of %s bytes)", grouped(int64(len(s.Data))), grouped(s.Len))
			}
			fmt.Fprintf(out, "    %s at offset %d (0x%x): %s%s\n", escape([]byte(s.ID)), s.Offset, s.Offset, strconv.Quote(string(s.Data)), cut)
			if c, ok := ctx[[2]int{i, j}]; ok {
				fmt.Fprintf(out, "      in the file: %s + %s + %s\n", strconv.Quote(string(c.before)), strconv.Quote(string(c.data)), strconv.Quote(string(c.after)))
			}
		}
		if m.StringsOmitted > 0 {
			fmt.Fprintf(out, "    ... and %s more matched strings, not kept\n", grouped(int64(m.StringsOmitted)))
		}
	}
	if r.MatchesOmitted > 0 {
		fmt.Fprintf(out, "  ... and %s more matching rules, not kept\n", grouped(int64(r.MatchesOmitted)))
	}
	fmt.Fprintln(out, "\nhistory:")
	if len(r.History) == 0 {
		fmt.Fprintln(out, "  (none)")
	}
	for _, ev := range r.History {
		fmt.Fprintf(out, "  %s  %s by %s", ev.Time.Local().Format("2006-01-02 15:04:05"), ev.What, escape([]byte(ev.By.String())))
		if ev.Detail != "" {
			fmt.Fprintf(out, ": %s", escape([]byte(ev.Detail)))
		}
		fmt.Fprintln(out)
	}
	return nil
}

// commandLine shows a NUL-separated argv, each argument escaped (and
// quoted if it has a space).
func commandLine(b []byte) string {
	args := splitArgv(b)
	for i, a := range args {
		s := escape([]byte(a))
		if s == a && (a == "" || strings.ContainsAny(a, " '\"")) {
			s = strconv.Quote(a)
		}
		args[i] = s
	}
	return strings.Join(args, " ")
}

func splitArgv(b []byte) []string {
	b = bytes.TrimSuffix(b, []byte{0})
	if len(b) == 0 {
		return nil
	}
	var out []string
	for _, a := range bytes.Split(b, []byte{0}) {
		out = append(out, string(a))
	}
	return out
}

// recordJSON is the JSON form of a record (list --json, show --json,
// export). Byte strings appear twice: as text (invalid UTF-8 bytes as
// \xNN) and exactly, in base64 (the _b64 fields).
type recordJSON struct {
	ID              int64       `json:"id"`
	Time            time.Time   `json:"time"`
	Action          string      `json:"action"`
	State           string      `json:"state"`
	Late            bool        `json:"late"`
	OnClose         bool        `json:"on_close"`
	Count           int64       `json:"count"`     // times seen
	LastSeen        time.Time   `json:"last_seen"` // "time" is the first
	SHA256          string      `json:"sha256"`
	Size            int64       `json:"size"`
	Path            string      `json:"path"`
	PathB64         []byte      `json:"path_b64"`
	Dev             uint64      `json:"dev"`
	Ino             uint64      `json:"ino"`
	Mode            uint32      `json:"mode"`
	UID             uint32      `json:"uid"`
	GID             uint32      `json:"gid"`
	Mtime           time.Time   `json:"mtime"`
	Process         processJSON `json:"process"`
	RulesGeneration string      `json:"rules_generation"`
	VaultName       string      `json:"vault_name,omitempty"`
	Matches         []matchJSON `json:"matches"`
	MatchesOmitted  int         `json:"matches_omitted"` // matching rules not kept
	History         []eventJSON `json:"history,omitempty"`
}

type processJSON struct {
	PID        int32    `json:"pid"`
	UID        uint32   `json:"uid"`
	User       string   `json:"user,omitempty"`      // the name of uid when recorded
	Unit       string   `json:"unit,omitempty"`      // its systemd unit, from its cgroup
	Container  string   `json:"container,omitempty"` // its container's short id, from its cgroup
	Exe        string   `json:"exe"`
	ExeB64     []byte   `json:"exe_b64"`
	Cmdline    []string `json:"cmdline"`
	CmdlineB64 []byte   `json:"cmdline_b64"` // NUL-separated, as in /proc
	// CmdlineLen is the whole command line's length in bytes; when
	// CmdlineTruncated, cmdline holds only its first bytes.
	CmdlineLen       int64 `json:"cmdline_len"`
	CmdlineTruncated bool  `json:"cmdline_truncated"`
}

type matchJSON struct {
	Rule      string            `json:"rule"`
	Namespace string            `json:"namespace"`
	RuleFile  string            `json:"rule_file"`
	Tags      []string          `json:"tags,omitempty"`
	Meta      map[string]string `json:"meta,omitempty"`
	Strings   []stringMatchJSON `json:"strings,omitempty"`
	// StringsOmitted counts the matched strings not kept.
	StringsOmitted int `json:"strings_omitted"`
}

type stringMatchJSON struct {
	ID     string `json:"id"`
	Offset int64  `json:"offset"`
	Data   []byte `json:"data"`             // base64: the first bytes matched
	Len    int64  `json:"len"`              // how many bytes matched: more than data holds when cut
	Text   string `json:"text"`             // Go-quoted
	Before []byte `json:"before,omitempty"` // base64: bytes before it in the file (show, from the vault)
	After  []byte `json:"after,omitempty"`  // base64: bytes after it
}

type eventJSON struct {
	Time   time.Time `json:"time"`
	What   string    `json:"what"`
	By     actorJSON `json:"by"`
	Detail string    `json:"detail,omitempty"`
}

type actorJSON struct {
	UID  uint32 `json:"uid"`
	Name string `json:"name"`
}

func toJSON(r *quarantine.Record, ctx map[[2]int]matchContext) recordJSON {
	j := recordJSON{
		ID: r.ID, Time: r.Time, Action: r.Action, State: r.State, Late: r.Late, OnClose: r.OnClose, Count: r.Count, LastSeen: r.LastSeen,
		SHA256: r.SHA256, Size: r.Size, MatchesOmitted: r.MatchesOmitted,
		Path: jsonText(r.Path), PathB64: nonNilBytes(r.Path), Dev: r.Dev, Ino: r.Ino, Mode: r.Mode, UID: r.UID, GID: r.GID,
		Mtime: r.Mtime, RulesGeneration: r.RulesGeneration, VaultName: r.VaultName, Matches: []matchJSON{},
		Process: processJSON{PID: r.PID, UID: r.ProcUID, User: jsonText([]byte(r.ProcUser)), Unit: jsonText([]byte(r.Unit)),
			Container: jsonText([]byte(r.Container)), Exe: jsonText(r.Exe), ExeB64: nonNilBytes(r.Exe),
			Cmdline: []string{}, CmdlineB64: nonNilBytes(r.Cmdline),
			CmdlineLen: r.CmdlineLen, CmdlineTruncated: r.CmdlineLen > int64(len(r.Cmdline))},
	}
	for _, a := range splitArgv(r.Cmdline) {
		j.Process.Cmdline = append(j.Process.Cmdline, jsonText([]byte(a)))
	}
	for i, m := range r.Matches {
		mj := matchJSON{Rule: jsonText([]byte(m.Rule)), Namespace: jsonText([]byte(m.Namespace)), RuleFile: jsonText([]byte(m.RuleFile)),
			StringsOmitted: m.StringsOmitted}
		for _, t := range m.Tags {
			mj.Tags = append(mj.Tags, jsonText([]byte(t)))
		}
		if len(m.Meta) > 0 {
			mj.Meta = make(map[string]string, len(m.Meta))
			for k, v := range m.Meta {
				mj.Meta[jsonText([]byte(k))] = jsonText([]byte(v))
			}
		}
		for k, s := range m.Strings {
			sj := stringMatchJSON{ID: jsonText([]byte(s.ID)), Offset: s.Offset, Data: nonNilBytes(s.Data), Len: s.Len, Text: strconv.Quote(string(s.Data))}
			if c, ok := ctx[[2]int{i, k}]; ok {
				sj.Before, sj.After = c.before, c.after
			}
			mj.Strings = append(mj.Strings, sj)
		}
		j.Matches = append(j.Matches, mj)
	}
	for _, e := range r.History {
		j.History = append(j.History, eventJSON{Time: e.Time, What: e.What, By: actorJSON{e.By.UID, e.By.Name}, Detail: e.Detail})
	}
	return j
}

func nonNilBytes(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}
