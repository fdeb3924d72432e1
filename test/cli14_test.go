package test

import (
	"encoding/base64"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"

	"github.com/fanguard/fanguard/internal/testutil"
)

// TestVersionFlag: --version prints what the version command prints.
func TestVersionFlag(t *testing.T) {
	code, out, errOut := run(t, "--version")
	_, want, _ := run(t, "version")
	if code != 0 || out != want || !strings.HasPrefix(out, "fanguard ") {
		t.Errorf("--version: exit %d, %q (stderr %q); want 0, %q", code, out, errOut, want)
	}
}

// subcommands lists the commands that `fanguard --help` names, and those
// of each that has subcommands (as "rules update").
func subcommands(t *testing.T, args ...string) []string {
	t.Helper()
	_, out, _ := run(t, append(args, "--help")...)
	_, list, ok := strings.Cut(out, "Available Commands:\n")
	if !ok {
		return nil
	}
	var cmds []string
	for _, l := range strings.Split(list, "\n") {
		if !strings.HasPrefix(l, "  ") {
			break
		}
		name := strings.Fields(l)[0]
		if name == "help" {
			continue
		}
		full := strings.TrimSpace(strings.Join(append(args, name), " "))
		cmds = append(cmds, full)
		cmds = append(cmds, subcommands(t, append(args, name)...)...)
	}
	return cmds
}

// manText renders a page with man -l and returns its text and warnings;
// it skips without man, and fails under CI.
func manText(t *testing.T, page string) (text, warnings string) {
	t.Helper()
	if _, err := exec.LookPath("man"); err != nil {
		if testutil.InCI() {
			t.Fatal("man (man-db) is needed to check the pages: make deps")
		}
		t.Skip("no man")
	}
	cmd := exec.Command("man", "-l", page)
	cmd.Env = append(os.Environ(), "MANWIDTH=80", "MANPAGER=cat", "PAGER=cat", "LC_ALL=C.UTF-8")
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("man -l %s: %v\n%s", page, err, errb.String())
	}
	return out.String(), errb.String()
}

// TestManPages writes the pages as `make man` does and renders each with
// man: no warnings; fanguard(8) names every subcommand, each has its page;
// fanguard.toml(5) names every key of the shipped configuration.
func TestManPages(t *testing.T) {
	dir := t.TempDir()
	expectRun(t, []string{"man", "--config-file", mustAbs(t, "../configs/fanguard.toml"), dir}, 0, nil, nil)
	pages, _ := filepath.Glob(filepath.Join(dir, "*.[58]"))
	if len(pages) < 10 {
		t.Fatalf("man wrote %d pages: %v", len(pages), pages)
	}
	text, raw := map[string]string{}, map[string]string{}
	for _, p := range pages {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		raw[filepath.Base(p)] = strings.ReplaceAll(string(b), `\-`, "-")
		txt, warnings := manText(t, p)
		if warnings != "" {
			t.Errorf("%s: man -l warns:\n%s", filepath.Base(p), warnings)
		}
		text[filepath.Base(p)] = txt
	}
	cmds := subcommands(t)
	for _, w := range []string{"daemon", "scan", "status", "reload", "rules update", "quarantine list", "allow add", "version", "completion bash"} {
		if !slicesContains(cmds, w) {
			t.Errorf("--help does not list %q: %v", w, cmds)
		}
	}
	for _, c := range cmds {
		name := "fanguard-" + strings.ReplaceAll(c, " ", "-")
		if !strings.Contains(raw["fanguard.8"], name+"(8)") && !strings.Contains(raw["fanguard-"+strings.Fields(c)[0]+".8"], name+"(8)") {
			t.Errorf("no page refers to %s(8)", name)
		}
		if _, ok := text[name+".8"]; !ok {
			t.Errorf("no page %s.8", name)
		}
	}
	for _, w := range []string{"--version", "fanguard.toml(5)"} {
		if !strings.Contains(text["fanguard.8"], w) {
			t.Errorf("fanguard(8) lacks %q", w)
		}
	}
	if !strings.Contains(text["fanguard-scan.8"], "--quiet") {
		t.Errorf("fanguard-scan(8) lacks --quiet")
	}
	toml := text["fanguard.toml.5"]
	for _, k := range []string{"mode", "budget", "rules.dirs", "protect.fs_types", "quarantine.db", "log.level", "update.max_scan_cost"} {
		if !regexp.MustCompile(`(?m)^\s+` + regexp.QuoteMeta(k) + `\b`).MatchString(toml) {
			t.Errorf("fanguard.toml(5) does not document %s", k)
		}
	}
}

func slicesContains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// TestCompletion: the bash and zsh completion scripts are generated and
// bash parses its script.
func TestCompletion(t *testing.T) {
	code, out, errOut := run(t, "completion", "bash")
	if code != 0 || !strings.Contains(out, "__start_fanguard") {
		t.Fatalf("completion bash: exit %d, %.200s %s", code, out, errOut)
	}
	f := filepath.Join(t.TempDir(), "fanguard")
	writeFile(t, f, out, 0o644)
	if b, err := exec.Command("bash", "-n", f).CombinedOutput(); err != nil {
		t.Errorf("bash -n: %v\n%s", err, b)
	}
	code, out, _ = run(t, "completion", "zsh")
	if code != 0 || !strings.HasPrefix(out, "#compdef fanguard") {
		t.Errorf("completion zsh: exit %d, %.100q", code, out)
	}
}

// TestStatusNotRoot: status as nobody exits 4 (LSB: insufficient
// privilege), whether the socket's directory or the daemon refuses.
func TestStatusNotRoot(t *testing.T) {
	testutil.RequireRoot(t)
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	priv := filepath.Join(dir, "priv")
	os.Mkdir(priv, 0o700)
	sock := filepath.Join(priv, "a", "b", "control.sock")
	os.MkdirAll(filepath.Dir(sock), 0o755)
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	nb := newNobody(t, &daemon{Control: sock})
	code, out := nb.run(binary, "status", "--socket", sock)
	if code != 4 || !strings.Contains(out, "root only") || !strings.Contains(out, sock) {
		t.Errorf("status as nobody: exit %d, %q; want 4 and a message naming %s", code, out, sock)
	}
}

// TestQuarantineMissingDB: every quarantine and allow command but allow
// add says the database is missing and does not create it.
func TestQuarantineMissingDB(t *testing.T) {
	testutil.RequireRoot(t)
	dir := t.TempDir()
	db := filepath.Join(dir, "q", "quarantine.db")
	cfg := filepath.Join(dir, "fanguard.toml")
	writeFile(t, cfg, "", 0o644)
	sum := strings.Repeat("ab", 32)
	for _, args := range [][]string{
		{"quarantine", "list"}, {"quarantine", "list", "--json"}, {"quarantine", "show", "1"}, {"quarantine", "purge"},
		{"quarantine", "delete", "1"}, {"quarantine", "export"}, {"allow", "list"}, {"allow", "remove", sum},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			expectRun(t, append(args, "--config", cfg, "--db", db, "--vault", filepath.Join(dir, "vault")), 1, nil,
				[]string{"no quarantine database at " + db, "no detection recorded yet, or [quarantine] db points elsewhere"})
			for _, p := range []string{db, filepath.Dir(db)} {
				if _, err := os.Lstat(p); err == nil {
					t.Errorf("%s was created", p)
				}
			}
		})
	}
	expectRun(t, []string{"allow", "add", sum, "--config", cfg, "--db", db}, 0, []string{"added"}, nil)
	if _, err := os.Stat(db); err != nil {
		t.Errorf("allow add did not create the database: %v", err)
	}
}

// TestScanSkippedAndJSON: scan names each file it skips and why, in text
// and --json; --json gives match data as text and base64; --quiet keeps
// only detections and errors.
func TestScanSkippedAndJSON(t *testing.T) {
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	os.Chmod(filepath.Dir(dir), 0o755) // for nobody, below
	tree := filepath.Join(dir, "tree")
	os.Mkdir(tree, 0o755)
	writeFile(t, filepath.Join(tree, "big.bin"), strings.Repeat("x", 3000), 0o644)
	writeFile(t, filepath.Join(tree, "eicar.com"), eicar, 0o644)
	writeFile(t, filepath.Join(tree, "bin.dat"), "head\xff\xfe\x00MARK\x01end", 0o644)
	writeFile(t, filepath.Join(tree, "secret"), "x", 0o600)
	if err := syscall.Mkfifo(filepath.Join(tree, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	rules := filepath.Join(dir, "rules")
	os.Mkdir(rules, 0o755)
	writeFile(t, filepath.Join(rules, "bin.yar"), "rule Binary_Mark { strings: $m = { FF FE 00 4D 41 52 4B 01 } condition: $m }\n", 0o644)
	writeFile(t, filepath.Join(rules, "eicar.yar"), mustRead(t, "../configs/rules.d/eicar.yar"), 0o644)
	cfg := filepath.Join(dir, "fanguard.toml")
	writeFile(t, cfg, "max_file_size = \"2KiB\"\n", 0o644)
	base := []string{"scan", "--config", cfg, "--rules-dir", rules}

	expectRun(t, append(base, tree), 1, []string{"eicar.com: EICAR_Test_File", "bin.dat: Binary_Mark"},
		[]string{"skipped " + filepath.Join(tree, "big.bin") + ": larger than max_file_size (3000 bytes, the limit is 2048)",
			"skipped " + filepath.Join(tree, "fifo") + ": not a regular file",
			"fanguard: scanned 3 files, 2 detections, 2 skipped, 0 errors"})
	expectRun(t, append(base, filepath.Join(tree, "eicar.com")), 1, nil, []string{"fanguard: scanned 1 file, 1 detection, 0 skipped, 0 errors"})

	code, out, errOut := run(t, append(base, "--quiet", tree)...)
	if code != 1 || errOut != "" || strings.Count(out, "\n") != 2 {
		t.Errorf("--quiet: exit %d, stdout %q, stderr %q; want 1, the 2 detections alone", code, out, errOut)
	}

	code, out, errOut = run(t, append(base, "--json", tree)...)
	if code != 1 {
		t.Fatalf("--json: exit %d, stderr %s", code, errOut)
	}
	skipped := map[string]string{}
	var data, dataB64 string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		var o struct {
			Path, Rule, Skipped, Reason string
			PathB64                     []byte `json:"path_b64"`
			Strings                     []struct {
				Data    string
				DataB64 string `json:"data_b64"`
			}
		}
		if err := json.Unmarshal([]byte(l), &o); err != nil {
			t.Fatalf("decoding %q: %v", l, err)
		}
		if string(o.PathB64) != o.Path {
			t.Errorf("path %q, path_b64 %q", o.Path, o.PathB64)
		}
		switch {
		case o.Skipped != "":
			skipped[filepath.Base(o.Path)] = o.Skipped
		case o.Rule == "Binary_Mark" && len(o.Strings) == 1:
			data, dataB64 = o.Strings[0].Data, o.Strings[0].DataB64
		}
	}
	if want := map[string]string{"big.bin": "oversize", "fifo": "not_regular"}; !mapsEqual(skipped, want) {
		t.Errorf("--json skipped %v, want %v", skipped, want)
	}
	if want := `\xff\xfe` + "\x00MARK\x01"; data != want {
		t.Errorf("--json data %q, want %q (text, not Go-quoted)", data, want)
	}
	if b, _ := base64.StdEncoding.DecodeString(dataB64); string(b) != "\xff\xfe\x00MARK\x01" {
		t.Errorf("--json data_b64 %q decodes to %q", dataB64, b)
	}

	// Unreadable: as nobody, secret (0600, root's) cannot be opened.
	nb := newNobody(t, &daemon{Control: filepath.Join(dir, "x", "none.sock")})
	os.Chmod(rules, 0o755)
	code, out = nb.run(append([]string{binary}, append(base, "--quiet", filepath.Join(tree, "secret"))...)...)
	if code != 2 || !strings.Contains(out, "skipped "+filepath.Join(tree, "secret")+": unreadable (permission denied)") {
		t.Errorf("unreadable as nobody: exit %d, %q; want 2 and the file named", code, out)
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func mustRead(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
