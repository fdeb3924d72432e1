package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/fanguard/fanguard/daemon"
)

func newStatusCommand() *cobra.Command {
	var flags configFlags
	var socket string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show whether the daemon is protecting, and what it costs",
		Long: `Ask the running daemon for its status over its control socket ([control]
socket, root only) and print a summary: health, rules, protected
filesystems, event and scan rates, decision latency, cache hit ratio, uptime,
version and the last detections. --json prints the daemon's status document
as it is.

Exit 0: the daemon runs and is healthy; 1: it runs but is not healthy (the
first line says why), or the status could not be read; 3: no daemon is
running (nothing listens on the socket); 4: permission denied (the socket is
for root only), as LSB's "insufficient privilege".`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			socket, err := controlSocket(cmd, &flags, socket)
			if err != nil {
				return err
			}
			return runStatus(cmd.Context(), socket, asJSON, cmd.OutOrStdout())
		},
	}
	flags.register(cmd.Flags())
	cmd.Flags().StringVar(&socket, "socket", "", "control socket, instead of [control] socket of the configuration")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the status document (JSON)")
	return cmd
}

func runStatus(ctx context.Context, socket string, asJSON bool, out io.Writer) error {
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://fanguard/status", nil)
	resp, err := controlClient(socket).Do(req)
	if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
		fmt.Fprintf(out, "○ fanguard: not running (no daemon listens on %s)\n", socket)
		return exitError{code: 3}
	}
	if errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.EPERM) {
		return errNotRoot(socket)
	}
	if err != nil {
		return exitError{code: 1, err: fmt.Errorf("reading the status: %w", err)}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return exitError{code: 1, err: fmt.Errorf("reading the status: %w", err)}
	}
	if resp.StatusCode == http.StatusForbidden {
		return errNotRoot(socket)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error string `json:"error"`
		}
		msg := resp.Status
		if json.Unmarshal(body, &e) == nil && e.Error != "" {
			msg = e.Error
		}
		return exitError{code: 1, err: errors.New(msg)}
	}
	var st daemon.Status
	if err := json.Unmarshal(body, &st); err != nil {
		return exitError{code: 1, err: fmt.Errorf("decoding the status: %w", err)}
	}
	if asJSON {
		out.Write(body)
	} else {
		printStatus(out, &st)
	}
	if !st.Health.Healthy {
		return exitError{code: 1}
	}
	return nil
}

// exitNoPrivilege is the exit status of status without the privilege to
// ask (LSB's "user had insufficient privilege").
const exitNoPrivilege = 4

// errNotRoot is the error of a status refused for want of privilege.
func errNotRoot(socket string) error {
	return exitError{code: exitNoPrivilege, err: fmt.Errorf("status: permission denied on %s: the control socket is for root only (try sudo fanguard status)", socket)}
}

// printStatus writes the summary in the shape of `systemctl status`.
func printStatus(out io.Writer, st *daemon.Status) {
	var b bytes.Buffer
	state := "active, protecting"
	if st.Protected.Filesystems == 0 {
		state = "active, protecting nothing"
	}
	if !st.Health.Healthy {
		state = "unhealthy: " + st.Health.Reason
	}
	fmt.Fprintf(&b, "● fanguard - on-access malware scanner (pid %d, %s mode): %s\n", st.PID, st.Mode, state)
	line := func(key, format string, args ...any) {
		fmt.Fprintf(&b, "%12s: %s\n", key, fmt.Sprintf(format, args...))
	}
	line("Rules", "%d rules from %d files, generation %s", st.Rules.Count, st.Rules.Files, st.Rules.ShortGeneration)
	fs := "filesystems"
	if st.Protected.Filesystems == 1 {
		fs = "filesystem"
	}
	line("Protecting", "%d %s", st.Protected.Filesystems, fs)
	c := st.Counters
	window := "since start"
	if st.Rates.WindowSeconds >= 59 {
		window = "last minute"
	}
	line("Events", "%d (%.1f/s %s), %d scans (%.1f/s, %s/s), %s, %d timed out, %d overloaded, %s",
		c["events"], st.Rates.EventsPerSec, window, c["scans"], st.Rates.ScansPerSec, bytesString(st.Rates.BytesPerSecond),
		plural(int(c["detections"]), "detection"), c["timed_out"], c["overloaded"], plural(int(c["errors"]), "error"))
	line("Latency", "p50 %s, p99 %s, max %s (read to answer); scans p50 %s, p99 %s, max %s",
		us(st.Latency.P50us), us(st.Latency.P99us), us(st.Latency.MaxUs),
		us(st.ScanLatency.P50us), us(st.ScanLatency.P99us), us(st.ScanLatency.MaxUs))
	line("Pipeline", "%d/%d workers busy, %d queued, %d in flight, %d fds, %d goroutines",
		st.Pipeline.BusyWorkers, st.Pipeline.Workers, st.Pipeline.QueueDepth, st.Pipeline.InFlight, st.Pipeline.OpenFds,
		st.Pipeline.Goroutines)
	if st.Cache.Hits+st.Cache.Misses > 0 {
		line("Cache", "%.1f%% hits (%d of %d lookups), %d entries", 100*st.Cache.HitRatio,
			st.Cache.Hits, st.Cache.Hits+st.Cache.Misses, st.Cache.Entries)
	} else {
		line("Cache", "no lookups yet, %d entries", st.Cache.Entries)
	}
	if oc := st.OnClose; oc.Enabled {
		line("On close", "%d scans, %s, %d queued (%d merged), %d dropped, %d skipped; %d waiting of %d",
			c["close_scans"], plural(int(c["close_detections"]), "detection"), c["close_queued"], c["close_merged"],
			c["close_dropped"], c["close_skipped"], oc.Waiting, oc.Bound)
	} else {
		line("On close", "off ([scan] on_close = false)")
	}
	line("Uptime", "%s (since %s)", time.Duration(st.UptimeSeconds*float64(time.Second)).Round(time.Second).String(),
		st.Started.Local().Format("2006-01-02 15:04:05 MST"))
	line("Version", "%s", st.Version)
	for i, f := range st.Feeds {
		key := ""
		if i == 0 {
			key = "Feeds"
		}
		line(key, "%s: %s", f.Name, feedLine(f))
	}
	if len(st.Unscanned) > 0 {
		b.WriteString("\nOpens answered without a scan (on_timeout, on_overload), by user:\n")
		for i, u := range st.Unscanned {
			if i == 5 {
				fmt.Fprintf(&b, "  ... and %d more users\n", len(st.Unscanned)-i)
				break
			}
			who := fmt.Sprintf("uid %d", u.UID)
			switch {
			case u.UID == ^uint32(0):
				who = "unknown uid"
			case u.UID == ^uint32(0)-1:
				who = "other uids"
			case u.User != "":
				who += " (" + u.User + ")"
			}
			fmt.Fprintf(&b, "  %8d timed out %8d overloaded  %s\n", u.TimedOut, u.Overloaded, who)
		}
	}
	if t := st.TopTalkers; len(t.Executables) > 0 {
		fmt.Fprintf(&b, "\nTop talkers (scan time, last %d minutes):\n", t.WindowMinutes)
		for _, e := range t.Executables {
			fmt.Fprintf(&b, "  %8.3fs %6d scans  %s\n", e.ScanTimeSeconds, e.Scans, quotePath(e.Name))
		}
		for _, d := range t.Directories {
			fmt.Fprintf(&b, "  %8.3fs %6d scans  in %s\n", d.ScanTimeSeconds, d.Scans, quotePath(d.Name))
		}
	}
	if len(st.Detections) == 0 {
		b.WriteString("\nNo detections since the start.\n")
	} else {
		b.WriteString("\nLast detections:\n")
		for _, d := range st.Detections {
			rec := "not recorded"
			if d.Record >= 0 {
				rec = fmt.Sprintf("record %d", d.Record)
			}
			if d.OnClose {
				rec += ", on close"
			}
			fmt.Fprintf(&b, "  %s %-10s %s %s (%s)\n", d.Time.Local().Format("2006-01-02 15:04:05"), d.Action,
				strings.Join(d.Rules, ","), quotePath(d.Path), rec)
		}
	}
	out.Write(b.Bytes())
}

// us formats microseconds as a duration.
func us(v int64) string {
	d := time.Duration(v) * time.Microsecond
	switch {
	case d >= time.Second:
		return d.Round(time.Millisecond).String()
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond).String()
	}
	return d.String()
}

func bytesString(v float64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB"}
	i := 0
	for v >= 1024 && i < len(units)-1 {
		v /= 1024
		i++
	}
	if i == 0 {
		return fmt.Sprintf("%.0f %s", v, units[i])
	}
	return fmt.Sprintf("%.1f %s", v, units[i])
}
