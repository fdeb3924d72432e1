package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/fanguard/fanguard/scanner"
)

const rulesHelp = `fanguard's rules are YARA files (*.yar, *.yara) in drop-in directories:
by default /usr/lib/fanguard/rules.d (shipped with fanguard), then
/etc/fanguard/rules.d (yours). [rules] dirs in the configuration, or
--rules-dir, name other directories, in order.

  Override   Files are merged by name: a file in a later directory replaces
             the file of the same name in an earlier one. To change a shipped
             file, copy it to /etc/fanguard/rules.d under the same name.
  Mask       An empty file, or a symbolic link to /dev/null, in a later
             directory masks the name: no file of that name loads.
               ln -s /dev/null /etc/fanguard/rules.d/NAME.yar
  Order      Files load in lexical order of their names, whatever their
             directory ("10-x.yar" before "20-y.yar").
  Namespace  Each file's rules live in a namespace named after the file: two
             files may use the same rule name, and a detection names the rule
             and its file.
  Broken     A file that does not compile is left out, reported with file and
             line; the other files load. include works only for files inside
             the rule directories.
  Generation A digest of the files loaded (name, path, content and the
             content of their includes), the masked names and the libyara
             version: any change to the rules gives a new one. Detections
             record it.

After changing the rules, check them with "fanguard rules check", then reload
the daemon (systemctl reload fanguard).`

func newRulesCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "rules",
		Short: "Check and list the YARA rules (drop-in directories)",
		Long:  rulesHelp,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return cmd.Help()
		},
	}
	cmd.AddCommand(newRulesCheckCommand(), newRulesListCommand())
	return cmd
}

func newRulesCheckCommand() *cobra.Command {
	var flags configFlags
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "check [--json] [DIR...]",
		Short: "Compile the rules and report every error and warning",
		Long: `Compile the rules as the daemon would, without a daemon and without the
compiled-rules cache, and report every problem. DIR... are the rule
directories, in order; without them, [rules] dirs of the configuration (or
--rules-dir).

Output: one line per problem, "FILE:LINE: error: MESSAGE" or
"FILE:LINE: warning: MESSAGE", then a summary with the generation (its first
16 hex digits). With --json, one JSON document instead:
  {"files": [{"name", "path", "rules"}], "masked": [NAME...],
   "errors": [{"file", "line", "message"}], "warnings": [...],
   "rules": N, "generation": "..."}

Exit status: 0 the rules compile (warnings allowed), 1 an error: a file the
daemon would leave out, no rules at all, or a directory that cannot be read;
2 a usage or configuration error.

` + drop-inSummary,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runRulesCheck(&flags, cmd.Flags().Changed("config"), asJSON, args, cmd.OutOrStdout())
		},
	}
	flags.register(cmd.Flags())
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON document")
	return cmd
}
