package feeds

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// trustedMarker is the content of the fake root's trusted file, which the
// tests' false-positive rules match.
const trustedMarker = "FANGUARD-TEST-TRUSTED-PROGRAM"

// fakeCanary builds a fake root whose dpkg database lists one trusted file,
// usr/bin/trusted, holding trustedMarker, and returns where to sample it.
func fakeCanary(t *testing.T) CanaryOptions {
	t.Helper()
	r := newFakeRoot(t)
	r.pkg("coreutils", "", "Priority: required", map[string]string{
		"usr/bin/trusted": "#!/bin/sh\necho " + trustedMarker + "\n",
	})
	if err := os.WriteFile(filepath.Join(r.root, "var/lib/dpkg/status"), []byte(r.status.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return CanaryOptions{Root: r.root, MaxFileSize: 1000}
}

// gateEnv is a rules directory in force (system), a feeds directory with an
// installed feed "other" (when it has files), and a candidate for feed "f", staged where
// Update stages it.
type gateEnv struct {
	system, feeds, candidate string
}

func newGateEnv(t *testing.T, system, other, candidate map[string]string) gateEnv {
	t.Helper()
	root := t.TempDir()
	e := gateEnv{system: filepath.Join(root, "system"), feeds: filepath.Join(root, "feeds")}
	if err := os.MkdirAll(e.system, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFiles(t, e.system, system)
	s := store{e.feeds}
	if other != nil {
		writeFiles(t, filepath.Join(s.feedDir("other"), "v1"), other)
		if err := s.swap("other", "v1"); err != nil {
			t.Fatal(err)
		}
	}
	e.candidate = filepath.Join(s.feedDir("f"), ".staging-1", "tree")
	if err := os.MkdirAll(e.candidate, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFiles(t, e.candidate, candidate)
	return e
}

func (e gateEnv) opts(canary []TrustedFile, maxCost time.Duration) gateOptions {
	return gateOptions{ruleDirs: []string{e.system, e.feeds}, dir: e.feeds, feed: "f", candidate: e.candidate,
		canary: canary, maxCost: maxCost, timeout: 10 * time.Second}
}

// noGateViews fails t when the gate left a view in the store.
func (e gateEnv) noGateViews(t *testing.T) {
	t.Helper()
	for _, name := range storeEntries(t, filepath.Join(e.feeds, storeDir)) {
		if strings.HasPrefix(name, ".gate-") {
			t.Errorf("the gate left its view %s in the store", name)
		}
	}
}

const (
	goodRules = "rule feed_one {\n\tstrings: $a = \"FEED-ONE\"\n\tcondition: $a\n}\n\nrule feed_two {\n\tstrings: $a = \"FEED-TWO\"\n\tcondition: $a\n}\n"
	subRule   = "rule feed_sub {\n\tstrings: $a = \"FEED-SUB\"\n\tcondition: $a\n}\n"
	// badRule does not compile: line 3 names an undefined string.
	badRule = "// a rule\n// that does not compile\nrule feed_bad { strings: $a = \"X\" condition: $b }\n"
	// fpRules has a rule matching the trusted file, one depending on it
	// that does not match by itself, and one unrelated.
	fpRules = "rule fp {\n\tstrings: $a = \"" + trustedMarker + "\"\n\tcondition: $a\n}\n\n" +
		"rule fp_user {\n\tstrings: $b = \"ELSEWHERE\"\n\tcondition: fp and $b\n}\n\n" +
		"rule keeper {\n\tstrings: $a = \"KEEPER\"\n\tcondition: $a\n}\n"
	systemRule = "rule system_one {\n\tcondition: filesize == 1\n}\n"
)

func TestGate(t *testing.T) {
	canaryOpts := fakeCanary(t)
	trusted, _, err := SampleTrusted(canaryOpts)
	if err != nil {
		t.Fatal(err)
	}
	if len(trusted) != 1 {
		t.Fatalf("the fake root gives %d trusted files, want 1: %v", len(trusted), trusted)
	}
	tests := []struct {
		name      string
		system    map[string]string
		other     map[string]string
		candidate map[string]string
		canary    []TrustedFile
		maxCost   time.Duration
		// want, when the gate passes
		wantFiles, wantRules int
		wantHeld             []HeldRule
		wantMatches          int
		wantFile             map[string]string // candidate files: what they must contain ("!x": must not contain x)
		// wantStage and wantProblems, when it fails
		wantStage    string
		wantProblems []string // prefixes, one per problem
	}{
		{
			name: "passes", system: map[string]string{"base.yar": systemRule}, other: map[string]string{"o.yar": subRule},
			candidate: map[string]string{"a.yar": goodRules, "sub/dir/b.yara": subRule, "README.md": "not a rule"},
			wantFiles: 2, wantRules: 3,
		},
		{
			name: "compile error", system: map[string]string{"base.yar": systemRule},
			candidate: map[string]string{"a.yar": goodRules, "sub/bad.yar": badRule},
			wantStage: "compile", wantProblems: []string{"f/sub/bad.yar:3: "},
		},
		{
			name:      "errors in the rules in force are not the feed's",
			system:    map[string]string{"base.yar": systemRule, "broken.yar": badRule},
			other:     map[string]string{"o.yar": subRule, "obroken.yar": badRule},
			candidate: map[string]string{"a.yar": goodRules},
			wantFiles: 1, wantRules: 2,
		},
		{
			name: "no rule file", system: map[string]string{"base.yar": systemRule},
			candidate: map[string]string{"README.md": "rules elsewhere"},
			wantStage: "compile", wantProblems: []string{"it holds no rule file (check its subdir, include and exclude)"},
		},
		{
			name: "no rule file anywhere", candidate: map[string]string{},
			wantStage: "compile", wantProblems: []string{"it holds no rule file"},
		},
		{
			name: "canary holds back", canary: trusted,
			// A rule in force matching the trusted file is not the
			// feed's to hold back.
			system:    map[string]string{"base.yar": "rule system_fp {\n\tstrings: $a = \"" + trustedMarker + "\"\n\tcondition: $a\n}\n"},
			candidate: map[string]string{"a.yar": goodRules, "fp.yar": fpRules},
			wantFiles: 2, wantRules: 3, wantMatches: 2,
			wantHeld: []HeldRule{
				{File: "fp.yar", Rule: "fp", Reason: "matched a trusted file", Match: trusted[0].Path},
				{File: "fp.yar", Rule: "fp_user", Reason: "uses a rule held back"},
			},
			wantFile: map[string]string{"fp.yar": "rule keeper", "!fp.yar": "rule fp "},
		},
		{
			name: "canary holds back a file that cannot be rewritten", canary: trusted,
			candidate: map[string]string{"a.yar": goodRules, "fp.yar": "// include below\ninclude \"x.yar\"\n" + fpRules, "x.yar": subRule},
			wantFiles: 2, wantRules: 3, wantMatches: 1,
			wantHeld: []HeldRule{{File: "fp.yar", Rule: "fp", Match: trusted[0].Path,
				Reason: "matched a trusted file; the whole file is held back, since it could not be rewritten without the rule (rewriting rules: the file includes \"x.yar\", whose rules cannot be checked here)"}},
			wantFile: map[string]string{"!fp.yar": ""},
		},
		{
			name: "cost", canary: trusted, maxCost: time.Nanosecond,
			candidate: map[string]string{"a.yar": goodRules},
			wantStage: "cost", wantProblems: []string{"a scan costs "},
		},
		{
			name: "cost within the bound", canary: trusted, maxCost: time.Minute,
			candidate: map[string]string{"a.yar": goodRules},
			wantFiles: 1, wantRules: 2,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newGateEnv(t, tt.system, tt.other, tt.candidate)
			systemBefore := readTree(t, e.system)
			res, err := gate(e.opts(tt.canary, tt.maxCost))
			e.noGateViews(t)
			if diff := cmp.Diff(systemBefore, readTree(t, e.system)); diff != "" {
				t.Errorf("the gate changed the rules in force (-before +after):\n%s", diff)
			}
			if tt.wantStage != "" {
				var ge *GateError
				if !errors.As(err, &ge) {
					t.Fatalf("err = %v, want a *GateError", err)
				}
				if ge.Feed != "f" || ge.Stage != tt.wantStage || len(ge.Problems) != len(tt.wantProblems) {
					t.Fatalf("GateError = %+v, want feed f, stage %s, %d problems", ge, tt.wantStage, len(tt.wantProblems))
				}
				for i, p := range tt.wantProblems {
					if !strings.HasPrefix(ge.Problems[i], p) || len(ge.Problems[i]) == len(p) && strings.HasSuffix(p, ": ") {
						t.Errorf("problem %d = %q, want it to start with %q and say more", i, ge.Problems[i], p)
					}
				}
				if !strings.Contains(err.Error(), "feed f ") {
					t.Errorf("error %q does not name the feed", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if res.files != tt.wantFiles || res.rules != tt.wantRules {
				t.Errorf("files, rules = %d, %d, want %d, %d", res.files, res.rules, tt.wantFiles, tt.wantRules)
			}
			if diff := cmp.Diff(tt.wantHeld, res.heldBack); diff != "" {
				t.Errorf("held back (-want +got):\n%s", diff)
			}
			r := res.report
			if r.Sampled != len(tt.canary) || r.Matches != tt.wantMatches {
				t.Errorf("report: sampled %d, matches %d; want %d, %d", r.Sampled, r.Matches, len(tt.canary), tt.wantMatches)
			}
			if len(tt.canary) > 0 && (r.SampleBytes != tt.canary[0].Size || r.CostNanos <= 0) {
				t.Errorf("report: %d bytes sampled, cost %dns; want %d bytes and a cost", r.SampleBytes, r.CostNanos, tt.canary[0].Size)
			}
			if r.CompileSecs <= 0 || r.Seconds < r.CompileSecs {
				t.Errorf("report: compile %vs, whole %vs", r.CompileSecs, r.Seconds)
			}
			for key, want := range tt.wantFile {
				name, not := strings.CutPrefix(key, "!")
				data, err := os.ReadFile(filepath.Join(e.candidate, name))
				switch {
				case not && want == "":
					if err == nil {
						t.Errorf("%s is still in the candidate", name)
					}
				case err != nil:
					t.Error(err)
				case not == strings.Contains(string(data), want):
					t.Errorf("%s, rewritten:\n%s\nwant it %s %q", name, data, map[bool]string{true: "without", false: "with"}[not], want)
				}
			}
		})
	}
}

// TestGateCostFigure checks the figure a cost refusal gives.
func TestGateCostFigure(t *testing.T) {
	canaryOpts := fakeCanary(t)
	trusted, _, err := SampleTrusted(canaryOpts)
	if err != nil {
		t.Fatal(err)
	}
	e := newGateEnv(t, nil, nil, map[string]string{"a.yar": goodRules})
	_, err = gate(e.opts(trusted, time.Nanosecond))
	var ge *GateError
	if !errors.As(err, &ge) || ge.Stage != "cost" {
		t.Fatalf("err = %v, want a cost GateError", err)
	}
	want := fmt.Sprintf(" per file on average over 1 trusted files (%d bytes) with it, more than update.max_scan_cost = 1ns", trusted[0].Size)
	if !strings.Contains(ge.Problems[0], want) {
		t.Errorf("problem = %q, want it to contain %q", ge.Problems[0], want)
	}
	if !strings.HasPrefix(err.Error(), "feed f is held back: its rules cost too much to scan with; not installed:\n  a scan costs ") {
		t.Errorf("error = %q", err)
	}
	// The candidate is untouched: nothing was held back.
	if diff := cmp.Diff(map[string]string{"a.yar": goodRules}, readTree(t, e.candidate)); diff != "" {
		t.Errorf("candidate after a cost refusal (-want +got):\n%s", diff)
	}
}

// TestGateHostCanary runs the gate with this host's own trusted files: a
// rule made of bytes of /usr/bin/ls is held back, naming it.
func TestGateHostCanary(t *testing.T) {
	requireDpkg(t)
	trusted, _, err := SampleTrusted(CanaryOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ls, err := os.ReadFile("/usr/bin/ls")
	if err != nil {
		t.Fatal(err)
	}
	// 48 bytes from the middle of the program's code: ls's own.
	piece := ls[len(ls)/2 : len(ls)/2+48]
	rule := fmt.Sprintf("rule host_ls {\n\tstrings: $a = { % x }\n\tcondition: $a\n}\n", piece)
	e := newGateEnv(t, nil, nil, map[string]string{"a.yar": goodRules, "ls.yar": rule})
	start := time.Now()
	res, err := gate(e.opts(trusted, 0))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("gate over %d trusted files (%s): %v, mean cost %v", res.report.Sampled, sizeString(res.report.SampleBytes), time.Since(start), res.report.Cost())
	// The rule may match another build of ls first (dir, vdir): the file
	// it names holds the piece.
	if len(res.heldBack) != 1 {
		t.Fatalf("held back %+v, want host_ls", res.heldBack)
	}
	h := res.heldBack[0]
	if match, err := os.ReadFile(h.Match); err != nil || !bytes.Contains(match, piece) {
		t.Errorf("held back %+v: its match does not hold the rule's bytes (%v)", h, err)
	}
	want := HeldRule{File: "ls.yar", Rule: "host_ls", Reason: "matched a trusted file", Match: h.Match}
	if diff := cmp.Diff(want, h); diff != "" {
		t.Errorf("held back (-want +got):\n%s", diff)
	}
	if !slices.ContainsFunc(trusted, func(f TrustedFile) bool { return f.Path == "/usr/bin/ls" }) {
		t.Error("/usr/bin/ls is not among the trusted files")
	}
	// ls.yar stays, without its rule.
	if res.files != 2 || res.rules != 2 || res.report.Sampled != len(trusted) || res.report.Matches == 0 {
		t.Errorf("files %d, rules %d, sampled %d, matches %d; want 2, 2, %d, some", res.files, res.rules, res.report.Sampled, res.report.Matches, len(trusted))
	}
}
