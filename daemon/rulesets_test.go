package daemon

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/fanguard/fanguard/scanner"
)

// TestRuleSetEmptyClean: the fast path answers an empty file without a
// scan only when the rules cannot match empty content under any name or
// owner.
func TestRuleSetEmptyClean(t *testing.T) {
	tests := []struct {
		name  string
		rules string
		want  bool
	}{
		{"magic bytes only", `rule pe { condition: uint16(0) == 0x5A4D }`, true},
		{"a string", `rule s { strings: $a = "evil" condition: $a }`, true},
		{"matches empty content", `rule e { condition: filesize == 0 }`, false},
		{"matches by name", `rule n { condition: filename == "x.exe" }`, false},
		{"a module whose answer is not the content's", `import "time" rule t { condition: time.now() > 0 and uint16(0) == 0x5A4D or filesize < 10 }`, false},
		{"one of several matches empty content", `rule a { strings: $a = "evil" condition: $a } rule b { strings: $b = "good" condition: not $b }`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "t.yar"), []byte(tt.rules), 0o644); err != nil {
				t.Fatal(err)
			}
			rs, err := scanner.Load(scanner.LoadOptions{Dirs: []string{dir}})
			if err != nil {
				t.Fatalf("loading %q: %v", tt.rules, err)
			}
			defer rs.Close()
			if len(rs.Broken) > 0 {
				t.Fatalf("broken: %v", rs.Broken)
			}
			if got := newRuleSet(rs, 1).emptyClean; got != tt.want {
				t.Errorf("emptyClean = %v, want %v", got, tt.want)
			}
		})
	}
}
