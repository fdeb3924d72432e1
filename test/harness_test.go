// Package test holds fanguard's integration tests: they build the real
// binary, run it as root against a tmpfs they mount, and open real files.
// They never mark the machine's root filesystem.
package test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fanguard/fanguard/internal/testutil"
)

// binary is the fanguard binary built by TestMain.
var binary string

// eicar is the EICAR test file: detected by configs/rules.d/eicar.yar.
const eicar = `X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*`

// testRules are rules of the tests' own, loaded next to the shipped ones.
const testRules = `
rule test_marker {
	meta: description = "fanguard integration test marker"
	strings: $m = "FANGUARD-TEST-MALWARE-MARKER"
	condition: $m
}

rule test_audit_only {
	meta: action = "audit"
	strings: $m = "FANGUARD-TEST-AUDIT-MARKER"
	condition: $m
}

// Matches "FGSZ" files of exactly 4 KiB: a size change can turn a clean
// file into a detected one.
rule test_size {
	condition: uint32(0) == 0x5a534746 and filesize == 4096
}

// Pathologically slow on purpose: about 56 ns per byte of the file times
// 2,000 (some 3 s for 50 KB here) before it matches, so that a scan can
// be made to outlast the budget.
rule test_slow {
	strings: $m = "FANGUARD-SLOW-TEST"
	condition: $m and for all i in (0..filesize) : ( for all j in (0..2000) : ( uint8(j) != 0xff ) )
}
`

func TestMain(m *testing.M) {
	if sock := os.Getenv("FANGUARD_TEST_GET_SOCKET"); sock != "" {
		os.Exit(httpGet(sock, os.Getenv("FANGUARD_TEST_GET_PATH")))
	}
	if u := os.Getenv("FANGUARD_TEST_HTTP_URL"); u != "" {
		os.Exit(httpOver(os.Getenv("FANGUARD_TEST_HTTP_METHOD"), u))
	}
	// A -race binary sleeps 1 s at exit for late reports; the daemon and
	// the commands the tests run are race-built, and exit often.
	os.Setenv("GORACE", strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	os.Exit(buildAndRun(m))
}

// httpGet is what this test binary does when it is re-run (as another
// user, see asNobody) to GET path on a control socket: it prints the HTTP
// status code.
func httpGet(sock, path string) int {
	c := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
	}}
	resp, err := c.Get("http://fanguard" + path)
	if err != nil {
		fmt.Println(err)
		return 1
	}
	resp.Body.Close()
	fmt.Print(resp.StatusCode)
	return 0
}

// asNobody returns the command line prefix that runs a program as the
// user nobody (setpriv), and lets nobody reach the daemon's control socket
// and run the binaries, so that what refuses is the daemon's own check.
// It skips without setpriv, and fails under CI.
func asNobody(t *testing.T, d *daemon) []string {
	t.Helper()
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		if testutil.InCI() {
			t.Fatal("setpriv (util-linux) is needed to run as nobody")
		}
		t.Skip("no setpriv")
	}
	self, _ := os.Executable()
	for _, p := range []string{filepath.Dir(d.Control), filepath.Dir(filepath.Dir(d.Control)),
		binary, filepath.Dir(binary), self, filepath.Dir(self), filepath.Dir(filepath.Dir(self))} {
		os.Chmod(p, 0o755)
	}
	return []string{setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"}
}

// getAsNobody GETs path on the daemon's control socket as the user nobody
// and returns the HTTP status code (or the error).
func getAsNobody(t *testing.T, d *daemon, path string) string {
	t.Helper()
	self, _ := os.Executable()
	prefix := asNobody(t, d)
	cmd := exec.Command(prefix[0], append(prefix[1:], self)...)
	cmd.Env = append(os.Environ(), "FANGUARD_TEST_GET_SOCKET="+d.Control, "FANGUARD_TEST_GET_PATH="+path)
	out, _ := cmd.CombinedOutput()
	return strings.TrimSpace(string(out))
}

func buildAndRun(m *testing.M) int {
	dir, err := os.MkdirTemp("", "fanguard-test-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	binary = filepath.Join(dir, "fanguard")
	args := []string{"build", "-o", binary}
	if testutil.RaceEnabled {
		args = append(args, "-race")
	}
	cmd := exec.Command("go", append(args, "-trimpath", "../cmd/fanguard")...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintf(os.Stderr, "building fanguard: %v\n", err)
		return 1
	}
	return m.Run()
}

// daemon is a running fanguard daemon under test.
type daemon struct {
	t        *testing.T
	cmd      *exec.Cmd
	Pid      int
	Dir      string     // the protected tmpfs
	RulesDir string     // the tests' own rule directory (test.yar), loaded after configs/rules.d
	exit     chan error // the running process's exit

	Control string // the control socket
	Config  string // the configuration file
	Work    string // the test's directory for the daemon: rules.d, quarantine.db, vault

	mu    sync.Mutex // guards log and notes
	log   bytes.Buffer
	notes []notification
	logc  chan struct{} // signalled on every new log line

	notifySock string  // the NOTIFY_SOCKET the tests listen on
	opts       options // what launch needs again on restart
}

// options for startDaemon.
type options struct {
	config    string        // extra TOML, top-level keys first
	tables    string        // extra TOML tables
	dir       string        // protect this directory instead of a fresh tmpfs
	nofile    int           // if set, the daemon's RLIMIT_NOFILE (soft and hard)
	ruleDirs  []string      // rule directories loaded before the shipped ones and the tests' own
	watchdog  time.Duration // if set, WATCHDOG_USEC for the daemon
	startWait time.Duration // how long to wait for READY=1 (default 60 s)
	// quarantine holds keys of the [quarantine] table (db and vault are the
	// test's own); default: action = "deny".
	quarantine string
	// cgroupProcs, if set, is the cgroup.procs file (v1 or v2) of the
	// cgroup to start the daemon in.
	cgroupProcs string
	// onClose turns [scan] on_close on (its default). The tests leave it
	// off unless they are about it: scans on close run in the background,
	// at times a test does not choose, and would move the counters the
	// others check.
	onClose bool
	// closeQueue, if set, is [scan] on_close_queue.
	closeQueue int
}

// startDaemon mounts a tmpfs, writes a config that protects only it, runs
// the daemon and waits for READY=1 on a notify socket of its own.
func startDaemon(t *testing.T, o options) *daemon {
	t.Helper()
	testutil.RequireRoot(t)
	dir := o.dir
	if dir == "" {
		dir = testutil.MountTmpfs(t)
	}
	work := t.TempDir()
	rules := filepath.Join(work, "rules.d")
	if err := os.Mkdir(rules, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(rules, "test.yar"), []byte(testRules), 0o644); err != nil {
		t.Fatal(err)
	}
	var dirs []string
	for _, rd := range append(o.ruleDirs, mustAbs(t, "../configs/rules.d"), rules) {
		dirs = append(dirs, strconv.Quote(rd))
	}
	control := filepath.Join(work, "control.sock")
	quarantine := o.quarantine
	if quarantine == "" {
		quarantine = `action = "deny"` // most tests open a detected file again and again
	}
	cfg := fmt.Sprintf("%s\nscan_timeout = \"60s\"\n[rules]\ndirs = [%s]\ncache_dir = %q\n[protect]\npaths = [%q]\n[control]\nsocket = %q\n"+
		"[quarantine]\ndb = %q\nvault = %q\n%s\n%s\n",
		o.config, strings.Join(dirs, ", "), filepath.Join(work, "cache"), dir, control,
		filepath.Join(work, "quarantine.db"), filepath.Join(work, "vault"), quarantine, o.tables)
	cfg += fmt.Sprintf("[scan]\non_close = %v\n", o.onClose)
	if o.closeQueue > 0 {
		cfg += fmt.Sprintf("on_close_queue = %d\n", o.closeQueue)
	}
	cfgPath := filepath.Join(work, "fanguard.toml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}

	sock := filepath.Join(work, "notify.sock")
	ln, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })

	d := &daemon{t: t, Dir: dir, RulesDir: rules, Control: control, Config: cfgPath, Work: work,
		notifySock: sock, opts: o, logc: make(chan struct{}, 1)}
	go d.listen(ln)
	t.Cleanup(func() {
		d.kill() // frees the machine whatever happened
		if t.Failed() {
			t.Logf("daemon log:\n%s", d.Log())
		}
	})
	d.launch()
	return d
}

// launch runs the daemon process on d's configuration and waits for its
// READY=1.
func (d *daemon) launch() {
	t, o := d.t, d.opts
	t.Helper()
	d.cmd = exec.Command(binary, "daemon", "--config", d.Config)
	if o.nofile > 0 || o.cgroupProcs != "" {
		// The shell sets the limits and joins the cgroup, then becomes the daemon.
		script := `exec "$0" daemon --config "$1"`
		if o.nofile > 0 {
			script = fmt.Sprintf("ulimit -n %d && %s", o.nofile, script)
		}
		if o.cgroupProcs != "" {
			script = `echo $$ > "$2" && ` + script
		}
		d.cmd = exec.Command("/bin/sh", "-c", script, binary, d.Config, o.cgroupProcs)
	}
	d.cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+d.notifySock)
	// Should the test binary die without its cleanups (a panic, go test's
	// timeout), the daemon goes with it and the kernel frees the tmpfs.
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if o.watchdog > 0 {
		d.cmd.Env = append(d.cmd.Env, fmt.Sprintf("WATCHDOG_USEC=%d", o.watchdog.Microseconds()))
	}
	stderr, err := d.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	d.exit = make(chan error, 1)
	readyBefore := len(d.notifications())
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	d.Pid = d.cmd.Process.Pid
	go d.collect(d.cmd, d.exit, stderr)

	wait := o.startWait
	if wait == 0 {
		wait = 60 * time.Second
	}
	deadline := time.After(wait)
	for !d.notifiedSince(readyBefore, "READY=1") {
		select {
		case err := <-d.exit:
			d.exit <- err
			t.Fatalf("daemon exited before READY=1: %v\n%s", err, d.Log())
		case <-deadline:
			t.Fatalf("no READY=1 within %v; log:\n%s", wait, d.Log())
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// kill sends SIGKILL to the daemon process and waits for it to be reaped.
// The kernel allows every open still waiting for its answer.
func (d *daemon) kill() {
	if d.cmd == nil || d.cmd.Process == nil {
		return
	}
	d.cmd.Process.Kill()
	err := <-d.exit
	d.exit <- err
}

// restart SIGKILLs the daemon if it still runs, then starts it again on
// the same configuration, database, vault and rules, and waits for READY=1.
func (d *daemon) restart() {
	d.t.Helper()
	d.kill()
	d.launch()
}

// notification is one sd_notify datagram the daemon sent.
type notification struct {
	at  time.Time
	msg string
}

// listen records the daemon's sd_notify datagrams.
func (d *daemon) listen(ln *net.UnixConn) {
	buf := make([]byte, 4096)
	for {
		n, err := ln.Read(buf)
		if err != nil {
			return
		}
		d.mu.Lock()
		d.notes = append(d.notes, notification{time.Now(), string(buf[:n])})
		d.mu.Unlock()
	}
}

// notifications returns the datagrams received so far.
func (d *daemon) notifications() []notification {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]notification(nil), d.notes...)
}

// notified reports whether a datagram contained msg.
func (d *daemon) notified(msg string) bool {
	return d.notifiedSince(0, msg)
}

// notifiedSince reports whether a datagram after the first n contained msg.
func (d *daemon) notifiedSince(n int, msg string) bool {
	for _, note := range d.notifications()[n:] {
		if strings.Contains(note.msg, msg) {
			return true
		}
	}
	return false
}

func (d *daemon) collect(cmd *exec.Cmd, exit chan<- error, r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		d.mu.Lock()
		d.log.Write(sc.Bytes())
		d.log.WriteByte('\n')
		d.mu.Unlock()
		select {
		case d.logc <- struct{}{}:
		default:
		}
	}
	exit <- cmd.Wait()
}

// Log returns everything the daemon logged so far.
func (d *daemon) Log() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.log.String()
}

// waitLog waits until a log line contains all of parts, and returns it.
func (d *daemon) waitLog(timeout time.Duration, parts ...string) string {
	d.t.Helper()
	deadline := time.After(timeout)
	for {
		for _, line := range strings.Split(d.Log(), "\n") {
			if containsAll(line, parts) {
				return line
			}
		}
		select {
		case <-d.logc:
		case <-time.After(50 * time.Millisecond):
		case <-deadline:
			d.t.Fatalf("no log line with %q within %v; log:\n%s", parts, timeout, d.Log())
		}
	}
}

func containsAll(s string, parts []string) bool {
	for _, p := range parts {
		if !strings.Contains(s, p) {
			return false
		}
	}
	return true
}

// stop sends SIGTERM, expects exit 0 within 10 s, and returns the counters
// of the daemon's "stopped" line.
func (d *daemon) stop() map[string]float64 {
	d.t.Helper()
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		d.t.Fatal(err)
	}
	select {
	case err := <-d.exit:
		d.exit <- err
		if err != nil {
			d.t.Fatalf("daemon exit: %v", err)
		}
	case <-time.After(10 * time.Second):
		d.t.Fatal("daemon did not exit within 10 s of SIGTERM")
	}
	line := d.waitLog(time.Second, "stopped")
	return fields(d.t, line)
}

// counters asks the running daemon for its counters (SIGUSR1) and returns
// them.
func (d *daemon) counters() map[string]float64 {
	d.t.Helper()
	before := strings.Count(d.Log(), "\tstats: ")
	if err := d.cmd.Process.Signal(syscall.SIGUSR1); err != nil {
		d.t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if log := d.Log(); strings.Count(log, "\tstats: ") > before {
			lines := strings.Split(strings.TrimSpace(log), "\n")
			for i := len(lines) - 1; i >= 0; i-- {
				if strings.Contains(lines[i], "\tstats: ") {
					return fields(d.t, lines[i])
				}
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	d.t.Fatalf("no counters within 5 s of SIGUSR1; log:\n%s", d.Log())
	return nil
}

// waitCounter waits up to 5 s until counter name reaches at least min
// and returns all counters then.
func (d *daemon) waitCounter(name string, min float64) map[string]float64 {
	d.t.Helper()
	return d.waitCounterWithin(name, min, 5*time.Second)
}

// waitCounterWithin is waitCounter with another limit.
func (d *daemon) waitCounterWithin(name string, min float64, within time.Duration) map[string]float64 {
	d.t.Helper()
	deadline := time.Now().Add(within)
	for {
		c := d.counters()
		if c[name] >= min {
			return c
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("counter %s = %v, want at least %v within %v", name, c[name], min, within)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// deltaWhen returns the counters' change since base as soon as cond holds
// of it, or as it is after 5 s. For counters counted just after an answer
// (cached_denials): the opener may read them before they move.
func (d *daemon) deltaWhen(base map[string]float64, cond func(dl map[string]float64) bool) map[string]float64 {
	d.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		dl := delta(base, d.counters())
		if cond(dl) || time.Now().After(deadline) {
			return dl
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// delta returns b - a for each counter.
func delta(a, b map[string]float64) map[string]float64 {
	out := make(map[string]float64)
	for k, v := range b {
		out[k] = v - a[k]
	}
	return out
}

// fields decodes the JSON object that ends a console-encoded zap line.
func fields(t *testing.T, line string) map[string]float64 {
	t.Helper()
	i := strings.Index(line, "{")
	if i < 0 {
		t.Fatalf("no fields in %q", line)
	}
	var raw map[string]any
	if err := json.Unmarshal([]byte(line[i:]), &raw); err != nil {
		t.Fatalf("decoding fields of %q: %v", line, err)
	}
	out := make(map[string]float64)
	for k, v := range raw {
		if f, ok := v.(float64); ok {
			out[k] = f
		}
	}
	return out
}

// fds returns the number of open fds of pid.
func fds(t *testing.T, pid int) int {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

func mustAbs(t *testing.T, p string) string {
	a, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func writeFile(t *testing.T, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
}

// vmRSS returns the resident set size of pid, in bytes.
func vmRSS(t *testing.T, pid int) int64 {
	t.Helper()
	n, err := readRSS(pid)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// readRSS returns VmRSS of /proc/PID/status, in bytes.
func readRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("VmRSS of %d: %q", pid, l)
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

// latencies returns the median, the 99th percentile and the largest of ds.
func latencies(ds []time.Duration) (p50, p99, largest time.Duration) {
	if len(ds) == 0 {
		return 0, 0, 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2], s[len(s)*99/100], s[len(s)-1]
}

// controlDo sends a request to a control socket and returns the status
// code and the body. It keeps no connection open: each would hold an fd
// and a goroutine in the daemon, which TestSoak counts. It returns its
// error, for goroutines other than the test's.
func controlDo(socket, method, path string) (int, []byte, error) {
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var dl net.Dialer
			return dl.DialContext(ctx, "unix", socket)
		},
	}}
	req, err := http.NewRequest(method, "http://fanguard"+path, nil)
	if err != nil {
		return 0, nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	return resp.StatusCode, body, nil
}
