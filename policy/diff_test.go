package policy

import (
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestChanges parses real configuration files and compares each with the
// defaults.
func TestChanges(t *testing.T) {
	tests := []struct {
		name        string
		toml        string
		live        []Change
		restart     []Change
		wantNoDiffs bool
	}{
		{name: "defaults spelled out", toml: "mode = \"enforce\"\nbudget = \"5s\"\n", wantNoDiffs: true},
		{name: "mode", toml: `mode = "audit"`,
			live: []Change{{Key: "mode", Old: `"enforce"`, New: `"audit"`}}},
		{name: "budget and verdicts", toml: "budget = \"2s\"\non_timeout = \"deny\"\non_overload = \"deny\"\n",
			live: []Change{{Key: "budget", Old: `"5s"`, New: `"2s"`}, {Key: "on_timeout", Old: `"allow"`, New: `"deny"`},
				{Key: "on_overload", Old: `"allow"`, New: `"deny"`}}},
		{name: "exclusions", toml: "[protect]\nexclude_paths = [\"/srv/a\", \"/srv/b\"]\nexclude_uids = [0, 1000]\n",
			live: []Change{{Key: "protect.exclude_paths", Old: "[]", New: `["/srv/a", "/srv/b"]`},
				{Key: "protect.exclude_uids", Old: "[]", New: "[0, 1000]"}}},
		{name: "workers and socket", toml: "workers = 77\n[control]\nsocket = \"/run/x.sock\"\n",
			restart: []Change{{Key: "workers", Old: strconv.Itoa(Default().Workers), New: "77"},
				// derived from workers: 32 per worker
				{Key: "max_pending_per_uid", Old: strconv.Itoa(Default().MaxPendingPerUID), New: "2464"},
				{Key: "control.socket", Old: `"/run/fanguard/control.sock"`, New: `"/run/x.sock"`}}},
		{name: "both", toml: "[log]\nlevel = \"debug\"\n[cache]\nentries = 10\n",
			live:    []Change{{Key: "log.level", Old: `"info"`, New: `"debug"`}},
			restart: []Change{{Key: "cache.entries", Old: "1000000", New: "10"}}},
		{name: "quarantine", toml: "[quarantine]\naction = \"deny\"\nmax_age = \"30d\"\nmax_bytes = \"1MiB\"\n",
			live: []Change{{Key: "quarantine.action", Old: `"quarantine"`, New: `"deny"`},
				{Key: "quarantine.max_age", Old: `"2160h0m0s"`, New: `"720h0m0s"`}},
			restart: []Change{{Key: "quarantine.max_bytes", Old: "1073741824", New: "1048576"}}},
		{name: "protected paths", toml: "[protect]\npaths = [\"/srv\"]\n",
			restart: []Change{{Key: "protect.paths", Old: "[]", New: `["/srv"]`}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "fanguard.toml")
			if err := os.WriteFile(path, []byte(tt.toml), 0o644); err != nil {
				t.Fatal(err)
			}
			cfg, err := Load(path)
			if err != nil {
				t.Fatal(err)
			}
			live, restart := Changes(Default(), cfg)
			if diff := cmp.Diff(tt.live, live); diff != "" {
				t.Errorf("live (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.restart, restart); diff != "" {
				t.Errorf("restart (-want +got):\n%s", diff)
			}
			if tt.wantNoDiffs != (len(live)+len(restart) == 0) {
				t.Errorf("no differences = %v, want %v", len(live)+len(restart) == 0, tt.wantNoDiffs)
			}
			// Backwards: the same keys, old and new swapped.
			blive, brestart := Changes(cfg, Default())
			if len(blive) != len(live) || len(brestart) != len(restart) {
				t.Errorf("backwards: %d live, %d restart; want %d, %d", len(blive), len(brestart), len(live), len(restart))
			}
		})
	}
}

// TestChangesCoversConfig changes every field of Config, one at a time, by
// reflection, and checks that Changes reports exactly one key for it, a
// different key for each field: a field added to Config and not to
// configKeys fails here.
func TestChangesCoversConfig(t *testing.T) {
	seen := map[string]string{} // key -> field
	var visit func(prefix string, typ reflect.Type, index []int)
	visit = func(prefix string, typ reflect.Type, index []int) {
		for i := range typ.NumField() {
			f := typ.Field(i)
			idx := append(slices.Clone(index), i)
			name := prefix + f.Name
			if f.Type.Kind() == reflect.Struct { // a table
				visit(name+".", f.Type, idx)
				continue
			}
			t.Run(name, func(t *testing.T) {
				old := Default()
				changed := Default()
				perturb(t, reflect.ValueOf(&changed).Elem().FieldByIndex(idx))
				live, restart := Changes(old, changed)
				all := append(live, restart...)
				if len(all) != 1 {
					t.Fatalf("Changes reports %d keys for a change of %s, want 1: %v (add it to configKeys)", len(all), name, all)
				}
				if prev, dup := seen[all[0].Key]; dup {
					t.Errorf("key %s reported for %s and %s", all[0].Key, prev, name)
				}
				seen[all[0].Key] = name
				if all[0].Old == all[0].New {
					t.Errorf("%s: old and new read the same: %v", name, all[0])
				}
				// WithLive takes a live key's new value, and keeps the
				// old value of a key that needs a restart.
				want := old
				if len(live) == 1 {
					want = changed
				}
				if got := WithLive(old, changed); !reflect.DeepEqual(got, want) {
					l2, r2 := Changes(want, got)
					t.Errorf("WithLive for %s (live %v): differs from the expected configuration in %v %v", name, len(live) == 1, l2, r2)
				}
			})
		}
	}
	visit("", reflect.TypeFor[Config](), nil)
	if len(seen) != len(configKeys) {
		t.Errorf("%d fields changed, %d keys listed: a key reads no field of its own", len(seen), len(configKeys))
	}
}

// perturb sets v to a value other than its current one.
func perturb(t *testing.T, v reflect.Value) {
	t.Helper()
	switch v.Kind() {
	case reflect.Bool:
		v.SetBool(!v.Bool())
	case reflect.Int, reflect.Int64:
		v.SetInt(v.Int() + 1)
	case reflect.Uint8, reflect.Uint32:
		v.SetUint(v.Uint() + 1)
	case reflect.String:
		v.SetString(v.String() + "x")
	case reflect.Slice:
		e := reflect.New(v.Type().Elem()).Elem()
		if e.Kind() == reflect.Struct {
			e.FieldByName("Name").SetString("extra")
		} else {
			perturb(t, e)
		}
		v.Set(reflect.Append(v, e))
	default:
		t.Fatalf("cannot change a field of kind %s: teach perturb", v.Kind())
	}
}
