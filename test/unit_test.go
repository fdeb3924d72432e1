package test

import (
	"bufio"
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/fanguard/fanguard/internal/testutil"
)

// unitFile is the systemd unit shipped by make install.
const unitFile = "../configs/fanguard.service"

// maxExposure is the highest "systemd-analyze security" exposure score the
// unit may have (0 is best, 10 worst).
const maxExposure = 4.0

var exposureRe = regexp.MustCompile(`Overall exposure level for fanguard\.service: ([0-9]+(?:\.[0-9]+)?)`)

// TestUnitFile checks configs/fanguard.service with systemd's own tools:
// "systemd-analyze verify" must have nothing to say about it, and
// "systemd-analyze security" must rate its exposure at most maxExposure.
//
// verify also checks that ExecStart= names an executable file, and
// /usr/sbin/fanguard need not exist where the tests run. So the unit is
// verified inside a throwaway root laid out as make install does
// (--root=): usr/lib/systemd/system/fanguard.service, byte for byte the
// shipped file, and usr/sbin/fanguard, the binary TestMain built. Rewriting
// ExecStart= to the built binary instead would verify a different file.
// With --root=, units the file only refers to (sysinit.target, ...) are
// absent and verify stays silent about them; it still reports unknown keys,
// bad values and a missing executable.
func TestUnitFile(t *testing.T) {
	analyze := requireSystemdAnalyze(t)
	root := t.TempDir()
	unit := filepath.Join(root, "usr/lib/systemd/system/fanguard.service")
	installFile(t, unitFile, unit, 0o644)
	installFile(t, binary, filepath.Join(root, "usr/sbin/fanguard"), 0o755)

	tests := []struct {
		name  string
		args  []string
		check func(t *testing.T, out string)
	}{
		{"verify", []string{"verify", "--root=" + root, unit}, func(t *testing.T, out string) {
			if strings.TrimSpace(out) != "" {
				t.Errorf("systemd-analyze verify has something to say about the unit:\n%s", out)
			}
		}},
		{"security", []string{"security", "--offline=true", unit}, func(t *testing.T, out string) {
			m := exposureRe.FindStringSubmatch(out)
			if m == nil {
				t.Fatalf("no overall exposure level in the output:\n%s", out)
			}
			score, err := strconv.ParseFloat(m[1], 64)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("systemd-analyze security: overall exposure level %.1f (at most %.1f)", score, maxExposure)
			if score > maxExposure {
				t.Errorf("exposure %.1f is above %.1f:\n%s", score, maxExposure, out)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(analyze, tc.args...)
			cmd.Env = append(os.Environ(), "SYSTEMD_COLORS=0", "SYSTEMD_PAGER=", "LC_ALL=C")
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Run(); err != nil {
				t.Fatalf("systemd-analyze %s: %v\n%s", strings.Join(tc.args, " "), err, out.String())
			}
			tc.check(t, out.String())
		})
	}
}

// TestUnitFileKeepsPathsVisible guards the sandbox settings that would make
// the daemon see a different filesystem than everyone else, or drop what it
// cannot work without. systemd-analyze security would reward some of these
// settings, so a well-meant "hardening" must fail here instead.
func TestUnitFileKeepsPathsVisible(t *testing.T) {
	settings := unitSettings(t, unitFile)
	forbidden := map[string]string{
		"ProtectSystem":        "read-only /usr and /etc: the quarantine could not remove a detected file there",
		"ProtectHome":          "hides /home, /root and /run/user: wrong filesystems marked, files unreachable",
		"PrivateTmp":           "a private /tmp: paths under /tmp would name other files",
		"ProtectKernelModules": "makes /usr/lib/modules inaccessible (module loading is blocked by capabilities and the filter)",
		"ProtectProc":          "may hide the opening processes whose /proc/PID/exe the daemon reads",
		"ProcSubset":           "hides /proc/sys and /proc/meminfo",
		"PrivateUsers":         "fanotify needs CAP_SYS_ADMIN in the initial user namespace",
		"DynamicUser":          "implies ProtectSystem=strict, ProtectHome= and PrivateTmp=",
		"InaccessiblePaths":    "hides paths from the daemon",
		"ReadOnlyPaths":        "freezes paths the quarantine must change",
		"TemporaryFileSystem":  "hides paths from the daemon",
		"RootDirectory":        "the daemon must see the host's tree",
	}
	for key, why := range forbidden {
		if v, ok := settings[key]; ok {
			t.Errorf("%s=%s must not be set: %s", key, strings.Join(v, " "), why)
		}
	}
	required := []struct {
		key, contains, why string
	}{
		{"Type", "notify", "READY=1 after the marks are placed"},
		{"WatchdogSec", "", "a hung daemon blocks every open on the machine"},
		{"CapabilityBoundingSet", "CAP_SYS_ADMIN", "fanotify_init and FAN_MARK_FILESYSTEM"},
		{"CapabilityBoundingSet", "CAP_SYS_PTRACE", "readlink /proc/PID/exe of other users' processes"},
		{"CapabilityBoundingSet", "CAP_DAC_READ_SEARCH", "fanotify_mark checks read permission on what it marks"},
		{"CapabilityBoundingSet", "CAP_SYS_CHROOT", "setns into other mount namespaces (fan.NamespaceMarker)"},
		{"RestrictNamespaces", "mnt", "setns(CLONE_NEWNS) is refused for every type not listed"},
		{"SystemCallFilter", "fanotify_init", "filtered out by ~@privileged otherwise"},
		{"SystemCallFilter", "fanotify_mark", "filtered out by ~@privileged otherwise"},
		{"RestrictAddressFamilies", "AF_UNIX", "sd_notify, the journal and the control socket"},
	}
	for _, r := range required {
		v, ok := settings[r.key]
		if !ok || !strings.Contains(strings.Join(v, " "), r.contains) {
			t.Errorf("%s= must contain %q (%s); has %q", r.key, r.contains, r.why, v)
		}
	}
	// The last SystemCallFilter= line that names fanotify_init must come
	// after every ~ line: in an allow list, later lines add and remove in
	// order, and ~@privileged removes fanotify_init again.
	lastAdd, lastDel := -1, -1
	for i, v := range settings["SystemCallFilter"] {
		switch {
		case strings.HasPrefix(v, "~"):
			lastDel = i
		case strings.Contains(v, "fanotify_init"):
			lastAdd = i
		}
	}
	if lastAdd < lastDel {
		t.Errorf("SystemCallFilter=fanotify_init ... must come after the last SystemCallFilter=~... line")
	}
}

// requireSystemdAnalyze returns the path of systemd-analyze. Without it the
// test skips, and fails under CI (make deps installs it).
func requireSystemdAnalyze(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("systemd-analyze")
	if err == nil {
		return p
	}
	if testutil.InCI() {
		t.Fatalf("systemd-analyze not found, and CI=true: install the systemd package (make deps): %v", err)
	}
	t.Skipf("systemd-analyze not found (apt-get install systemd): %v", err)
	return ""
}

// installFile puts a copy of src at dst (a hard link when it can), with
// the parent directories.
func installFile(t *testing.T, src, dst string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	if os.Link(src, dst) == nil {
		return
	}
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// unitSettings reads a unit file into key → values, one value per
// assignment, in order. It knows what this unit uses: comments, sections,
// key=value lines; no line continuations.
func unitSettings(t *testing.T, path string) map[string][]string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	settings := make(map[string][]string)
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == ';' || line[0] == '[' {
			continue
		}
		if strings.HasSuffix(line, `\`) {
			t.Fatalf("%s:%d: line continuations are not supported here", path, n)
		}
		key, value, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s:%d: not a key=value line: %q", path, n, line)
		}
		key = strings.TrimSpace(key)
		settings[key] = append(settings[key], strings.TrimSpace(value))
	}
	return settings
}

// TestUpdateUnits checks configs/fanguard-update.service and .timer with
// "systemd-analyze verify", in a throwaway root laid out as make install
// does, with the host's target units (timers.target, sysinit.target...,
// shipped with systemd) that units with default dependencies refer to, and
// rates the service's exposure.
func TestUpdateUnits(t *testing.T) {
	analyze := requireSystemdAnalyze(t)
	targets, _ := filepath.Glob("/lib/systemd/system/*.target")
	if len(targets) == 0 {
		targets, _ = filepath.Glob("/usr/lib/systemd/system/*.target")
	}
	if len(targets) == 0 {
		if testutil.InCI() {
			t.Fatal("no systemd target units in /lib/systemd/system (make deps installs systemd)")
		}
		t.Skip("no systemd target units in /lib/systemd/system")
	}
	root := t.TempDir()
	unitDir := filepath.Join(root, "usr/lib/systemd/system")
	for _, u := range targets {
		installFile(t, u, filepath.Join(unitDir, filepath.Base(u)), 0o644)
	}
	service := filepath.Join(unitDir, "fanguard-update.service")
	timer := filepath.Join(unitDir, "fanguard-update.timer")
	installFile(t, "../configs/fanguard-update.service", service, 0o644)
	installFile(t, "../configs/fanguard-update.timer", timer, 0o644)
	installFile(t, binary, filepath.Join(root, "usr/sbin/fanguard"), 0o755)

	run := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(analyze, args...)
		cmd.Env = append(os.Environ(), "SYSTEMD_COLORS=0", "SYSTEMD_PAGER=", "LC_ALL=C")
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			t.Fatalf("systemd-analyze %s: %v\n%s", strings.Join(args, " "), err, out.String())
		}
		return out.String()
	}
	if out := run("verify", "--root="+root, timer, service); strings.TrimSpace(out) != "" {
		t.Errorf("systemd-analyze verify has something to say about the update units:\n%s", out)
	}
	out := run("security", "--offline=true", service)
	m := regexp.MustCompile(`Overall exposure level for fanguard-update\.service: ([0-9.]+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no overall exposure level in the output:\n%s", out)
	}
	if score, _ := strconv.ParseFloat(m[1], 64); score > 3.0 {
		t.Errorf("fanguard-update.service exposure %.1f is above 3.0:\n%s", score, out)
	}
	settings := unitSettings(t, "../configs/fanguard-update.timer")
	for _, key := range []string{"OnCalendar", "RandomizedDelaySec", "Persistent"} {
		if _, ok := settings[key]; !ok {
			t.Errorf("fanguard-update.timer has no %s=", key)
		}
	}
}
