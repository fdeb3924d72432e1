package policy

import (
	"sync"
	"testing"
)

func TestExclusionsPath(t *testing.T) {
	for _, tt := range []struct {
		name    string
		entries []string
		path    string
		want    bool
	}{
		{"equal", []string{"/var/lib/docker"}, "/var/lib/docker", true},
		{"below", []string{"/var/lib/docker"}, "/var/lib/docker/x", true},
		{"deep below", []string{"/var/lib/docker"}, "/var/lib/docker/overlay2/a/b/c", true},
		{"sibling with the same prefix", []string{"/var/lib/docker"}, "/var/lib/dockerx", false},
		{"sibling file with the same prefix", []string{"/var/lib/docker"}, "/var/lib/docker.db", false},
		{"parent", []string{"/var/lib/docker"}, "/var/lib", false},
		{"other", []string{"/var/lib/docker"}, "/etc/passwd", false},
		{"root entry", []string{"/"}, "/etc/passwd", true},
		{"root entry, root path", []string{"/"}, "/", true},
		{"root path", []string{"/var"}, "/", false},
		{"entry cleaned", []string{"/var/lib/docker/"}, "/var/lib/docker/x", true},
		{"second of several", []string{"/srv/a", "/var/lib/docker", "/home/user/.cache"}, "/var/lib/docker/x", true},
		{"longest of several", []string{"/srv/a", "/home/user/.cache"}, "/home/user/.cache/x", true},
		{"shortest of several", []string{"/srv", "/home/user/.cache"}, "/srv/x", true},
		{"between lengths", []string{"/a", "/bbbbbbbb"}, "/ccc/x", false},
		{"nested entries", []string{"/a", "/a/b"}, "/a/c", true},
		{"deleted file", []string{"/tmp/x"}, "/tmp/x/evil (deleted)", true},
		{"no entries", nil, "/etc/passwd", false},
		{"empty path", []string{"/var"}, "", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := NewExclusions(ProtectConfig{ExcludePaths: tt.entries})
			if got := e.Path([]byte(tt.path)); got != tt.want {
				t.Errorf("Path(%q) with %q = %v, want %v", tt.path, tt.entries, got, tt.want)
			}
			if got, want := e.HasPaths(), len(tt.entries) > 0; got != want {
				t.Errorf("HasPaths() = %v, want %v", got, want)
			}
		})
	}
}

func TestExclusionsUID(t *testing.T) {
	e := NewExclusions(ProtectConfig{ExcludeUIDs: []uint32{0, 990, 4294967295}})
	for _, tt := range []struct {
		uid  uint32
		want bool
	}{
		{0, true},
		{990, true},
		{4294967295, true},
		{1, false},
		{1000, false},
	} {
		if got := e.UID(tt.uid); got != tt.want {
			t.Errorf("UID(%d) = %v, want %v", tt.uid, got, tt.want)
		}
	}
	if !e.HasUIDs() {
		t.Error("HasUIDs() = false with three entries")
	}
}

func TestExclusionsEmpty(t *testing.T) {
	for name, e := range map[string]*Exclusions{
		"nil":   nil,
		"empty": NewExclusions(ProtectConfig{}),
		// The other fields of ProtectConfig do not exclude anything.
		"protect": NewExclusions(ProtectConfig{Paths: []string{"/"}, FSTypes: []string{"ext4"}}),
	} {
		t.Run(name, func(t *testing.T) {
			if e.HasPaths() || e.HasUIDs() {
				t.Errorf("Has* = %v, %v; want both false", e.HasPaths(), e.HasUIDs())
			}
			if e.Path([]byte("/etc/passwd")) || e.UID(0) {
				t.Error("an empty Exclusions excludes something")
			}
		})
	}
}

func TestExclusionsConcurrent(t *testing.T) {
	e := NewExclusions(ProtectConfig{
		ExcludePaths: []string{"/var/lib/docker"},
		ExcludeUIDs:  []uint32{990},
	})
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 1000 {
				if !e.Path([]byte("/var/lib/docker/x")) || !e.UID(990) {
					t.Error("lookup failed")
					return
				}
			}
		})
	}
	wg.Wait()
}

func newBenchExclusions() *Exclusions {
	return NewExclusions(ProtectConfig{
		ExcludePaths: []string{"/var/lib/docker", "/var/cache/fscache", "/home/build/.cache", "/srv/backup"},
		ExcludeUIDs:  []uint32{990, 991},
	})
}

func TestExclusionsDoNotAllocate(t *testing.T) {
	e := newBenchExclusions()
	hit := []byte("/var/lib/docker/overlay2/3f2a/diff/usr/bin/sh")
	miss := []byte("/home/user/projects/fanguard/policy/exclude.go")
	allocs := testing.AllocsPerRun(1000, func() {
		_ = e.HasPaths() && e.HasUIDs()
		_ = e.Path(hit)
		_ = e.Path(miss)
		_ = e.UID(990)
		_ = e.UID(1000)
	})
	if allocs != 0 {
		t.Errorf("lookups allocate %v times per run, want 0", allocs)
	}
}

func BenchmarkExclusions(b *testing.B) {
	e := newBenchExclusions()
	hit := []byte("/var/lib/docker/overlay2/3f2a/diff/usr/bin/sh")
	miss := []byte("/home/user/projects/fanguard/policy/exclude.go")
	for _, bb := range []struct {
		name string
		f    func() bool
	}{
		{"Path/hit", func() bool { return e.Path(hit) }},
		{"Path/miss", func() bool { return e.Path(miss) }},
		{"UID/hit", func() bool { return e.UID(990) }},
		{"UID/miss", func() bool { return e.UID(1000) }},
	} {
		b.Run(bb.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				bb.f()
			}
		})
	}
}
