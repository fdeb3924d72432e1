#!/bin/sh
# copyright.sh BINARY: print /usr/share/doc/fanguard/copyright (DEP-5) for
# the package holding BINARY: fanguard's own terms, then, for every Go
# module linked into BINARY (as `go version -m` lists them) and for the Go
# standard library, the module's licence from the module cache. The binary
# carries their code, so the package carries their licences. Fails when a
# module's licence file cannot be found.
set -eu

bin=$1
go=${GO:-go}
modcache=$($go env GOMODCACHE)
goroot=$($go env GOROOT)

# indent: a licence text as a DEP-5 field body (" text", " ." for blank lines).
indent() {
	sed -e 's/[[:space:]]*$//' -e 's/^$/./' -e 's/^/ /' "$1"
}

# licence_name FILE: the DEP-5 short name of the licence text in FILE.
licence_name() {
	if grep -q 'Apache License' "$1" && grep -q 'Permission is hereby granted, free of charge' "$1"; then
		echo 'Expat and Apache-2.0'
	elif grep -q 'Apache License' "$1" && grep -q 'Version 2.0' "$1"; then
		echo Apache-2.0
	elif grep -q 'Mozilla Public License Version 2.0' "$1"; then
		echo MPL-2.0
	elif grep -q 'Permission is hereby granted, free of charge' "$1"; then
		echo Expat
	elif grep -q 'Neither the name' "$1" || grep -qi 'names of its contributors may' "$1"; then
		echo BSD-3-clause
	elif grep -q 'Redistributions of source code' "$1"; then
		echo BSD-2-clause
	elif grep -q 'Permission to use, copy, modify, and/or distribute' "$1"; then
		echo ISC
	else
		echo "copyright.sh: $1: licence not recognised; add it to licence_name" >&2
		exit 1
	fi
}

# copyright_lines FILE: the "Copyright ..." lines of a licence text, or a
# pointer to the text when it names no holder (most Apache-2.0 files).
copyright_lines() {
	lines=$(grep -i '^[[:space:]>]*copyright[[:space:]]*\((c)\|©\|[0-9]\)' "$1" |
		sed -e 's/^[[:space:]>]*[Cc]opyright[[:space:]]*//' -e 's/^\((c)\|(C)\|©\)[[:space:]]*//' || true)
	if [ -n "$lines" ]; then
		printf '%s\n' "$lines" | sed -e '1!s/^/ /'
	else
		echo "the authors of $2 (the licence names no holder)"
	fi
}

# modcase PATH: a module path as the module cache spells it ("!" + lower
# case for each upper-case letter).
modcase() {
	printf '%s\n' "$1" | sed -e 's/[A-Z]/!\l&/g'
}

cat <<'HEAD'
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: fanguard
Comment: fanguard is built from its own source and the Go modules listed
 below, which are linked into /usr/sbin/fanguard (a Go binary carries the
 code of every module it uses). The binary links dynamically to libyara
 (package libyara9) and the C library, whose terms are in their own packages.

Files: *
Copyright: the fanguard authors
License: all-rights-reserved
 fanguard has no licence yet: all rights reserved, no licence granted yet.
 Until a licence is chosen, no permission to copy, modify or redistribute
 fanguard's own code is given beyond what the law allows without one.

Files: go/*
Copyright: The Go Authors
License: BSD-3-clause
Comment: The Go standard library and runtime, linked into /usr/sbin/fanguard.
HEAD
indent "$goroot/LICENSE"

$go version -m "$bin" | awk '$1 == "dep" || $1 == "=>" { print $2, $3 }' | while read -r mod ver; do
	dir="$modcache/$(modcase "$mod")@$ver"
	lic=
	for f in LICENSE LICENSE.txt LICENSE.md LICENCE COPYING LICENSE-APACHE; do
		if [ -f "$dir/$f" ]; then lic=$dir/$f; break; fi
	done
	if [ -z "$lic" ]; then
		echo "copyright.sh: no licence file for $mod $ver in $dir (run go mod download)" >&2
		exit 1
	fi
	name=$(licence_name "$lic")
	echo
	echo "Files: $mod/*"
	echo "Copyright: $(copyright_lines "$lic" "$mod")"
	case $name in
	Apache-2.0|MPL-2.0)
		echo "License: $name"
		echo " On Debian systems, the full text of the $name licence is in"
		echo " /usr/share/common-licenses/$name."
		;;
	*)
		echo "License: $name"
		indent "$lic"
		;;
	esac
	echo "Comment: Go module $mod $ver, linked into /usr/sbin/fanguard."
	if [ "$mod" = github.com/mattn/go-sqlite3 ]; then
		echo " It embeds the SQLite library (sqlite3-binding.c), which is in the"
		echo " public domain: \"The author disclaims copyright to this source code.\""
	fi
	if [ -f "$dir/NOTICE" ]; then
		echo " Its NOTICE file, which the Apache licence asks to pass on:"
		echo " ."
		indent "$dir/NOTICE" | sed -e 's/^ / /'
	fi
done
