package main

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"

	"github.com/fanguard/fanguard/internal/manpage"
)

// newManCommand is the hidden command that `make man` runs: it writes the
// manual pages, fanguard(8) and one page per subcommand from the command
// tree, and fanguard.toml(5) from the shipped configuration's comments.
func newManCommand() *cobra.Command {
	var configFile string
	cmd := &cobra.Command{
		Use:    "man DIR",
		Short:  "Write the manual pages to DIR (for make man)",
		Hidden: true,
		Args:   cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			dir := args[0]
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return err
			}
			// The date of the source, for reproducible pages.
			date := time.Now()
			if fi, err := os.Stat(configFile); err == nil {
				date = fi.ModTime()
			}
			root := cmd.Root()
			root.DisableAutoGenTag = true
			root.InitDefaultVersionFlag() // else added only when it runs
			root.InitDefaultHelpFlag()
			header := &doc.GenManHeader{Title: "FANGUARD", Section: "8", Date: &date, Source: "fanguard " + version,
				Manual: "System Administration"}
			if err := doc.GenManTree(root, header, dir); err != nil {
				return fmt.Errorf("writing the pages of the commands: %w", err)
			}
			toml, err := os.ReadFile(configFile)
			if err != nil {
				return fmt.Errorf("reading the configuration to document: %w", err)
			}
			page := manpage.Config(toml, manpage.ConfigOptions{Date: date, Source: "fanguard " + version, Path: defaultConfigPath})
			return os.WriteFile(filepath.Join(dir, "fanguard.toml.5"), page, 0o644)
		},
	}
	cmd.Flags().StringVar(&configFile, "config-file", "configs/fanguard.toml", "the shipped configuration, whose comments make fanguard.toml(5)")
	return cmd
}
