package main

import (
	"fmt"

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

Configuration: ` + defaultConfigPath + ` and the drop-ins in
` + defaultConfigPath + `.d/*.toml (see --config); rules: *.yar files in
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
	fs.StringVarP(&f.path, "config", "c", defaultConfigPath, "configuration file (TOML), with the drop-ins in FILE.d/*.toml over it; a missing default file means built-in defaults")
	fs.StringArrayVar(&f.rulesDir, "rules-dir", nil, "rule directory, instead of [rules] dirs of the configuration (repeatable, in order)")
}

// load reads the configuration. The default file may be missing (built-in
// defaults apply); a file named with --config must exist. The drop-ins in
// its directory "<file>.d" apply either way.
func (f *configFlags) load(explicit bool) (policy.Config, error) {
	cfg, _, err := f.loadSources(explicit)
	return cfg, err
}

// loadSources is load, and it also returns the files it read.
func (f *configFlags) loadSources(explicit bool) (policy.Config, policy.Sources, error) {
	cfg, src, err := policy.LoadWith(f.path, policy.LoadOptions{MissingOK: !explicit})
	if err != nil {
		return cfg, src, err
	}
	if len(f.rulesDir) > 0 {
		cfg.Rules.Dirs = f.rulesDir
	}
	return cfg, src, nil
}

func loadRules(cfg policy.Config) (*scanner.Ruleset, error) {
	return scanner.Load(scanner.LoadOptions{Dirs: cfg.Rules.Dirs, CacheDir: cfg.Rules.CacheDir})
}
