package test

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// exitConfig is the status `fanguard daemon` exits with on a configuration
// error (EX_CONFIG), which the unit does not restart on.
const exitConfig = 78

// TestDaemonConfigError runs the daemon with configurations it must refuse
// to start with: it exits 78, and the error it prints on standard error
// carries the "<3>" priority prefix when standard error is the journal's
// stream (JOURNAL_STREAM names the device and inode of fd 2, as systemd sets
// it), and no prefix otherwise. None of this needs root: the daemon fails
// before it touches fanotify.
func TestDaemonConfigError(t *testing.T) {
	dir := t.TempDir()
	emptyRules := filepath.Join(dir, "empty.d")
	if err := os.Mkdir(emptyRules, 0o755); err != nil {
		t.Fatal(err)
	}
	brokenRules := filepath.Join(dir, "broken.d")
	if err := os.Mkdir(brokenRules, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(brokenRules, "bad.yar"), "rule broken { condition: nosuchthing }\n", 0o644)
	config := func(name, text string) string {
		p := filepath.Join(dir, name)
		writeFile(t, p, text, 0o644)
		return p
	}
	cacheDir := filepath.Join(dir, "cache")
	good := config("good.toml", "[rules]\ncache_dir = \""+cacheDir+"\"\n")
	unknownKey := config("unknown.toml", "mode = \"enforce\"\nno_such_key = 1\n")
	badValue := config("badvalue.toml", "[log]\nlevel = \"loud\"\n")

	tests := []struct {
		name    string
		args    []string
		journal bool
		want    []string // in the error line
	}{
		{"unknown key, journal", []string{"--config", unknownKey}, true, []string{unknownKey + ":2", "no_such_key"}},
		{"unknown key, terminal", []string{"--config", unknownKey}, false, []string{unknownKey + ":2", "no_such_key"}},
		{"bad value", []string{"--config", badValue}, true, []string{badValue + ":2", "log.level"}},
		{"missing config", []string{"--config", filepath.Join(dir, "none.toml")}, true, []string{"none.toml"}},
		{"no rules", []string{"--config", good, "--rules-dir", emptyRules}, true, []string{"no rules loaded", emptyRules}},
		{"every rule broken", []string{"--config", good, "--rules-dir", brokenRules}, true, []string{"no rules loaded", "bad.yar"}},
		{"missing rule dir", []string{"--config", good, "--rules-dir", filepath.Join(dir, "none.d")}, false, []string{"none.d"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			stderr, err := os.Create(filepath.Join(t.TempDir(), "stderr"))
			if err != nil {
				t.Fatal(err)
			}
			defer stderr.Close()
			cmd := exec.Command(binary, append([]string{"daemon"}, tc.args...)...)
			cmd.Stderr = stderr
			cmd.Env = withoutEnv(os.Environ(), "JOURNAL_STREAM", "NOTIFY_SOCKET")
			if tc.journal {
				var st syscall.Stat_t
				if err := syscall.Fstat(int(stderr.Fd()), &st); err != nil {
					t.Fatal(err)
				}
				cmd.Env = append(cmd.Env, "JOURNAL_STREAM="+strconv.FormatUint(st.Dev, 10)+":"+strconv.FormatUint(st.Ino, 10))
			}
			err = cmd.Run()
			out, rerr := os.ReadFile(stderr.Name())
			if rerr != nil {
				t.Fatal(rerr)
			}
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != exitConfig {
				t.Fatalf("fanguard daemon %s: %v, want exit status %d; stderr:\n%s", strings.Join(tc.args, " "), err, exitConfig, out)
			}
			lines := strings.Split(strings.TrimRight(string(out), "\n"), "\n")
			last := lines[len(lines)-1]
			prefix := "fanguard: "
			if tc.journal {
				prefix = "<3>fanguard: "
			}
			if !strings.HasPrefix(last, prefix) {
				t.Errorf("error line %q does not start with %q; stderr:\n%s", last, prefix, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(last, w) {
					t.Errorf("error line %q does not name %q", last, w)
				}
			}
		})
	}
}

// TestUnitRestartPolicy checks the unit's handling of the daemon's exit
// status and standard error: it restarts after crashes (Restart=always) but
// not after a configuration error (RestartPreventExitStatus= holds 78), and
// what reaches standard error without a priority prefix (a Go panic's
// trace) is logged at err (SyslogLevel=err). systemd-analyze verify checks
// the syntax (TestUnitFile); this checks the values.
func TestUnitRestartPolicy(t *testing.T) {
	f, err := os.Open(unitFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	settings := map[string][]string{}
	section := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "["):
			section = line
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				t.Fatalf("%s: line %q is no setting", unitFile, line)
			}
			settings[section+k] = append(settings[section+k], strings.Fields(v)...)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		key  string
		want string
	}{
		{"Restart", "always"},
		{"RestartPreventExitStatus", strconv.Itoa(exitConfig)},
		{"SyslogLevel", "err"},
	}
	for _, tc := range tests {
		got := settings["[Service]"+tc.key]
		if !slices.Contains(got, tc.want) {
			t.Errorf("%s: [Service] %s= is %q, want it to hold %q", unitFile, tc.key, got, tc.want)
		}
	}
	if got := settings["[Service]SyslogLevelPrefix"]; len(got) > 0 && !slices.Contains(got, "yes") && !slices.Contains(got, "true") {
		t.Errorf("%s: SyslogLevelPrefix=%q: systemd would not read the daemon's <3> prefix", unitFile, got)
	}
}

// withoutEnv returns env without the variables named.
func withoutEnv(env []string, names ...string) []string {
	return slices.DeleteFunc(slices.Clone(env), func(kv string) bool {
		k, _, _ := strings.Cut(kv, "=")
		return slices.Contains(names, k)
	})
}
