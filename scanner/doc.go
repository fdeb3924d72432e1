// Package scanner loads fanguard's YARA rules from drop-in directories and
// scans content with them.
//
// Load merges the rule directories by file name (a later directory replaces
// an earlier one's file, an empty file or a symbolic link to /dev/null masks
// the name), compiles the files together, falling back to compiling them
// one by one to find and report the broken ones, and builds one shared,
// read-only Ruleset from the rest. A digest of its inputs names it (the
// generation) and keys an optional cache of compiled rules. Each scan
// worker then owns a Scanner made by Ruleset.NewScanner.
//
// This package must never open files on the daemon's event path: the daemon
// reads the content from the event's file descriptor and hands it over as
// bytes (Scanner.Scan), and YARA is never given a path or a descriptor, so it
// never maps a file that could be truncated under it. Only Load (before any
// fanotify mark is placed) and ScanPaths (the command line's "fanguard scan")
// touch the file system.
package scanner
