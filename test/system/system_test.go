//go:build system

package system

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// eicar is the EICAR test file, detected by the shipped eicar.yar.
const eicar = `X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*`

// detectionID is the journal MESSAGE_ID of detections (systemd.DetectionMessageID).
const detectionID = "b8ad2451685fd5a3e5cad5729a4f7c3d"

// protected is the tmpfs the daemon protects in the container.
const protected = "/srv/protected"

// repoRoot is the repository, from test/system.
const repoRoot = "../.."

// Paths in the container, left out of the comparison of the file system
// before the install and after the purge: apt's and dpkg's own records,
// logs, and the journal.
var volatile = regexp.MustCompile(`^/(var/lib/(apt|dpkg)|var/cache/(apt|debconf|ldconfig)|var/log|var/lib/systemd/(catalog|random-seed|timers)|etc/ld\.so\.cache|root/pkg)(/|$)`)

// TestSystem installs, runs, upgrades and purges the package in a booted
// Debian 12, step by step; a step that fails ends the test.
func TestSystem(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("make test-system needs root: it mounts an image and boots it with systemd-nspawn")
	}
	start := time.Now()
	step := func(name string, f func(t *testing.T)) {
		t0 := time.Now()
		ok := t.Run(name, f)
		t.Logf("step %-24s %5.1f s", name, time.Since(t0).Seconds())
		if !ok {
			t.FailNow()
		}
	}
	defer func() { t.Logf("system test: %.0f s in all", time.Since(start).Seconds()) }()

	var debs [2]string // the package, and a newer build of it
	step("package", func(t *testing.T) { debs = buildPackages(t) })
	var base string
	step("bootstrap", func(t *testing.T) { base = baseImage(t) })

	port := freePort(t)
	var c *container
	step("boot", func(t *testing.T) {
		c = boot(t, base, bootOptions{
			Files: map[string]string{
				// A tmpfs of the container's own, mounted before
				// fanguard starts (local-fs.target).
				"/etc/systemd/system/srv-protected.mount": "[Unit]\nDescription=fanguard system test: protected tmpfs\nDefaultDependencies=no\nBefore=local-fs.target\n\n[Mount]\nWhat=tmpfs\nWhere=" + protected + "\nType=tmpfs\nOptions=mode=1777,size=64m\n\n[Install]\nWantedBy=local-fs.target\n",
				// The administrator's choice, there before the
				// package: protect the tmpfs only, never the host's
				// filesystems that nspawn binds in; scan at open only
				// (a scan at close would quarantine the test files
				// before they are opened); the metrics listener.
				"/etc/fanguard/fanguard.toml.d/10-system-test.toml": fmt.Sprintf("[protect]\npaths = [%q]\n\n[scan]\non_close = false\n\n[metrics]\nlisten = \"127.0.0.1:%d\"\n", protected, port),
			},
			Links: map[string]string{
				"/etc/systemd/system/local-fs.target.wants/srv-protected.mount": "../srv-protected.mount",
			},
		})
		if fs := strings.TrimSpace(c.must(t, "findmnt -n -o FSTYPE "+protected)); fs != "tmpfs" {
			t.Fatalf("%s is %q in the container, want a tmpfs", protected, fs)
		}
	})

	var before []string // the container's files before the install
	step("install", func(t *testing.T) {
		before = listFiles(t, c)
		copyDebs(t, c, debs)
		c.must(t, "apt-get update -qq")
		out := c.must(t, "apt-get install -y -q /root/pkg/"+filepath.Base(debs[0])+" 2>&1")
		t.Logf("apt-get install:\n%s", lastLines(out, 8))
		if !strings.Contains(out, "audit mode") {
			t.Errorf("the install does not say the daemon runs in audit mode:\n%s", out)
		}
		c.waitFor(t, 30*time.Second, "fanguard active", "systemctl is-active fanguard")
		for _, unit := range []string{"fanguard.service", "fanguard-update.timer"} {
			if out := strings.TrimSpace(c.must(t, "systemctl is-enabled "+unit)); out != "enabled" {
				t.Errorf("%s is %q after the install, want enabled", unit, out)
			}
		}
		c.must(t, "systemctl is-active fanguard-update.timer")
		checkMarks(t, c)
		status := c.must(t, "fanguard status")
		if !strings.Contains(status, "audit") {
			t.Errorf("fanguard status does not say audit:\n%s", status)
		}
	})

	step("audit", func(t *testing.T) {
		c.writeFile(t, protected+"/audit.com", []byte(eicar))
		c.must(t, "cat "+protected+"/audit.com >/dev/null")
		j := journalDetection(t, c, protected+"/audit.com")
		if j["FANGUARD_VERDICT"] != "allow" {
			t.Errorf("audit mode: verdict %q in the journal, want allow: %v", j["FANGUARD_VERDICT"], j)
		}
		c.must(t, "test -e "+protected+"/audit.com")
	})

	step("enforce", func(t *testing.T) {
		c.writeFile(t, "/etc/fanguard/fanguard.toml.d/50-enforce.toml", []byte("mode = \"enforce\"\n"))
		c.must(t, "systemctl reload fanguard")
		c.writeFile(t, protected+"/eicar.com", []byte(eicar))
		out := c.fails(t, "cat "+protected+"/eicar.com")
		if !strings.Contains(out, "Operation not permitted") {
			t.Errorf("cat of EICAR: %s, want Operation not permitted", out)
		}
		j := journalDetection(t, c, protected+"/eicar.com")
		for k, want := range map[string]string{
			"FANGUARD_RULE":    "EICAR",
			"FANGUARD_VERDICT": "deny",
			"FANGUARD_EXE":     "/usr/bin/cat",
			"PRIORITY":         "",
		} {
			if got, ok := j[k]; !ok || want != "" && !strings.Contains(got, want) {
				t.Errorf("journal entry: %s = %q, want %q", k, got, want)
			}
		}
		msg := j["MESSAGE"]
		for _, want := range []string{"detection:", "EICAR", protected + "/eicar.com", "/usr/bin/cat", "denied"} {
			if !strings.Contains(msg, want) {
				t.Errorf("journal MESSAGE %q lacks %q", msg, want)
			}
		}
		t.Logf("journal: %s", msg)
		// The quarantine moved it away and recorded it.
		c.waitFor(t, 10*time.Second, "EICAR quarantined", "test ! -e "+protected+"/eicar.com")
		list := c.must(t, "fanguard quarantine list")
		if !strings.Contains(list, protected+"/eicar.com") {
			t.Errorf("fanguard quarantine list does not show it:\n%s", list)
		}
	})

	step("reload", func(t *testing.T) {
		before := statusText(t, c)
		c.writeFile(t, "/etc/fanguard/rules.d/system-test.yar", []byte(`rule SystemTestMarker { strings: $m = "fanguard-system-test-marker" condition: $m }`+"\n"))
		c.writeFile(t, "/etc/fanguard/fanguard.toml.d/60-budget.toml", []byte("budget = \"4s\"\n"))
		out := c.must(t, "systemctl reload fanguard; journalctl -u fanguard -n 20 --no-pager -o cat")
		if !strings.Contains(out, "budget") || !strings.Contains(out, "4s") {
			t.Errorf("the reload does not log the budget's change:\n%s", out)
		}
		c.writeFile(t, protected+"/marker.txt", []byte("x fanguard-system-test-marker x"))
		c.fails(t, "cat "+protected+"/marker.txt")
		after := statusText(t, c)
		t.Logf("STATUS= before: %s", before)
		t.Logf("STATUS= after:  %s", after)
		if rulesIn(t, after) != rulesIn(t, before)+1 {
			t.Errorf("STATUS= rules: %d after the reload, %d before; want one more", rulesIn(t, after), rulesIn(t, before))
		}
		// A reload with a broken configuration fails and changes nothing.
		c.writeFile(t, "/etc/fanguard/fanguard.toml.d/70-broken.toml", []byte("mode = \"enforcee\"\n"))
		out = c.fails(t, "systemctl reload fanguard")
		c.must(t, "rm /etc/fanguard/fanguard.toml.d/70-broken.toml")
		c.must(t, "systemctl is-active fanguard")
		t.Logf("reload with a broken drop-in: %s", lastLines(out, 2))
	})

	step("metrics", func(t *testing.T) {
		out := c.must(t, fmt.Sprintf("curl -fsS http://127.0.0.1:%d/metrics", port))
		for _, want := range []string{"fanguard_events_total", "fanguard_denials_total", "fanguard_rules"} {
			if !strings.Contains(out, want) {
				t.Errorf("/metrics lacks %s", want)
			}
		}
	})

	step("broken-config", func(t *testing.T) {
		c.writeFile(t, "/etc/fanguard/fanguard.toml.d/70-broken.toml", []byte("\nmode = \"enforcee\"\n"))
		c.fails(t, "systemctl restart fanguard")
		state := c.waitFor(t, 20*time.Second, "fanguard failed", "systemctl is-failed fanguard")
		restarts := c.must(t, "systemctl show -p NRestarts --value fanguard")
		// No restart loop: RestartSec=2s; still failed, not restarted.
		time.Sleep(5 * time.Second)
		if again := c.must(t, "systemctl show -p NRestarts --value fanguard"); again != restarts {
			t.Errorf("NRestarts went from %s to %s: a restart loop", strings.TrimSpace(restarts), strings.TrimSpace(again))
		}
		if s := strings.TrimSpace(c.must(t, "systemctl is-failed fanguard || true")); s != "failed" {
			t.Errorf("state %q 5 s after a configuration error, want failed (was %q)", s, strings.TrimSpace(state))
		}
		errs := c.must(t, "journalctl -u fanguard -p err -n 5 --no-pager -o cat")
		if !strings.Contains(errs, "70-broken.toml:2") || !strings.Contains(errs, "enforcee") {
			t.Errorf("journalctl -p err does not name the drop-in and its line:\n%s", errs)
		}
		t.Logf("journalctl -p err:\n%s", lastLines(errs, 3))
		c.must(t, "rm /etc/fanguard/fanguard.toml.d/70-broken.toml && systemctl start fanguard")
		c.must(t, "systemctl is-active fanguard")
	})

	step("watchdog", func(t *testing.T) {
		pid, err := c.mainPID("fanguard")
		if err != nil {
			t.Fatal(err)
		}
		c.writeFile(t, protected+"/held.txt", []byte("held open"))
		c.must(t, "systemctl kill -s SIGSTOP fanguard")
		// This open waits for a verdict that the stopped daemon never
		// gives, until the watchdog has it killed.
		ctxStart := time.Now()
		out, err := c.exec(90*time.Second, "cat "+protected+"/held.txt")
		held := time.Since(ctxStart)
		if err != nil || out != "held open" {
			t.Fatalf("held open: %q, %v after %v", out, err, held)
		}
		t.Logf("the open was held %.1f s, then released", held.Seconds())
		if held < 10*time.Second {
			t.Errorf("the open returned after %v: the daemon was not holding it", held)
		}
		c.waitFor(t, 30*time.Second, "fanguard restarted", "systemctl is-active fanguard")
		npid, err := c.mainPID("fanguard")
		if err != nil || npid == pid {
			t.Errorf("main pid %d after the watchdog, was %d (%v)", npid, pid, err)
		}
		log := c.must(t, "journalctl -u fanguard --no-pager -o cat | grep -i watchdog || true")
		if !strings.Contains(strings.ToLower(log), "watchdog") {
			t.Errorf("the journal does not show the watchdog")
		}
		t.Logf("journal: %s", lastLines(log, 2))
		checkMarks(t, c)
	})

	step("upgrade", func(t *testing.T) {
		c.must(t, "sed -i 's/^budget = .*/budget = \"3s\"/' /etc/fanguard/fanguard.toml")
		conf := c.must(t, "sha256sum /etc/fanguard/fanguard.toml /etc/fanguard/fanguard.toml.d/*")
		records := c.must(t, "fanguard quarantine list --json")
		pid, _ := c.mainPID("fanguard")
		out := c.must(t, "apt-get install -y -q /root/pkg/"+filepath.Base(debs[1])+" 2>&1")
		t.Logf("apt-get install (upgrade):\n%s", lastLines(out, 6))
		c.waitFor(t, 30*time.Second, "fanguard active after the upgrade", "systemctl is-active fanguard")
		if npid, err := c.mainPID("fanguard"); err != nil || npid == pid {
			t.Errorf("main pid %d after the upgrade, was %d: not restarted (%v)", npid, pid, err)
		}
		if v := c.must(t, "dpkg-query -W -f '${Version}' fanguard"); v != pkgVersion(t, debs[1]) {
			t.Errorf("installed version %s, want %s", v, pkgVersion(t, debs[1]))
		}
		if got := c.must(t, "sha256sum /etc/fanguard/fanguard.toml /etc/fanguard/fanguard.toml.d/*"); got != conf {
			t.Errorf("the configuration changed in the upgrade:\nbefore %s\nafter  %s", conf, got)
		}
		if got := c.must(t, "fanguard quarantine list --json"); got != records {
			t.Errorf("the quarantine changed in the upgrade:\nbefore %s\nafter  %s", records, got)
		}
		c.writeFile(t, protected+"/eicar2.com", []byte(eicar))
		c.fails(t, "cat "+protected+"/eicar2.com")
	})

	step("remove", func(t *testing.T) {
		out := c.must(t, "apt-get remove -y -q fanguard 2>&1")
		t.Logf("apt-get remove:\n%s", lastLines(out, 4))
		if s := strings.TrimSpace(c.must(t, "systemctl is-active fanguard || true")); s == "active" {
			t.Errorf("fanguard is %s after remove", s)
		}
		c.must(t, "test -s /var/lib/fanguard/quarantine.db && test -d /var/lib/fanguard/vault && test -e /etc/fanguard/fanguard.toml")
		// The daemon is gone: the protected tmpfs is open to all.
		c.writeFile(t, protected+"/eicar3.com", []byte(eicar))
		c.must(t, "cat "+protected+"/eicar3.com >/dev/null")
	})

	step("purge", func(t *testing.T) {
		c.must(t, "rm -f /etc/fanguard/rules.d/system-test.yar /etc/fanguard/fanguard.toml.d/50-enforce.toml /etc/fanguard/fanguard.toml.d/60-budget.toml")
		out := c.must(t, "apt-get purge -y -q --autoremove fanguard 2>&1")
		t.Logf("apt-get purge:\n%s", out)
		if !strings.Contains(out, "vault") {
			t.Errorf("the purge does not say what it does with the quarantine vault")
		}
		c.must(t, "rm -rf /root/pkg")
		after := listFiles(t, c)
		var added, removed []string
		for _, f := range after {
			if _, ok := slices.BinarySearch(before, f); !ok {
				added = append(added, f)
			}
		}
		for _, f := range before {
			if _, ok := slices.BinarySearch(after, f); !ok {
				removed = append(removed, f)
			}
		}
		if len(added) > 0 || len(removed) > 0 {
			t.Errorf("the purge left the system different from before the install:\nleft behind: %v\ngone: %v", added, removed)
		}
		t.Logf("after the purge: %d files, as before the install", len(after))
	})
}

// buildPackages builds the package twice: as `make package` makes it, and
// a newer build of the same source (its version with ".1" after it), for
// the upgrade.
func buildPackages(t *testing.T) [2]string {
	t.Helper()
	dir := t.TempDir()
	var debs [2]string
	version := ""
	for i := range debs {
		args := []string{"-C", repoRoot, "package"}
		if version != "" {
			args = append(args, "PKG_VERSION="+version+".1")
		}
		run(t, 15*time.Minute, "make", args...)
		matches, _ := filepath.Glob(filepath.Join(repoRoot, "build/pkg/fanguard_*_amd64.deb"))
		if len(matches) != 1 {
			t.Fatalf("make package: %d .deb files in build/pkg (%v), want 1", len(matches), matches)
		}
		debs[i] = filepath.Join(dir, filepath.Base(matches[0]))
		run(t, time.Minute, "cp", matches[0], debs[i])
		if version == "" {
			version = pkgVersion(t, debs[i])
		}
	}
	t.Logf("packages: %s, %s", filepath.Base(debs[0]), filepath.Base(debs[1]))
	return debs
}

func pkgVersion(t *testing.T, deb string) string {
	t.Helper()
	return strings.TrimSpace(run(t, time.Minute, "dpkg-deb", "-f", deb, "Version"))
}

// copyDebs puts the packages in /root/pkg of the container.
func copyDebs(t *testing.T, c *container, debs [2]string) {
	t.Helper()
	dir := filepath.Join(c.root, "root/pkg")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, d := range debs {
		run(t, time.Minute, "cp", d, dir)
	}
}

// listFiles lists the container's root filesystem, sorted, without the
// volatile paths.
func listFiles(t *testing.T, c *container) []string {
	t.Helper()
	out := c.must(t, "find / -xdev | sort")
	var files []string
	for _, f := range strings.Split(strings.TrimSpace(out), "\n") {
		if !volatile.MatchString(f) {
			files = append(files, f)
		}
	}
	slices.Sort(files)
	return files
}

// checkMarks fails the test unless the daemon's fanotify marks are all on
// the container's protected tmpfs: never on the host's filesystems.
func checkMarks(t *testing.T, c *container) {
	t.Helper()
	pid, err := c.mainPID("fanguard")
	if err != nil {
		t.Fatal(err)
	}
	hp, err := c.hostPID(pid)
	if err != nil {
		t.Fatal(err)
	}
	devs, err := fanotifyMarks(hp)
	if err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Stat(fmt.Sprintf("/proc/%d/root%s", c.leader, protected), &st); err != nil {
		t.Fatal(err)
	}
	want := uint64(unix.Major(st.Dev))<<20 | uint64(unix.Minor(st.Dev)) // the kernel's dev_t, as fdinfo prints it
	if len(devs) == 0 {
		t.Fatalf("the daemon (host pid %d) has no filesystem marks", hp)
	}
	for _, d := range devs {
		if d != want {
			t.Fatalf("the daemon (host pid %d) marks device %x: only %s (%x) is protected", hp, d, protected, want)
		}
	}
}

// journalDetection returns the journal entry of the detection in path,
// waiting for it.
func journalDetection(t *testing.T, c *container, path string) map[string]string {
	t.Helper()
	out := c.waitFor(t, 15*time.Second, "the detection of "+path+" in the journal",
		"journalctl MESSAGE_ID="+detectionID+" FANGUARD_PATH="+path+" -o json --no-pager | grep .")
	line := strings.SplitN(strings.TrimSpace(out), "\n", 2)[0]
	var raw map[string]any
	if err := json.Unmarshal([]byte(line), &raw); err != nil {
		t.Fatalf("journal entry: %v: %s", err, line)
	}
	j := make(map[string]string, len(raw))
	for k, v := range raw {
		j[k] = fmt.Sprint(v)
	}
	return j
}

// statusText returns the unit's STATUS= line.
func statusText(t *testing.T, c *container) string {
	t.Helper()
	return strings.TrimSpace(c.must(t, "systemctl show -p StatusText --value fanguard"))
}

var rulesRe = regexp.MustCompile(`with (\d+) rules`)

// rulesIn returns the rule count of a STATUS= line.
func rulesIn(t *testing.T, status string) int {
	t.Helper()
	m := rulesRe.FindStringSubmatch(status)
	if m == nil {
		t.Fatalf("STATUS= %q: no rule count", status)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
