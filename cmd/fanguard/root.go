package main

import (
	"errors"
	"fmt"
	"io/fs"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/fanguard/fanguard/policy"
	"github.com/fanguard/fanguard/scanner"
)

const defaultConfigPath = "/etc/fanguard/fanguard.toml"

func newRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "fanguard",
		Short: "On-access malware scanning for Linux (fanotify + YARA)",
		Long: `fanguard holds every open of a file on the protected filesystems, scans the
file with YARA rules, and answers allow or deny within a time budget.

Configuration: ` + defaultConfigPath + ` (see --config); rules: *.yar files in
/usr/lib/fanguard/rules.d and /etc/fanguard/rules.d (a file in /etc replaces
the shipped one of the same name; an empty file or a symlink to /dev/null
masks it).

See fanguard(8) and fanguard.toml(5).`,
		Version:       version,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetVersionTemplate("fanguard {{.Version}}\n")
	root.AddCommand(newManCommand())
	root.AddCommand(newDaemonCommand(), newScanCommand(), newReloadCommand(), newStatusCommand(), newRulesCommand(), newVersionCommand(), newQuarantineCommand(), newAllowCommand())
	return root
}

func newVersionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version of fanguard",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprintf(cmd.OutOrStdout(), "fanguard %s\n", version)
			return nil
		},
	}
}

// configFlags are the flags of every subcommand that reads the
// configuration.
type configFlags struct {
	path     string
	rulesDir []string
}

func (f *configFlags) register(fs *pflag.FlagSet) {
	fs.StringVarP(&f.path, "config", "c", defaultConfigPath, "configuration file (TOML); a missing default file means built-in defaults")
	fs.StringArrayVar(&f.rulesDir, "rules-dir", nil, "rule directory, instead of [rules] dirs of the configuration (repeatable, in order)")
}

// load reads the configuration. The default file may be missing (built-in
// defaults apply); a file named with --config must exist.
func (f *configFlags) load(explicit bool) (policy.Config, error) {
	cfg, err := policy.Load(f.path)
	if errors.Is(err, fs.ErrNotExist) && !explicit {
		cfg, err = policy.Default(), nil
	}
	if err != nil {
		return cfg, err
	}
	if len(f.rulesDir) > 0 {
		cfg.Rules.Dirs = f.rulesDir
	}
	return cfg, nil
}

func loadRules(cfg policy.Config) (*scanner.Ruleset, error) {
	return scanner.Load(scanner.LoadOptions{Dirs: cfg.Rules.Dirs, CacheDir: cfg.Rules.CacheDir})
}
