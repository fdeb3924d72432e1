package test

import (
	"bufio"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
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

// TestJSONLog runs the daemon with [log] format = "json" and checks what a
// log shipper reads: one JSON object per line, with "time" (RFC 3339,
// nanoseconds), "priority", "message", and the fields under the journal's
// names; a detection's message reads on its own, the opener named by user,
// and durations carry their unit.
func TestJSONLog(t *testing.T) {
	d := startDaemon(t, options{tables: "[log]\nformat = \"json\"\n"})
	bad := filepath.Join(d.Dir, "eicar.com")
	writeFile(t, bad, eicar, 0o644)
	// The opener is this test, alive while the daemon describes it (a
	// program that exits at once is described as such).
	if _, err := os.ReadFile(bad); err == nil {
		t.Fatalf("reading %s succeeded, want it denied", bad)
	}
	line := d.waitLog(5*time.Second, `"message":"detection: EICAR_Test_File`)
	var got map[string]any
	if err := json.Unmarshal([]byte(line), &got); err != nil {
		t.Fatalf("detection line is not one JSON object: %v\n%s", err, line)
	}
	if ts, ok := got["time"].(string); !ok {
		t.Errorf("no time in %s", line)
	} else if _, err := time.Parse(time.RFC3339Nano, ts); err != nil || !strings.Contains(ts, ".") {
		t.Errorf("time %q is not RFC 3339 with fractions: %v", ts, err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	exe, err := filepath.EvalSymlinks(self)
	if err != nil {
		t.Fatal(err)
	}
	msg := regexp.MustCompile(`^detection: EICAR_Test_File \(severity low\) in ` + regexp.QuoteMeta(bad) +
		` opened by ` + regexp.QuoteMeta(exe) + ` \(pid ` + strconv.Itoa(os.Getpid()) +
		`, uid 0 root(, unit [^ ,)]+|, container [0-9a-f]{12})?\): denied \(record [0-9]+\); EICAR anti-malware test file \(harmless test string\)$`)
	if m, _ := got["message"].(string); !msg.MatchString(m) {
		t.Errorf("message %q does not match %s", m, msg)
	}
	for k, want := range map[string]any{
		"priority":    float64(4),
		"message_id":  "b8ad2451685fd5a3e5cad5729a4f7c3d",
		"rule":        "EICAR_Test_File",
		"path":        bad,
		"exe":         exe,
		"uid":         float64(0),
		"user":        "root",
		"severity":    "low",
		"description": "EICAR anti-malware test file (harmless test string)",
		"answered":    "deny",
	} {
		if got[k] != want {
			t.Errorf("%s = %#v, want %#v", k, got[k], want)
		}
	}

	// The start-up lines: the filesystem by mount point and type, and
	// durations with their unit.
	line = d.waitLog(time.Second, `"message":"protecting filesystem `+d.Dir+` (tmpfs, tmpfs)"`)
	if !strings.Contains(line, `"mount":"`+d.Dir+`"`) {
		t.Errorf("protecting filesystem line without its mount field: %s", line)
	}
	line = d.waitLog(time.Second, `"message":"protecting 1 filesystem with `)
	var start map[string]any
	if err := json.Unmarshal([]byte(line), &start); err != nil {
		t.Fatalf("%v: %s", err, line)
	}
	for _, k := range []string{"budget", "rules_load"} {
		v, _ := start[k].(string)
		if _, err := time.ParseDuration(v); err != nil {
			t.Errorf("%s = %#v, want a duration with its unit", k, start[k])
		}
	}
	t.Logf("detection: %s", d.waitLog(time.Second, `"message":"detection: EICAR_Test_File`))
}
