package test

import (
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fanguard/fanguard/internal/testutil"
)

// progressTree makes a directory of n clean files and one EICAR file.
func progressTree(t *testing.T, n int) string {
	t.Helper()
	dir := t.TempDir()
	for i := range n {
		writeFile(t, filepath.Join(dir, fmt.Sprintf("f%03d.txt", i)), strings.Repeat("nothing to see here\n", 50), 0o644)
	}
	writeFile(t, filepath.Join(dir, "eicar.com"), eicar, 0o644)
	return dir
}

// shellQuote quotes s for sh.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// runOnTerminal runs fanguard with args on a pseudo-terminal (util-linux
// script) and returns its exit code and everything it wrote there.
func runOnTerminal(t *testing.T, args ...string) (int, string) {
	t.Helper()
	if _, err := exec.LookPath("script"); err != nil {
		if testutil.InCI() {
			t.Fatalf("script (util-linux) is needed for a pseudo-terminal: %v", err)
		}
		t.Skipf("script (util-linux) is needed for a pseudo-terminal: %v", err)
	}
	line := shellQuote(binary)
	for _, a := range args {
		line += " " + shellQuote(a)
	}
	cmd := exec.Command("script", "-qec", line, "/dev/null")
	out, err := cmd.Output()
	code := 0
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = ee.ExitCode()
	default:
		t.Fatalf("running %s under script: %v", line, err)
	}
	return code, string(out)
}

// summaryLine returns the terminal line holding the summary, with what an
// erased bar left before it cut off, and whether it was found.
func summaryLine(out string) (string, bool) {
	for l := range strings.SplitSeq(out, "\n") {
		if !strings.Contains(l, "fanguard: scanned") {
			continue
		}
		l = strings.TrimSuffix(l, "\r")
		if i := strings.LastIndex(l, "\r\x1b[K"); i >= 0 {
			l = l[i+len("\r\x1b[K"):]
		}
		return l, true
	}
	return "", false
}

func TestProgressPiped(t *testing.T) {
	dir := progressTree(t, 50)
	code, out, errOut := run(t, "scan", "--rules-dir", mustAbs(t, "../configs/rules.d"), dir)
	if code != 1 {
		t.Errorf("exit %d, want 1\nstdout: %s\nstderr: %q", code, out, errOut)
	}
	if want := "fanguard: scanned 51 files, 1 detection, 0 skipped, 0 errors\n"; errOut != want {
		t.Errorf("stderr %q, want only %q", errOut, want)
	}
	if strings.ContainsAny(out+errOut, "\r\x1b") {
		t.Errorf("output holds \\r or an escape sequence:\nstdout: %q\nstderr: %q", out, errOut)
	}
	if !strings.Contains(out, "eicar.com: EICAR_Test_File (") {
		t.Errorf("stdout lacks the detection: %q", out)
	}
}

func TestProgressOnTerminal(t *testing.T) {
	dir := progressTree(t, 300)
	code, out := runOnTerminal(t, "scan", "--rules-dir", mustAbs(t, "../configs/rules.d"), dir)
	if code != 1 {
		t.Errorf("exit %d, want 1\noutput: %q", code, out)
	}
	for _, w := range []string{"\r", "\x1b[K", " files", "MB/s", " detections", "eicar.com: EICAR_Test_File ("} {
		if !strings.Contains(out, w) {
			t.Errorf("output lacks %q: %q", w, out)
		}
	}
	// The bar is erased before the detection and the summary: each starts
	// its line.
	for l := range strings.SplitSeq(out, "\n") {
		if i := strings.Index(l, "eicar.com: EICAR_Test_File"); i >= 0 {
			before := l[:strings.Index(l, dir)]
			if before != "" && !strings.HasSuffix(before, "\r\x1b[K") {
				t.Errorf("the detection shares its line with the bar: %q", l)
			}
		}
	}
	want := "fanguard: scanned 301 files, 1 detection, 0 skipped, 0 errors"
	if l, ok := summaryLine(out); !ok || l != want {
		t.Errorf("summary line %q (found %v), want %q; output: %q", l, ok, want, out)
	}
}

func TestProgressDisabledOnTerminal(t *testing.T) {
	dir := progressTree(t, 300)
	code, out := runOnTerminal(t, "scan", "--no-progress", "--rules-dir", mustAbs(t, "../configs/rules.d"), dir)
	if code != 1 {
		t.Errorf("exit %d, want 1\noutput: %q", code, out)
	}
	// The terminal turns each \n into \r\n: look for the bar's marks
	// instead of \r.
	for _, bad := range []string{"\x1b", "MB/s", "counting"} {
		if strings.Contains(out, bad) {
			t.Errorf("output holds %q with --no-progress: %q", bad, out)
		}
	}
	want := "fanguard: scanned 301 files, 1 detection, 0 skipped, 0 errors\r\n"
	if !strings.Contains(out, want) || strings.Count(out, "\n") != 2 {
		t.Errorf("output %q, want the detection and %q only", out, want)
	}
}
