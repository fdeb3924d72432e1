package main

import (
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/fanguard/fanguard/fan"
	"github.com/fanguard/fanguard/policy"
)

// runCheck is `fanguard daemon --check`: it reads the configuration,
// compiles the rules as the daemon would (with the compiled-rules cache,
// without rolling a broken feed back), and lists the filesystems the
// daemon would mark, chosen by the daemon's own marker with a Mark that
// places nothing. It opens no fanotify group. It returns an exitError of
// exitConfig when the daemon would not start.
func runCheck(flags *configFlags, explicit bool, out io.Writer) error {
	cfg, src, err := flags.loadSources(explicit)
	if err != nil {
		return exitError{code: exitConfig, err: err}
	}
	fmt.Fprintf(out, "configuration %s: ok\n", describeSources(flags.path, src))
	fmt.Fprintf(out, "mode %s, budget %s, %d workers, on_timeout %s, on_error %s, on_overload %s\n",
		cfg.Mode, cfg.Budget, cfg.Workers, cfg.OnTimeout, cfg.OnError, cfg.OnOverload)

	var problems []error
	rs, err := loadRules(cfg)
	if rs != nil {
		defer rs.Close()
		for _, b := range rs.Broken {
			fmt.Fprintf(out, "%s:%d: left out: %s\n", b.Path, b.Line, b.Msg)
		}
		for _, m := range rs.Masked {
			fmt.Fprintf(out, "rule file masked: %s\n", m)
		}
		if rs.CacheError != nil {
			fmt.Fprintf(out, "compiled-rules cache not used: %v\n", rs.CacheError)
		}
	}
	switch {
	case err != nil:
		problems = append(problems, fmt.Errorf("loading rules: %w", err))
	default:
		how := "compiled"
		if rs.FromCache {
			how = "from the compiled-rules cache"
		}
		fmt.Fprintf(out, "rules: %s from %s, generation %s, %s in %d ms\n",
			plural(rs.Count, "rule"), plural(len(rs.Files), "file"), rs.ShortGeneration(), how, rs.LoadTime.Milliseconds())
	}

	marked, err := wouldMark(cfg)
	if err != nil {
		problems = append(problems, err)
	}
	if len(marked) > 0 {
		fmt.Fprintf(out, "would protect %s:\n", plural(len(marked), "filesystem"))
		tw := tabwriter.NewWriter(out, 0, 8, 2, ' ', 0)
		fmt.Fprintln(tw, "  MOUNT\tTYPE\tSOURCE")
		for _, m := range marked {
			fmt.Fprintf(tw, "  %s\t%s\t%s\n", m.Point, m.FSType, m.Source)
		}
		tw.Flush()
	} else if err == nil {
		problems = append(problems, errors.New("no filesystem to protect: check protect.paths and protect.fs_types"))
	}
	if len(problems) > 0 {
		return exitError{code: exitConfig, err: fmt.Errorf("the daemon would not start: %w", errors.Join(problems...))}
	}
	fmt.Fprintln(out, "the daemon would start")
	return nil
}

// describeSources names the files a configuration was read from, for
// path: "/etc/fanguard/fanguard.toml and 2 drop-ins (a.toml, b.toml)".
func describeSources(path string, src policy.Sources) string {
	s := src.Main
	if s == "" {
		s = "built-in defaults (" + path + " is missing)"
	}
	if len(src.DropIns) > 0 {
		names := make([]string, len(src.DropIns))
		for i, p := range src.DropIns {
			names[i] = filepath.Base(p)
		}
		s += " and " + plural(len(names), "drop-in") + " (" + strings.Join(names, ", ") + ")"
	}
	return s
}

// wouldMark returns the filesystems the daemon would mark now, in its
// mount namespace: the daemon's marker (fan.Marker) selects them from the
// mount table, with a Mark that places nothing.
func wouldMark(cfg policy.Config) ([]fan.Mount, error) {
	m, err := fan.NewMarker(fan.MarkerOptions{
		FSTypes: cfg.Protect.FSTypes,
		Paths:   cfg.Protect.Paths,
		Mark:    func(string) error { return nil },
	})
	if err != nil {
		return nil, fmt.Errorf("choosing the filesystems to protect: %w", err)
	}
	defer m.Close()
	if err := m.Sync(); err != nil {
		return m.Marked(), fmt.Errorf("choosing the filesystems to protect: %w", err)
	}
	return m.Marked(), nil
}
