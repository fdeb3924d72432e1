package test

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// run runs the fanguard binary and returns its exit code and output.
func run(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = ee.ExitCode()
	default:
		t.Fatalf("running fanguard %v: %v", args, err)
	}
	return code, out.String(), errb.String()
}

// expectRun runs fanguard with args and checks its exit code and that its
// output holds each of wantOut and its errors each of wantErr.
func expectRun(t *testing.T, args []string, wantCode int, wantOut, wantErr []string) {
	t.Helper()
	code, out, errOut := run(t, args...)
	if code != wantCode {
		t.Errorf("exit %d, want %d\nstdout: %s\nstderr: %s", code, wantCode, out, errOut)
	}
	for _, w := range wantOut {
		if !strings.Contains(out, w) {
			t.Errorf("stdout lacks %q:\n%s", w, out)
		}
	}
	for _, w := range wantErr {
		if !strings.Contains(errOut, w) {
			t.Errorf("stderr lacks %q:\n%s", w, errOut)
		}
	}
}

func TestScanCommand(t *testing.T) {
	dir := t.TempDir()
	clean := filepath.Join(dir, "clean")
	os.MkdirAll(filepath.Join(clean, "sub"), 0o755)
	writeFile(t, filepath.Join(clean, "a.txt"), "nothing to see\n", 0o644)
	writeFile(t, filepath.Join(clean, "sub", "b.txt"), "still nothing\n", 0o644)
	infected := filepath.Join(dir, "infected")
	os.MkdirAll(filepath.Join(infected, "deep", "er"), 0o755)
	writeFile(t, filepath.Join(infected, "ok.txt"), "fine\n", 0o644)
	writeFile(t, filepath.Join(infected, "deep", "er", "eicar.com"), eicar, 0o644)
	writeFile(t, filepath.Join(infected, "new\nline.com"), eicar, 0o644)
	rules := "--rules-dir=" + mustAbs(t, "../configs/rules.d")
	cfg := "--config=" + filepath.Join(dir, "none.toml") // explicit and missing: an error

	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantOut  []string
		wantErr  []string
	}{
		{"clean tree", []string{"scan", rules, clean}, 0, nil, []string{"scanned 2 files, 0 detections"}},
		{"detections", []string{"scan", rules, infected}, 1,
			[]string{filepath.Join(infected, "deep", "er", "eicar.com") + ": EICAR_Test_File (", `"` + infected + `/new\nline.com": EICAR_Test_File`},
			[]string{"scanned 3 files, 2 detections"}},
		{"missing path", []string{"scan", rules, filepath.Join(dir, "nope")}, 2, nil, []string{"nope", "no such file"}},
		{"detection wins over error", []string{"scan", rules, infected, filepath.Join(dir, "nope")}, 1, nil, []string{"2 detections", "1 error"}},
		{"missing config named", []string{"scan", cfg, clean}, 2, nil, []string{"none.toml"}},
		{"no rules", []string{"scan", "--rules-dir=" + dir, clean}, 2, nil, []string{"no rules"}},
		{"no path", []string{"scan", rules}, 2, nil, []string{"requires at least 1 arg"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { expectRun(t, tt.args, tt.wantCode, tt.wantOut, tt.wantErr) })
	}

	t.Run("json", func(t *testing.T) {
		code, out, errOut := run(t, "scan", "--json", rules, infected)
		if code != 1 {
			t.Fatalf("exit %d, want 1; stderr: %s", code, errOut)
		}
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) != 2 {
			t.Fatalf("want 2 JSON lines, got:\n%s", out)
		}
		for _, l := range lines {
			var d struct {
				Path     string
				Rule     string
				RuleFile string `json:"rule_file"`
				Strings  []struct {
					ID     string
					Offset int64
				}
			}
			if err := json.Unmarshal([]byte(l), &d); err != nil {
				t.Fatalf("decoding %q: %v", l, err)
			}
			if d.Rule != "EICAR_Test_File" || !strings.HasPrefix(d.Path, infected) || !strings.HasSuffix(d.RuleFile, "eicar.yar") || len(d.Strings) != 1 || d.Strings[0].Offset != 0 {
				t.Errorf("detection %+v", d)
			}
		}
	})
}

func TestConfigErrorsStopTheStart(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name   string
		config string
		want   []string
	}{
		{"unknown key", "budget = \"5s\"\n[protect]\nfs_type = [\"ext4\"]\n", []string{"fanguard.toml:3", "protect.fs_type"}},
		{"bad value", "on_timeout = \"maybe\"\n", []string{"fanguard.toml:1", "on_timeout", `"allow" or "deny"`}},
		{"network fs", "[protect]\nfs_types = [\"nfs4\"]\n", []string{"fanguard.toml:2", "protect.fs_types", "nfs4"}},
		{"syntax", "budget = \n", []string{"fanguard.toml:1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(dir, "fanguard.toml")
			writeFile(t, p, tt.config, 0o644)
			code, _, errOut := run(t, "daemon", "--config", p)
			if code != exitConfig {
				t.Errorf("exit %d, want %d (EX_CONFIG)", code, exitConfig)
			}
			for _, w := range tt.want {
				if !strings.Contains(errOut, w) {
					t.Errorf("error lacks %q:\n%s", w, errOut)
				}
			}
		})
	}
}

func TestVersionAndHelp(t *testing.T) {
	code, out, _ := run(t, "version")
	if code != 0 || !strings.HasPrefix(out, "fanguard ") {
		t.Errorf("version: exit %d, %q", code, out)
	}
	code, out, _ = run(t, "--help")
	for _, w := range []string{"daemon", "scan", "version", "rules.d"} {
		if code != 0 || !strings.Contains(out, w) {
			t.Errorf("--help: exit %d, lacks %q:\n%s", code, w, out)
		}
	}
	code, out, _ = run(t, "scan", "--help")
	for _, w := range []string{"--json", "--config", "--rules-dir", "Exit status"} {
		if code != 0 || !strings.Contains(out, w) {
			t.Errorf("scan --help: exit %d, lacks %q", code, w)
		}
	}
}
