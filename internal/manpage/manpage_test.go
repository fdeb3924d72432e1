package manpage

import (
	"bytes"
	"maps"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/pelletier/go-toml/v2"

	"github.com/fanguard/fanguard/internal/testutil"
)

const shippedConfig = "../../configs/fanguard.toml"

// keys lists the dotted keys of a TOML document (tables' keys as
// "table.key").
func keys(t *testing.T, data []byte) []string {
	t.Helper()
	var doc map[string]any
	if err := toml.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	var out []string
	for k, v := range doc {
		if m, ok := v.(map[string]any); ok {
			for kk := range maps.Keys(m) {
				out = append(out, k+"."+kk)
			}
			continue
		}
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// render formats a page as man does, and returns its text and troff's
// warnings. It fails under CI without man.
func render(t *testing.T, page []byte) (text, warnings string) {
	t.Helper()
	if _, err := exec.LookPath("man"); err != nil {
		if testutil.InCI() {
			t.Fatal("man (man-db) is needed to check the pages: make deps")
		}
		t.Skip("no man")
	}
	f := t.TempDir() + "/page"
	if err := os.WriteFile(f, page, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("man", "-l", f)
	cmd.Env = append(os.Environ(), "MANWIDTH=80", "MANPAGER=cat", "PAGER=cat", "LC_ALL=C.UTF-8", "MAN_KEEP_STDERR=1")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("man -l: %v\n%s", err, errb.String())
	}
	return out.String(), errb.String()
}

// TestConfigPage renders fanguard.toml(5) from the shipped configuration:
// no warnings, and every key of the file (which is Default(), as policy's
// tests check) named as "table.key".
func TestConfigPage(t *testing.T) {
	data, err := os.ReadFile(shippedConfig)
	if err != nil {
		t.Fatal(err)
	}
	text, warnings := render(t, Config(data, ConfigOptions{}))
	if warnings != "" {
		t.Errorf("man -l warns:\n%s", warnings)
	}
	ks := keys(t, data)
	if len(ks) < 30 {
		t.Fatalf("%s: only %d keys: %v", shippedConfig, len(ks), ks)
	}
	// The feeds' keys, documented in comments.
	ks = append(ks, "name:", "url:", "subdir:", "sha256:", "minisign_key:", "signature_url:", "include:", "exclude:", "ca_file:", "max_size:")
	for _, k := range ks {
		if !strings.Contains(text, k) {
			t.Errorf("the page does not name %s", k)
		}
	}
	for _, w := range []string{"FANGUARD.TOML(5)", "/etc/fanguard/fanguard.toml", "[quarantine]", "Shipped as: budget = \"5s\"", "10µs"} {
		if !strings.Contains(text, w) {
			t.Errorf("the page lacks %q", w)
		}
	}
}

func TestEscape(t *testing.T) {
	tests := []struct{ in, want string }{
		{"plain", "plain"},
		{".starts with a dot", `\&.starts with a dot`},
		{"'quote", `\&'quote`},
		{`back\slash`, `back\eslash`},
		{"a-b", `a\-b`},
		{"10µs", `10\[u00B5]s`},
		{"bell\a", `bell\[u0007]`},
	}
	for _, tt := range tests {
		if got := escape(tt.in); got != tt.want {
			t.Errorf("escape(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// FuzzConfig: any text renders to a page whose every line that is not a
// request starts with no control character.
func FuzzConfig(f *testing.F) {
	data, _ := os.ReadFile(shippedConfig)
	f.Add(data)
	f.Add([]byte("# .TH x\n.SH\nkey = 1\n[t]\n# k: 'x\n.k = \\\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		page := Config(in, ConfigOptions{})
		for i, l := range strings.Split(string(page), "\n") {
			if strings.HasPrefix(l, "'") {
				t.Fatalf("line %d starts a request with ': %q", i+1, l)
			}
			if strings.HasPrefix(l, ".") && !knownRequest(l) {
				t.Fatalf("line %d is a request the renderer does not write: %q", i+1, l)
			}
		}
	})
}

func knownRequest(l string) bool {
	for _, r := range []string{".TH ", ".SH ", ".SS ", ".TP", ".B ", ".BR ", ".IP", ".PP", ".nf", ".fi", ".na", ".ad"} {
		if strings.HasPrefix(l, r) {
			return true
		}
	}
	return false
}
