package daemon

import (
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestTalkers(t *testing.T) {
	var tk talkers
	t0 := time.Unix(6000, 0)
	ms := time.Millisecond
	tk.add(t0, "/usr/bin/make", "/src", 30*ms)
	tk.add(t0, "/usr/bin/make", "/src/a", 10*ms)
	tk.add(t0.Add(time.Minute), "/usr/bin/cc", "/src", 50*ms)
	tk.add(t0.Add(2*time.Minute), "/usr/bin/cat", "/etc", 1*ms)
	exes, dirs := tk.top(t0.Add(2*time.Minute), 2)
	wantExes := []Talker{{"/usr/bin/cc", 1, 0.05}, {"/usr/bin/make", 2, 0.04}}
	wantDirs := []Talker{{"/src", 2, 0.08}, {"/src/a", 1, 0.01}}
	approx := cmp.Comparer(func(a, b float64) bool { return a-b < 1e-9 && b-a < 1e-9 })
	if diff := cmp.Diff(wantExes, exes, approx); diff != "" {
		t.Errorf("executables (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(wantDirs, dirs, approx); diff != "" {
		t.Errorf("directories (-want +got):\n%s", diff)
	}
	// Five minutes on, the first minute has left the window.
	exes, _ = tk.top(t0.Add(talkerMinutes*time.Minute), 10)
	for _, e := range exes {
		if e.Name == "/usr/bin/make" {
			t.Errorf("a talker older than the window is still counted: %+v", e)
		}
	}
}

func TestTalkersBounded(t *testing.T) {
	var tk talkers
	now := time.Unix(6000, 0)
	for i := range talkerKeys + 500 {
		tk.add(now, fmt.Sprintf("/bin/p%d", i), "/d", time.Microsecond)
	}
	exes, _ := tk.top(now, talkerKeys+1000)
	if len(exes) != talkerKeys+1 {
		t.Errorf("%d names kept, want %d and %q", len(exes), talkerKeys, talkerOther)
	}
	for _, e := range exes {
		if e.Name == talkerOther && e.Scans != 500 {
			t.Errorf("%s holds %d scans, want 500", talkerOther, e.Scans)
		}
	}
}
