package test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fanguard/fanguard/internal/testutil"
)

// TestDaemonCheck runs `fanguard daemon --check` on real configuration
// files: 0 with the filesystems that would be protected listed, 78
// (EX_CONFIG) when the daemon would not start. It places no mark: a file
// on the tmpfs it names opens after the check as before.
func TestDaemonCheck(t *testing.T) {
	testutil.RequireRoot(t) // the tmpfs
	dir := testutil.MountTmpfs(t)
	work := t.TempDir()
	empty := filepath.Join(work, "empty.d")
	os.Mkdir(empty, 0o755)
	shipped := mustAbs(t, "../configs/rules.d")
	config := func(top, rules, paths string) string {
		return fmt.Sprintf("%s\n[rules]\ndirs = [%q]\ncache_dir = %q\n[protect]\npaths = [%s]\n",
			top, rules, filepath.Join(work, "cache"), paths)
	}
	tests := []struct {
		name     string
		toml     string
		dropIn   string // content of fanguard.toml.d/50-local.toml; "": none
		wantCode int
		want     []string // regular expressions the output matches
	}{
		{name: "would start", toml: config(`mode = "audit"`, shipped, fmt.Sprintf("%q", dir)), wantCode: 0,
			want: []string{`configuration .*fanguard.toml: ok`, `mode audit, budget 5s`,
				`rules: 1 rule from 1 file, generation [0-9a-f]{16}, compiled`,
				`would protect 1 filesystem:`, `(?m)^  ` + regexp.QuoteMeta(dir) + ` +tmpfs +\S+$`,
				`the daemon would start`}},
		{name: "second check: rules from the cache", toml: config("", shipped, fmt.Sprintf("%q", dir)), wantCode: 0,
			want: []string{`from the compiled-rules cache`, `the daemon would start`}},
		{name: "bad key", toml: config("mode = 1\nbudget = \"1h\"", shipped, fmt.Sprintf("%q", dir)), wantCode: 78,
			want: []string{`fanguard.toml:1: mode: 1 is not allowed`, `fanguard.toml:2: budget: "1h" is out of range`}},
		{name: "drop-in", toml: config(`mode = "enforce"`, shipped, fmt.Sprintf("%q", dir)), dropIn: "# local\nmode = \"audit\"\n", wantCode: 0,
			want: []string{`configuration .*fanguard.toml and 1 drop-in \(50-local.toml\): ok`, `mode audit, budget 5s`, `the daemon would start`}},
		{name: "bad drop-in", toml: config("", shipped, fmt.Sprintf("%q", dir)), dropIn: "# local\nmode = \"enforcee\"\n", wantCode: 78,
			want: []string{`fanguard.toml.d/50-local.toml:2: mode: "enforcee" is not allowed`}},
		{name: "no rules", toml: config("", empty, fmt.Sprintf("%q", dir)), wantCode: 78,
			want: []string{`would protect 1 filesystem:`, `the daemon would not start: loading rules: .*no rules loaded`}},
		{name: "protect path missing", toml: config("", shipped, fmt.Sprintf("%q", filepath.Join(work, "nowhere"))), wantCode: 78,
			want: []string{`the daemon would not start: choosing the filesystems to protect: checking protect path .*nowhere`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(work, "fanguard.toml")
			writeFile(t, path, tt.toml, 0o644)
			os.RemoveAll(path + ".d")
			if tt.dropIn != "" {
				os.Mkdir(path+".d", 0o755)
				writeFile(t, filepath.Join(path+".d", "50-local.toml"), tt.dropIn, 0o644)
			}
			out, code := fanguard(t, "daemon", "--check", "--config", path)
			if code != tt.wantCode {
				t.Errorf("exit %d, want %d; output:\n%s", code, tt.wantCode, out)
			}
			for _, w := range tt.want {
				if !regexp.MustCompile(w).MatchString(out) {
					t.Errorf("output does not match %s:\n%s", w, out)
				}
			}
		})
	}
	bad := filepath.Join(dir, "eicar.com")
	writeFile(t, bad, eicar, 0o644)
	if _, err := os.ReadFile(bad); err != nil {
		t.Errorf("after the checks, EICAR on the checked tmpfs: %v (a mark left behind?)", err)
	}
}

// TestReloadConfiguration: `fanguard reload` (and SIGHUP) read the
// configuration again. enforce → audit takes effect at once (EICAR opens,
// logged as audit); workers is reported as needing a restart; a broken
// file is refused with its file:line error and changes nothing.
func TestReloadConfiguration(t *testing.T) {
	d := startDaemon(t, options{})
	base, err := os.ReadFile(d.Config)
	if err != nil {
		t.Fatal(err)
	}
	write := func(top string) { writeFile(t, d.Config, top+"\n"+string(base), 0o644) }
	first := filepath.Join(d.Dir, "eicar1.com")
	writeFile(t, first, eicar, 0o644)
	if _, err := os.ReadFile(first); !errors.Is(err, unix.EPERM) {
		t.Fatalf("enforce: EICAR: %v, want EPERM", err)
	}

	write("mode = \"audit\"\nworkers = 7")
	out, code := fanguard(t, "reload", "--config", d.Config)
	if code != 0 {
		t.Fatalf("reload: exit %d:\n%s", code, out)
	}
	for _, want := range []string{`configuration changed: mode ("enforce" → "audit")`, "restart needed for: workers (", " → 7)"} {
		if !strings.Contains(out, want) {
			t.Errorf("reload output lacks %q:\n%s", want, out)
		}
	}
	second := filepath.Join(d.Dir, "eicar2.com")
	writeFile(t, second, eicar, 0o644)
	if b, err := os.ReadFile(second); err != nil || string(b) != eicar {
		t.Errorf("audit after reload: EICAR: %v, want it opened", err)
	}
	d.waitLog(5*time.Second, "detection", second, "audit")
	d.waitLog(5*time.Second, "configuration change needs a restart", "workers")

	// --socket: the daemon, not this client, reads the broken file.
	write("mode = \"enforce\"\nbudget = 7")
	out, code = fanguard(t, "reload", "--socket", d.Control)
	if code != 1 || !strings.Contains(out, d.Config+":2: budget: 7 is not a duration string") {
		t.Errorf("broken config: exit %d, want 1 with the file:line error:\n%s", code, out)
	}
	third := filepath.Join(d.Dir, "eicar3.com")
	writeFile(t, third, eicar, 0o644)
	if _, err := os.ReadFile(third); err != nil {
		t.Errorf("after a refused reload: EICAR: %v, want it opened (audit stays)", err)
	}

	// SIGHUP reads the configuration too.
	write("mode = \"enforce\"")
	if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	d.waitLog(10*time.Second, "configuration changed", "mode")
	fourth := filepath.Join(d.Dir, "eicar4.com")
	writeFile(t, fourth, eicar, 0o644)
	if !deniedWithin(t, fourth, 5*time.Second) {
		t.Error("enforce again after SIGHUP: EICAR not denied")
	}
}

// TestReloadRefusesRulesDir: reload and status take --config for the
// socket, and refuse --rules-dir, which the daemon would not use.
func TestReloadRefusesRulesDir(t *testing.T) {
	for _, cmd := range []string{"reload", "status"} {
		out, code := fanguard(t, cmd, "--rules-dir", t.TempDir())
		if code != 2 || !strings.Contains(out, "--rules-dir does not apply to "+cmd) {
			t.Errorf("%s --rules-dir: exit %d, want 2 with the reason:\n%s", cmd, code, out)
		}
	}
}

// TestUnitChecksBeforeReload: the unit runs the check before each reload,
// and not as ExecStartPre=: systemd tests only the main process's exit
// status against RestartPreventExitStatus=, so a check failing before the
// start would be restarted for ever (the daemon checks at start itself and
// exits 78).
func TestUnitChecksBeforeReload(t *testing.T) {
	data, err := os.ReadFile(unitFile)
	if err != nil {
		t.Fatal(err)
	}
	var pre, reload []string
	for line := range strings.Lines(string(data)) {
		line = strings.TrimSpace(line)
		if v, ok := strings.CutPrefix(line, "ExecStartPre="); ok {
			pre = append(pre, v)
		}
		if v, ok := strings.CutPrefix(line, "ExecReload="); ok {
			reload = append(reload, v)
		}
	}
	check := "/usr/sbin/fanguard daemon --check --config /etc/fanguard/fanguard.toml"
	if len(pre) != 0 {
		t.Errorf("ExecStartPre= %q: a failing check there is restarted for ever (RestartPreventExitStatus= sees only the main process)", pre)
	}
	if len(reload) != 2 || reload[0] != check || !strings.HasPrefix(reload[1], "/usr/sbin/fanguard reload") {
		t.Errorf("ExecReload= %q, want the check, then fanguard reload", reload)
	}
}
