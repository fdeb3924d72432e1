package daemon

import (
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/fanguard/fanguard/fan"
	"github.com/fanguard/fanguard/internal/testutil"
	"github.com/fanguard/fanguard/policy"
	"github.com/fanguard/fanguard/scanner"
)

// TestReloadConfig reloads a real configuration file, step by step, while
// opens of a file that matches go through the reader and a worker: each
// step's live keys decide the next open at once, the others are reported
// as needing a restart and keep their values, and a configuration that
// does not load changes nothing. Readers of the settings run all along,
// for the race detector.
func TestReloadConfig(t *testing.T) {
	testutil.RequireRoot(t) // a fanotify group, for the flush of the kernel's marks
	dir := t.TempDir()
	rules := filepath.Join(dir, "rules")
	os.Mkdir(rules, 0o755)
	if err := os.WriteFile(filepath.Join(rules, "t.yar"), []byte(allowTestRule), 0o644); err != nil {
		t.Fatal(err)
	}
	load := func() (*scanner.Ruleset, error) { return scanner.Load(scanner.LoadOptions{Dirs: []string{rules}}) }
	rs, err := load()
	if err != nil {
		t.Fatal(err)
	}
	content := []byte("some bytes, then: fanguard allow list test")
	path := filepath.Join(dir, "file")
	if err := os.WriteFile(path, content, 0o644); err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "fanguard.toml")
	g, err := fan.NewGroup(fan.GroupOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()

	d, k := testDaemon(t, 10*time.Minute)
	d.rules.Store(newRuleSet(rs, 1))
	d.group = g
	d.cache = testCache(t, 100, &d.stats)
	d.loadRules = load
	d.readConfig = func() (policy.Config, error) { return policy.Load(cfgPath) }
	level := zap.NewAtomicLevelAt(zap.InfoLevel)
	d.logLevel = &level
	d.inForce = d.cfg
	d.notify = nopNotifier{}
	w := &worker{d: d}
	defer w.drop()
	file := fan.FileInfo{ID: fan.FileID{Dev: 1, Ino: 77}, Stamp: fan.Stamp{CtimeNs: 9, Size: int64(len(content))}, Mode: unix.S_IFREG | 0o644}
	open := func() bool {
		t.Helper()
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		fd := int32(f.Fd())
		k.mu.Lock()
		k.files[fd] = file
		k.uids[1000+fd] = 1000
		delete(k.answers, fd)
		delete(k.closes, fd)
		k.mu.Unlock()
		var scratch [4096]byte
		d.handle(fan.Event{Mask: unix.FAN_OPEN_PERM, Fd: fd, Pid: 1, Pidfd: 1000 + fd}, time.Now(), scratch[:])
		d.writeAnswers(d.answers.n)
		if j, _ := d.sched.pop(d.stillWaiting, nil); j != nil {
			j.started.Store(true)
			w.process(j)
			d.sched.finished(j.uid, false)
		}
		k.mu.Lock()
		defer k.mu.Unlock()
		if k.answers[fd] != 1 {
			t.Fatalf("fd %d answered %d times", fd, k.answers[fd])
		}
		return k.allowed[fd]
	}

	stop := make(chan struct{})
	var readers sync.WaitGroup
	for range 2 {
		readers.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				s := d.live()
				_ = s.mode == policy.Audit && s.excl.UID(1000) && s.budget > 0
			}
		})
	}
	defer func() {
		close(stop)
		readers.Wait()
	}()

	workers := d.cfg.Workers
	steps := []struct {
		name        string
		toml        string
		wantErr     bool
		newStamp    bool
		wantApplied []string
		wantRestart []string
		wantAllowed bool
		wantMode    policy.Mode
	}{
		{name: "enforce: denied", toml: "budget = \"10m\"\nmode = \"enforce\"\n", wantAllowed: false, wantMode: policy.Enforce},
		{name: "audit: allowed, the cached denial dropped", toml: "budget = \"10m\"\nmode = \"audit\"\n[log]\nlevel = \"debug\"\n",
			wantApplied: []string{"mode", "log.level"}, wantAllowed: true, wantMode: policy.Audit},
		{name: "broken: nothing changes", toml: "mode = \"enforce\"\nbudget = 7\n", wantErr: true,
			wantAllowed: true, wantMode: policy.Audit},
		{name: "workers need a restart, enforce again", toml: "budget = \"10m\"\nmode = \"enforce\"\nworkers = 999\n",
			wantApplied: []string{"mode", "log.level"}, wantRestart: []string{"workers", "max_pending_per_uid"},
			wantAllowed: false, wantMode: policy.Enforce},
		// The file changes: a known detection is denied whatever the
		// exclusions (see excluded).
		{name: "uid excluded: allowed unscanned", toml: "budget = \"10m\"\nmode = \"enforce\"\nworkers = 999\n[protect]\nexclude_uids = [1000]\n",
			newStamp: true, wantApplied: []string{"protect.exclude_uids"}, wantRestart: []string{"workers", "max_pending_per_uid"},
			wantAllowed: true, wantMode: policy.Enforce},
	}
	for _, st := range steps {
		if err := os.WriteFile(cfgPath, []byte(st.toml), 0o644); err != nil {
			t.Fatal(err)
		}
		before := d.live()
		res, err := d.Reload()
		if (err != nil) != st.wantErr {
			t.Fatalf("%s: Reload: %v, want error %v", st.name, err, st.wantErr)
		}
		if err != nil && d.live() != before {
			t.Errorf("%s: a failed reload swapped the settings", st.name)
		}
		if diff := cmp.Diff(st.wantApplied, keys(res.Config.Applied)); diff != "" {
			t.Errorf("%s: applied (-want +got):\n%s", st.name, diff)
		}
		if diff := cmp.Diff(st.wantRestart, keys(res.Config.RestartNeeded)); diff != "" {
			t.Errorf("%s: restart needed (-want +got):\n%s", st.name, diff)
		}
		if got := d.live().mode; got != st.wantMode {
			t.Errorf("%s: mode %v, want %v", st.name, got, st.wantMode)
		}
		if st.newStamp {
			file.Stamp.CtimeNs++
		}
		if got := open(); got != st.wantAllowed {
			t.Errorf("%s: open allowed = %v, want %v", st.name, got, st.wantAllowed)
		}
		if d.inForce.Workers != workers {
			t.Errorf("%s: workers in force %d, want %d until a restart", st.name, d.inForce.Workers, workers)
		}
	}
	if got := level.Level(); got != zap.InfoLevel {
		t.Errorf("log level %v after the last step, want info", got)
	}
	if d.stats.Excluded.Load() != 1 {
		t.Errorf("excluded = %d, want 1", d.stats.Excluded.Load())
	}
}

func keys(cs []policy.Change) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Key)
	}
	return out
}

// TestApplyConfigCoversLiveKeys changes every live key at once in a real file:
// after applyConfig, no live key differs any more.
func TestApplyConfigCoversLiveKeys(t *testing.T) {
	path := filepath.Join(t.TempDir(), "fanguard.toml")
	doc := `mode = "audit"
budget = "2s"
on_timeout = "deny"
on_error = "deny"
on_oversize = "deny"
on_overload = "deny"
max_file_size = "1MiB"
[protect]
exclude_paths = ["/srv/x"]
exclude_exe = ["/usr/bin/true"]
exclude_uids = [5]
[quarantine]
action = "deny"
max_age = "3d"
[log]
level = "warn"
[update]
canary_files = 3
max_scan_cost = "5ms"
max_age = "1d"
timeout = "1m"
`
	if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	d, _ := testDaemon(t, time.Second)
	d.cache = testCache(t, 10, &d.stats)
	g, err := fan.NewGroup(fan.GroupOptions{})
	if err != nil {
		testutil.RequireRoot(t)
		t.Fatal(err)
	}
	defer g.Close()
	d.group = g
	d.inForce = d.cfg
	level := zap.NewAtomicLevelAt(zap.InfoLevel)
	d.logLevel = &level
	d.readConfig = func() (policy.Config, error) { return policy.Load(path) }
	cfg, ch, err := d.loadConfig()
	if err != nil {
		t.Fatal(err)
	}
	if len(ch.Applied) != 17 || len(ch.RestartNeeded) != 0 {
		t.Fatalf("changes: %d live, %d restart; want 17, 0: %v %v", len(ch.Applied), len(ch.RestartNeeded), ch.Applied, ch.RestartNeeded)
	}
	d.applyConfig(cfg, ch)
	if live, _ := policy.Changes(d.inForce, cfg); len(live) != 0 {
		t.Errorf("live keys not applied: %v", live)
	}
	if diff := cmp.Diff(newSettings(cfg), d.live(), cmp.AllowUnexported(settings{}, policy.Exclusions{})); diff != "" {
		t.Errorf("settings (-want +got):\n%s", diff)
	}
	if level.Level() != zap.WarnLevel {
		t.Errorf("log level %v, want warn", level.Level())
	}
}
