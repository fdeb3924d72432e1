// Package scanner loads fanguard's YARA rules from drop-in directories and
// scans content with them.
//
// Load reads each rule directory recursively and names each file by its
// slash-separated path relative to its directory ("eicar.yar" at the top
// level, "forge/packages/core/x.yar" below): that name is the YARA
// namespace of its rules and the merge key. Names starting with "." are
// skipped at every level; symbolic links to directories are followed at
// the top level of a rule directory only (how rule feeds are installed:
// a link per feed, swapped by rename), symbolic links to files at any
// depth. A tree deeper than 16 levels or larger than 100000 entries, or a
// subdirectory that cannot be read, fails Load rather than load part of
// it. Load merges the directories by name (a later directory replaces an
// earlier one's file at the same relative path, an empty file or a
// symbolic link to /dev/null masks the name), loads the files in lexical
// order of their names, compiles them together, falling back to compiling them
// one by one to find and report the broken ones, and builds one shared,
// read-only Ruleset from the rest. A digest of its inputs names it (the
// generation) and keys an optional cache of compiled rules. Each scan
// worker then owns a Scanner made by Ruleset.NewScanner.
//
// The rules that loaded are then partitioned by file class (PE, ELF,
// Mach-O, other; ClassOf decides from the first bytes): each rule's
// condition is parsed (github.com/VirusTotal/gyp) and evaluated on
// abstract values (true, false, undefined, as libyara 4.2.3 computes them)
// against what content of each class guarantees (magic bytes at offset 0,
// module data that is undefined on other formats), and each class gets
// its own compiled set with only the rules that can match it, the global
// rules of their namespaces and the rules they reference, importing only
// the modules those use. Scanner.Scan runs the set of its content's class,
// which gives exactly the matches of the whole set: a text file is not
// scanned by rules that require "MZ". A file the parser cannot read or
// write back faithfully, or that uses include, goes into every class as it
// is; when a class set does not compile, the whole set stays in force
// (Ruleset.Partition says so). The verdict on empty content is computed
// once (Ruleset.EmptyMatches).
//
// This package must never open files on the daemon's event path: the daemon
// reads the content from the event's file descriptor and hands it over as
// bytes (Scanner.Scan), and YARA is never given a path or a descriptor, so it
// never maps a file that could be truncated under it. Only Load (before any
// fanotify mark is placed) and ScanPaths (the command line's "fanguard scan")
// touch the file system.
package scanner
