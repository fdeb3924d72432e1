#!/bin/sh
# version.sh: print the package version, valid for Debian (a native
# package: no "-") and for RPM (no "-" either; the release is set apart).
#
#   PKG_VERSION set      that, once checked
#   tag vX.Y.Z reachable X.Y.Z, or X.Y.Z+<n>.g<hash> <n> commits after it
#   no tag               0.0.0+git<commit count>.<short hash>
#
# and ".dirty" appended when the work tree has uncommitted changes. Each
# commit on main raises the commit count, so the version rises with it.
set -eu

check() {
	case $1 in
	[0-9]*) ;;
	*) echo "version.sh: PKG_VERSION=$1: must start with a digit" >&2; exit 1 ;;
	esac
	case $1 in
	*[!0-9A-Za-z.+~]*)
		echo "version.sh: PKG_VERSION=$1: only digits, letters, '.', '+' and '~' are allowed (no '-': Debian reads it as a revision, RPM refuses it)" >&2
		exit 1 ;;
	esac
	printf '%s\n' "$1"
}

if [ -n "${PKG_VERSION:-}" ]; then
	check "$PKG_VERSION"
	exit 0
fi

dirty=
if [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
	dirty=.dirty
fi
hash=$(git rev-parse --short=7 HEAD)
if desc=$(git describe --tags --long --match 'v[0-9]*.[0-9]*.[0-9]*' 2>/dev/null); then
	# vX.Y.Z-<n>-g<hash>
	n=${desc%-g*}
	n=${n##*-}
	tag=${desc%-*-g*}
	tag=${tag#v}
	if [ "$n" = 0 ]; then
		v=$tag
		[ -z "$dirty" ] || v=$tag+0.g$hash
	else
		v=$tag+$n.g$hash
	fi
else
	v=0.0.0+git$(git rev-list --count HEAD).$hash
fi
check "$v$dirty"
