package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/fanguard/fanguard/policy"
)

func newReloadCommand() *cobra.Command {
	var flags configFlags
	var socket string
	cmd := &cobra.Command{
		Use:   "reload",
		Short: "Reload the configuration and the rules of the running daemon, and wait until they are in force",
		Long: `Ask the running daemon to read its configuration file again, compile its
rules again, and put both in force. It returns when they are (exit 0), or
with the reason they were not (exit 1): a configuration that does not load,
or rules that do not, change nothing. Keys of the configuration that can
change live (mode, budget, on_*, exclusions, log.level, quarantine.action
and max_age, max_file_size) are in force at once; the others (workers,
cache, control socket, protected paths...) are listed as needing a
restart, and keep their values until then. Scans already running finish
with the old rules; no open waits for the compile. Talks to the daemon over
its control socket ([control] socket, root only). Exit 3: no daemon running.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			socket, err := controlSocket(cmd, &flags, socket)
			if err != nil {
				return err
			}
			return runReload(cmd.Context(), socket, cmd.OutOrStdout())
		},
	}
	flags.register(cmd.Flags())
	cmd.Flags().StringVar(&socket, "socket", "", "control socket, instead of [control] socket of the configuration")
	return cmd
}

// controlSocket is the control socket named by --socket, or else by the
// configuration.
func controlSocket(cmd *cobra.Command, flags *configFlags, socket string) (string, error) {
	if len(flags.rulesDir) > 0 {
		return "", exitError{code: 2, err: fmt.Errorf("--rules-dir does not apply to %s: the daemon uses the rule directories of its configuration (--config names the configuration, which names the control socket; --socket the socket itself)", cmd.Name())}
	}
	if socket != "" {
		return socket, nil
	}
	cfg, err := flags.load(cmd.Flags().Changed("config"))
	if err != nil {
		return "", exitError{code: 2, err: err}
	}
	return cfg.Control.Socket, nil
}

// controlClient talks HTTP to the daemon's control socket.
func controlClient(socket string) *http.Client {
	return &http.Client{
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", socket)
			},
		},
	}
}

func runReload(ctx context.Context, socket string, out io.Writer) error {
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://fanguard/reload", nil)
	resp, err := controlClient(socket).Do(req)
	if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
		return exitError{code: 3, err: fmt.Errorf("no daemon is listening on %s", socket)}
	}
	if errors.Is(err, syscall.EACCES) {
		return exitError{code: 1, err: fmt.Errorf("%s: permission denied: the control socket is for root only", socket)}
	}
	if err != nil {
		return exitError{code: 1, err: fmt.Errorf("reloading: %w", err)}
	}
	defer resp.Body.Close()
	var res struct {
		Rules      int    `json:"rules"`
		Files      int    `json:"files"`
		Generation string `json:"generation"`
		FromCache  bool   `json:"from_cache"`
		Unchanged  bool   `json:"unchanged"`
		TookMS     int64  `json:"took_ms"`
		Error      string `json:"error"`
		Broken     []struct {
			Path string `json:"Path"`
			Line int    `json:"Line"`
			Msg  string `json:"Msg"`
		} `json:"broken"`
		Config struct {
			Applied       []policy.Change `json:"applied"`
			RestartNeeded []policy.Change `json:"restart_needed"`
		} `json:"config"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&res); err != nil {
		return exitError{code: 1, err: fmt.Errorf("reading the daemon's answer (HTTP %d): %w", resp.StatusCode, err)}
	}
	if resp.StatusCode != http.StatusOK {
		msg := res.Error
		if msg == "" {
			msg = resp.Status
		}
		return exitError{code: 1, err: errors.New(msg)}
	}
	for _, b := range res.Broken {
		fmt.Fprintf(out, "%s:%d: left out: %s\n", b.Path, b.Line, b.Msg)
	}
	how := "compiled"
	if res.FromCache {
		how = "from the compiled-rules cache"
	}
	if res.Unchanged {
		how += ", unchanged (cached verdicts kept)"
	}
	fmt.Fprintf(out, "rules reloaded: %d rules from %d files, generation %.16s, %s in %d ms\n", res.Rules, res.Files, res.Generation, how, res.TookMS)
	for _, c := range res.Config.Applied {
		fmt.Fprintf(out, "configuration changed: %s\n", c)
	}
	if len(res.Config.RestartNeeded) > 0 {
		names := make([]string, len(res.Config.RestartNeeded))
		for i, c := range res.Config.RestartNeeded {
			names[i] = c.String()
		}
		fmt.Fprintf(out, "restart needed for: %s\n", strings.Join(names, ", "))
	}
	if len(res.Config.Applied)+len(res.Config.RestartNeeded) == 0 {
		fmt.Fprintln(out, "configuration unchanged")
	}
	return nil
}
