package test

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fanguard/fanguard/internal/testutil"
)

// deniedWithin polls opens of path until one is denied, for at most d.
func deniedWithin(t *testing.T, path string, d time.Duration) bool {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		if _, err := os.ReadFile(path); errors.Is(err, unix.EPERM) {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestNotifyProtocol: READY=1 once the marks are placed, STATUS= lines,
// RELOADING=1 with MONOTONIC_USEC= then READY=1 around a reload, and
// STOPPING=1 on SIGTERM.
func TestNotifyProtocol(t *testing.T) {
	d := startDaemon(t, options{})
	bad := filepath.Join(d.Dir, "eicar.com")
	writeFile(t, bad, eicar, 0o644)
	if _, err := os.ReadFile(bad); !errors.Is(err, unix.EPERM) {
		t.Errorf("right after READY=1, EICAR opens: %v (READY before the marks?)", err)
	}
	if !d.notified("STATUS=protecting 1 filesystems with ") {
		t.Errorf("no STATUS= line: %v", d.notifications())
	}
	before := len(d.notifications())
	if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	d.waitLog(10*time.Second, "rules reloaded")
	deadline := time.Now().Add(2 * time.Second)
	var after []notification
	for time.Now().Before(deadline) {
		after = d.notifications()[before:]
		if len(after) >= 2 && strings.Contains(after[len(after)-1].msg+after[len(after)-2].msg, "READY=1") {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	reloading := regexp.MustCompile(`^RELOADING=1\nMONOTONIC_USEC=[0-9]+$`)
	var sawReloading, sawReadyAfter bool
	for _, n := range after {
		switch {
		case reloading.MatchString(n.msg):
			sawReloading = true
		case n.msg == "READY=1" && sawReloading:
			sawReadyAfter = true
		}
	}
	if !sawReloading || !sawReadyAfter {
		t.Errorf("around a reload: want RELOADING=1 with MONOTONIC_USEC, then READY=1; got %v", after)
	}
	d.stop()
	if !d.notified("STOPPING=1") {
		t.Errorf("no STOPPING=1 on SIGTERM: %v", d.notifications())
	}
}

// TestWatchdog: with WATCHDOG_USEC set, the daemon pings at half the
// interval while the pipeline makes progress, stops while scans overrun
// twice the budget with events waiting, and pings again once they end.
func TestWatchdog(t *testing.T) {
	const interval = 2 * time.Second // pings every second
	d := startDaemon(t, options{config: `budget = "1s"`, watchdog: interval})
	pings := func() []time.Time {
		var out []time.Time
		for _, n := range d.notifications() {
			if n.msg == "WATCHDOG=1" {
				out = append(out, n.at)
			}
		}
		return out
	}
	time.Sleep(2500 * time.Millisecond)
	if n := len(pings()); n < 2 {
		t.Fatalf("%d pings in 2.5 s of a healthy daemon, want at least 2", n)
	}
	// Wedge it: four scans of about 8 s each on two workers, so two wait
	// in the queue while the first two run far past twice the budget.
	for i := range 4 {
		slowFile(t, filepath.Join(d.Dir, fmt.Sprintf("slow%d", i)), 150_000)
	}
	c := d.counters()
	wedged := time.Now()
	for i := range 4 {
		go os.ReadFile(filepath.Join(d.Dir, fmt.Sprintf("slow%d", i)))
	}
	// Unhealthy from about 2 s (twice the budget) to about 8 s (when the
	// queue empties); healthy again after.
	time.Sleep(7 * time.Second)
	var during int
	for _, p := range pings() {
		if p.After(wedged.Add(3*time.Second)) && p.Before(wedged.Add(7*time.Second)) {
			during++
		}
	}
	if during != 0 {
		t.Errorf("%d pings while the pipeline was wedged, want none", during)
	}
	// Once the four scans are done (about 16 s of CPU; longer on a busy
	// machine), the pings come back within two intervals.
	deadline := time.Now().Add(90 * time.Second)
	for d.counters()["scans"] < c["scans"]+4 {
		if time.Now().After(deadline) {
			t.Fatalf("the 4 slow scans not done 90 s after they began")
		}
		time.Sleep(100 * time.Millisecond)
	}
	drained := time.Now()
	resumed := false
	for deadline := drained.Add(2 * interval); time.Now().Before(deadline) && !resumed; time.Sleep(100 * time.Millisecond) {
		for _, p := range pings() {
			if p.After(drained) {
				resumed = true
			}
		}
	}
	if !resumed {
		t.Errorf("no ping within %v after the queue emptied; pings at %v (wedged at %v, emptied at %v)", 2*interval, pings(), wedged, drained)
	}
}

// TestReloadTriggers: a rule added to a rule directory is in force within
// 2 s after a SIGHUP, a `fanguard reload`, or by itself (the directory is
// watched).
func TestReloadTriggers(t *testing.T) {
	d := startDaemon(t, options{})
	tests := []struct {
		name    string
		trigger func(t *testing.T)
	}{
		{"SIGHUP", func(t *testing.T) {
			if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
				t.Fatal(err)
			}
		}},
		{"fanguard reload", func(t *testing.T) {
			code, out, errOut := run(t, "reload", "--socket", d.Control)
			if code != 0 || !strings.Contains(out, "rules reloaded:") {
				t.Errorf("fanguard reload: exit %d, %q, %q", code, out, errOut)
			}
		}},
		{"dropped file", func(*testing.T) {}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			marker := fmt.Sprintf("RELOAD-MARKER-%d", i)
			path := filepath.Join(d.Dir, fmt.Sprintf("target%d", i))
			writeFile(t, path, "x "+marker+" x", 0o644)
			if _, err := os.ReadFile(path); err != nil { // cached clean before the change
				t.Fatal(err)
			}
			writeFile(t, filepath.Join(d.RulesDir, fmt.Sprintf("added%d.yar", i)),
				fmt.Sprintf(`rule added_%d { strings: $m = %q condition: $m }`, i, marker), 0o644)
			added := time.Now()
			tt.trigger(t)
			if !deniedWithin(t, path, 2*time.Second-time.Since(added)) {
				t.Errorf("the new rule does not detect 2 s after it was added")
			}
			t.Logf("in force %v after the file was written", time.Since(added).Round(time.Millisecond))
		})
	}
}

// TestReloadKeepsRulesInForce: a broken file is left out with its file and
// line, the rest load; a reload that would leave no rule fails and the
// rules in force stay.
func TestReloadKeepsRulesInForce(t *testing.T) {
	d := startDaemon(t, options{})
	bad := filepath.Join(d.Dir, "eicar.com")
	writeFile(t, bad, eicar, 0o644)

	broken := filepath.Join(d.RulesDir, "broken.yar")
	writeFile(t, broken, "rule ok_rule { condition: true }\n\nrule broken { condition: $nope }\n", 0o644)
	code, out, errOut := run(t, "reload", "--socket", d.Control)
	if code != 0 || !strings.Contains(out, broken+":3:") {
		t.Errorf("reload with a broken file: exit %d, stdout %q, stderr %q; want 0 and %s:3 named", code, out, errOut, broken)
	}
	if _, err := os.ReadFile(bad); !errors.Is(err, unix.EPERM) {
		t.Errorf("EICAR after a reload with a broken file: %v, want EPERM", err)
	}
	os.Remove(broken)

	// Mask every file: no rule would be left.
	if err := os.Symlink("/dev/null", filepath.Join(d.RulesDir, "eicar.yar")); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(d.RulesDir, "test.yar"), "", 0o644)
	code, _, errOut = run(t, "reload", "--socket", d.Control)
	if code != 1 || !strings.Contains(errOut, "no rules") {
		t.Errorf("reload to zero rules: exit %d, stderr %q; want 1 and the reason", code, errOut)
	}
	if _, err := os.ReadFile(bad); !errors.Is(err, unix.EPERM) {
		t.Errorf("EICAR after a failed reload: %v, want EPERM (the old rules stay)", err)
	}
	d.waitLog(5*time.Second, "reloading rules failed, the rules in force stay")
}

// TestOverrideAndMask: a file of the same name in a later directory
// replaces the shipped one; a symlink to /dev/null masks it.
func TestOverrideAndMask(t *testing.T) {
	d := startDaemon(t, options{})
	bad := filepath.Join(d.Dir, "eicar.com")
	other := filepath.Join(d.Dir, "other")
	writeFile(t, bad, eicar, 0o644)
	writeFile(t, other, "OVERRIDE-MARKER", 0o644)
	override := filepath.Join(d.RulesDir, "eicar.yar")

	writeFile(t, override, `rule eicar_replaced { strings: $m = "OVERRIDE-MARKER" condition: $m }`, 0o644)
	if code, out, errOut := run(t, "reload", "--socket", d.Control); code != 0 {
		t.Fatalf("reload: %d %q %q", code, out, errOut)
	}
	if _, err := os.ReadFile(bad); err != nil {
		t.Errorf("EICAR with the shipped eicar.yar overridden: %v, want allowed", err)
	}
	if _, err := os.ReadFile(other); !errors.Is(err, unix.EPERM) {
		t.Errorf("file matched by the overriding rule: %v, want EPERM", err)
	}

	os.Remove(override)
	if err := os.Symlink("/dev/null", override); err != nil {
		t.Fatal(err)
	}
	if code, out, errOut := run(t, "reload", "--socket", d.Control); code != 0 {
		t.Fatalf("reload: %d %q %q", code, out, errOut)
	}
	for _, p := range []string{bad, other} {
		if _, err := os.ReadFile(p); err != nil {
			t.Errorf("%s with eicar.yar masked: %v, want allowed", filepath.Base(p), err)
		}
	}
}

// TestControlSocketRootOnly: another user cannot reload, nor read status.
func TestControlSocketRootOnly(t *testing.T) {
	d := startDaemon(t, options{})
	nobody := asNobody(t, d)
	reload := append(nobody, binary, "reload", "--socket", d.Control)
	out, err := exec.Command(reload[0], reload[1:]...).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "root only") {
		t.Errorf("reload as nobody: %v, %s; want a refusal", err, out)
	}
	// Even with the socket's mode opened up, the peer check refuses.
	os.Chmod(d.Control, 0o666)
	out, err = exec.Command(reload[0], reload[1:]...).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "root only") {
		t.Errorf("reload as nobody through an open socket: %v, %s; want a refusal", err, out)
	}
	for _, path := range []string{"/status", "/metrics"} {
		if code := getAsNobody(t, d, path); code != "403" {
			t.Errorf("GET %s as nobody: %s, want 403", path, code)
		}
	}
	if d.counters()["reloads"] != 0 {
		t.Error("a reload happened")
	}
}

// reversingLabs returns the rule directories of the ReversingLabs set, or
// skips (fails under CI) when it is not beside the repository.
func reversingLabs(t *testing.T) []string {
	t.Helper()
	// shared/ stands beside the repository (in CI too); /work/shared is
	// where development machines keep it.
	root := mustAbs(t, "../../shared/rules/reversinglabs/yara")
	ents, err := os.ReadDir(root)
	if err != nil {
		root = "/work/shared/rules/reversinglabs/yara"
		ents, err = os.ReadDir(root)
	}
	if err != nil {
		if testutil.InCI() {
			t.Fatalf("the ReversingLabs rule set is not beside the repository: %v", err)
		}
		t.Skipf("no ReversingLabs rule set: %v", err)
	}
	var dirs []string
	for _, e := range ents {
		if e.IsDir() {
			dirs = append(dirs, filepath.Join(root, e.Name()))
		}
	}
	return dirs
}

// TestReloadUnderLoad: opens keep being answered within the budget while
// the full ReversingLabs set is reloaded; startup cold and warm (compiled
// rules cache) and the reload time are reported.
func TestReloadUnderLoad(t *testing.T) {
	rl := reversingLabs(t)
	dir := testutil.MountTmpfs(t)
	const files = 200
	for i := range files {
		writeFile(t, filepath.Join(dir, fmt.Sprintf("f%03d", i)), strings.Repeat(fmt.Sprintf("line %d\n", i), 50), 0o644)
	}
	start := time.Now()
	d := startDaemon(t, options{dir: dir, ruleDirs: rl})
	t.Logf("start-up to READY=1 with %d ReversingLabs directories: %v", len(rl), time.Since(start).Round(time.Millisecond))

	var mu sync.Mutex // guards worst, opens
	var worst time.Duration
	opens := 0
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for r := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				p := filepath.Join(dir, fmt.Sprintf("f%03d", (i+r*files/2)%files))
				t0 := time.Now()
				_, err := os.ReadFile(p)
				took := time.Since(t0)
				if err != nil {
					t.Errorf("open during reload: %v", err)
				}
				mu.Lock()
				worst, opens = max(worst, took), opens+1
				mu.Unlock()
			}
		}()
	}
	time.Sleep(200 * time.Millisecond)
	// A new rule file: the reload must compile (no compiled-rules cache hit).
	writeFile(t, filepath.Join(d.RulesDir, "extra.yar"), `rule extra { strings: $m = "RELOAD-UNDER-LOAD" condition: $m }`, 0o644)
	reloadStart := time.Now()
	code, out, errOut := run(t, "reload", "--socket", d.Control)
	reloadTook := time.Since(reloadStart)
	time.Sleep(300 * time.Millisecond) // opens after the flush: everything rescans with the new rules
	close(stop)
	wg.Wait()
	if code != 0 || !strings.Contains(out, " compiled in ") {
		t.Fatalf("reload: exit %d, %q, %q; want a compile", code, out, errOut)
	}
	t.Logf("reload of the ReversingLabs set: %v (%s); %d opens meanwhile, slowest %v",
		reloadTook.Round(time.Millisecond), strings.TrimSpace(out), opens, worst.Round(time.Microsecond))
	if worst > 5*time.Second {
		t.Errorf("an open took %v during the reload, budget 5 s", worst)
	}
	d.stop()
}

// TestReloadDropIn: a reload reads the drop-ins in fanguard.toml.d again.
// A new drop-in with mode = "audit" takes effect; a broken one is refused
// with its own file and line, and changes nothing; removing it returns to
// the main file's enforce.
func TestReloadDropIn(t *testing.T) {
	d := startDaemon(t, options{})
	dir := d.Config + ".d"
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	dropIn := filepath.Join(dir, "50-audit.toml")
	eicarAt := func(n int) string {
		p := filepath.Join(d.Dir, fmt.Sprintf("eicar-dropin%d.com", n))
		writeFile(t, p, eicar, 0o644)
		return p
	}
	reload := func() (string, int) { return fanguard(t, "reload", "--socket", d.Control) }

	writeFile(t, dropIn, "mode = \"audit\"\n", 0o644)
	if out, code := reload(); code != 0 || !strings.Contains(out, `configuration changed: mode ("enforce" → "audit")`) {
		t.Errorf("reload with the drop-in: exit %d, want 0 with the mode change:\n%s", code, out)
	}
	if _, err := os.ReadFile(eicarAt(1)); err != nil {
		t.Errorf("audit from the drop-in: EICAR: %v, want it opened", err)
	}

	writeFile(t, dropIn, "# broken\nmode = \"enforcee\"\n", 0o644)
	if out, code := reload(); code != 1 || !strings.Contains(out, dropIn+`:2: mode: "enforcee" is not allowed`) {
		t.Errorf("broken drop-in: exit %d, want 1 with its file:line error:\n%s", code, out)
	}
	if _, err := os.ReadFile(eicarAt(2)); err != nil {
		t.Errorf("after a refused reload: EICAR: %v, want it opened (audit stays)", err)
	}

	if err := os.Remove(dropIn); err != nil {
		t.Fatal(err)
	}
	if out, code := reload(); code != 0 || !strings.Contains(out, `mode ("audit" → "enforce")`) {
		t.Errorf("reload without the drop-in: exit %d, want 0 with the mode change:\n%s", code, out)
	}
	if !deniedWithin(t, eicarAt(3), 5*time.Second) {
		t.Error("enforce again without the drop-in: EICAR not denied")
	}
}
