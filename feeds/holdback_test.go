package feeds

import (
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/hillu/go-yara/v4"
)

// compileRules compiles src with libyara and returns its rules' names
// (private ones included), sorted.
func compileRules(t *testing.T, src string) []string {
	t.Helper()
	c, err := yara.NewCompiler()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Destroy()
	if err := c.AddString(src, ""); err != nil {
		t.Fatalf("compiling: %v (%v)\n%s", err, c.Errors, src)
	}
	rules, err := c.GetRules()
	if err != nil {
		t.Fatal(err)
	}
	defer rules.Destroy()
	var names []string
	for _, r := range rules.GetRules() {
		names = append(names, r.Identifier())
	}
	slices.Sort(names)
	return names
}

func TestHoldBackReversingLabs(t *testing.T) {
	_, files := reversingLabsFiles(t)
	var refused int
	for _, file := range files {
		src, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		before := compileRules(t, string(src))
		if len(before) == 0 {
			continue
		}
		// Drop one rule (the last by name): no rule of these files
		// references another, so it goes alone.
		drop := before[len(before)-1]
		out, removed, err := HoldBack(src, []string{drop})
		if err != nil {
			refused++
			t.Logf("%s: %v", file, err)
			continue
		}
		if diff := cmp.Diff([]string{drop}, removed); diff != "" {
			t.Errorf("%s: removed (-want +got):\n%s", file, diff)
		}
		after := compileRules(t, string(out))
		if diff := cmp.Diff(before[:len(before)-1], after, cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("%s: rules after holding back %s (-want +got):\n%s", file, drop, diff)
		}
		if !strings.HasPrefix(string(out), "// Rewritten by fanguard: rules held back: "+drop+".\n") {
			t.Errorf("%s: output starts %q", file, strings.SplitN(string(out), "\n", 2)[0])
		}
	}
	t.Logf("%d files, %d refused", len(files), refused)
	if refused > len(files)/10 {
		t.Errorf("HoldBack refused %d of %d files", refused, len(files))
	}
}

func TestHoldBack(t *testing.T) {
	tests := []struct {
		name        string
		src         string
		drop        []string
		wantRemoved []string
		wantRules   []string // compiled with libyara; nil: do not compile (a yara 4.3 feature)
		wantErr     string
	}{
		{
			name: "one rule",
			src: `rule a { strings: $a = "aaaa" condition: $a }
rule b { strings: $b = { 62 62 ?? 62 } condition: $b }`,
			drop:        []string{"a"},
			wantRemoved: []string{"a"},
			wantRules:   []string{"b"},
		},
		{
			name: "private rule used by another",
			src: `private rule p { strings: $p = "pppp" condition: $p }
rule user { condition: p and filesize < 100 }
rule other { condition: filesize > 1 }`,
			drop:        []string{"p"},
			wantRemoved: []string{"p", "user"},
			wantRules:   []string{"other"},
		},
		{
			name: "dependents of dependents",
			src: `rule a { condition: filesize == 1 }
rule b { condition: not a }
rule c { condition: for any i in (1..2): (b and i > 0) }
rule d { condition: filesize == 2 }`,
			drop:        []string{"a"},
			wantRemoved: []string{"a", "b", "c"},
			wantRules:   []string{"d"},
		},
		{
			name: "dropping a user keeps what it uses",
			src: `private rule p { condition: filesize == 1 }
rule user { condition: p }`,
			drop:        []string{"user"},
			wantRemoved: []string{"user"},
			wantRules:   []string{"p"},
		},
		{
			name: "imports and global rules kept",
			src: `import "pe"
import "math"
global rule g { condition: filesize < 10MB }
rule x { condition: pe.is_pe }
rule y { condition: math.entropy(0, filesize) > 7 }`,
			drop:        []string{"x"},
			wantRemoved: []string{"x"},
			wantRules:   []string{"g", "y"},
		},
		{
			name: "reference in an of range",
			src: `rule a { condition: filesize == 1 }
rule b { strings: $b = "bbbb" condition: any of them in (0..a) }
rule c { condition: true }`,
			drop:        []string{"a"},
			wantRemoved: []string{"a", "b"},
			wantRules:   []string{"c"},
		},
		{
			name: "rule set with a wildcard",
			src: `rule r1 { condition: filesize == 1 }
rule r2 { condition: filesize == 2 }
rule s { condition: any of (r*) }
rule t { condition: 1 of (r2) }
rule u { condition: true }`,
			drop:        []string{"r1"},
			wantRemoved: []string{"r1", "s"},
		},
		{
			name: "two names",
			src: `rule a { condition: true }
rule b { condition: true }
rule c { condition: true }`,
			drop:        []string{"c", "a"},
			wantRemoved: []string{"a", "c"},
			wantRules:   []string{"b"},
		},
		{
			name: "every rule",
			src: `import "pe"
rule a { condition: pe.is_dll() }`,
			drop:        []string{"a"},
			wantRemoved: []string{"a"},
			wantRules:   []string{},
		},
		{
			name:    "unknown name",
			src:     `rule a { condition: true }`,
			drop:    []string{"b"},
			wantErr: `holding back rule "b": no such rule in the file`,
		},
		{
			name:    "not parsed",
			src:     `rule a { condition: $missing_brace `,
			drop:    []string{"a"},
			wantErr: "parsing rules",
		},
		{
			name:    "include",
			src:     "include \"other.yar\"\nrule a { condition: true }",
			drop:    []string{"a"},
			wantErr: `the file includes "other.yar"`,
		},
		{
			name:    "zero jump",
			src:     `rule a { strings: $a = { 61 [0-0] 62 } condition: $a } rule b { condition: true }`,
			drop:    []string{"b"},
			wantErr: "[-]",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, removed, err := HoldBack([]byte(tt.src), tt.drop)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.wantRemoved, removed); diff != "" {
				t.Errorf("removed (-want +got):\n%s", diff)
			}
			head := "// Rewritten by fanguard: rules held back: " + strings.Join(tt.wantRemoved, ", ") + ".\n"
			if !strings.HasPrefix(string(out), head) {
				t.Errorf("output does not start with %q:\n%s", head, out)
			}
			if strings.Contains(tt.src, "import \"pe\"") && !strings.Contains(string(out), "import \"pe\"") {
				t.Errorf("import \"pe\" lost:\n%s", out)
			}
			if tt.wantRules == nil {
				return
			}
			got := compileRules(t, string(out))
			if diff := cmp.Diff(tt.wantRules, got, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("compiled rules (-want +got):\n%s", diff)
			}
		})
	}
}
