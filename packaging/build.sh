#!/bin/sh
# build.sh: `make package`. Builds the hardened binary into build/pkg/,
# stages the generated files (the packaged configuration in audit mode, the
# gzipped manual pages, copyright, changelog), then has nfpm write exactly
# one .deb and one .rpm into build/pkg/. Expects `make man` to have run
# (build/man, build/completion). Run from the top of the repository.
#
# Environment: GO (default go), PKG_VERSION (default: packaging/version.sh),
# PKG_MAINTAINER (default a placeholder: the project has no maintainer
# address yet), NFPM_VERSION (default v2.48.0).
set -eu

GO=${GO:-go}
NFPM_VERSION=${NFPM_VERSION:-v2.48.0}
out=build/pkg
stage=$out/stage

PKG_VERSION=$(packaging/version.sh)
PKG_MAINTAINER=${PKG_MAINTAINER:-fanguard maintainers <fanguard@example.org>}
export PKG_VERSION PKG_MAINTAINER

for f in build/man/fanguard.8 build/man/fanguard.toml.5 build/completion/fanguard build/completion/_fanguard; do
	if [ ! -s "$f" ]; then
		echo "build.sh: $f is missing: run make man first" >&2
		exit 1
	fi
done

rm -rf "$out"
mkdir -p "$stage/man/man5" "$stage/man/man8" "$stage/doc"

# The binary: position-independent, with full RELRO and the C code (libyara
# binding, SQLite) fortified and stack-protected; stripped.
echo "building $out/fanguard $PKG_VERSION"
CGO_ENABLED=1 \
CGO_CFLAGS="-O2 -g -D_FORTIFY_SOURCE=2 -fstack-protector-strong" \
CGO_LDFLAGS="-Wl,-z,relro,-z,now" \
	$GO build -trimpath -buildmode=pie \
	-ldflags "-s -w -X main.version=$(git describe --always --dirty) -extldflags '-Wl,-z,relro,-z,now'" \
	-o "$out/fanguard" ./cmd/fanguard

# The packaged configuration: configs/fanguard.toml with mode = "audit",
# and the reason above it. The build fails if the line to replace is not
# there exactly once, so that the package never ships the enforce default
# by accident.
n=$(grep -c '^mode = "enforce"$' configs/fanguard.toml || true)
if [ "$n" != 1 ]; then
	echo "build.sh: configs/fanguard.toml: expected exactly one line 'mode = \"enforce\"' to set to audit for the package, found $n" >&2
	exit 1
fi
awk '
/^mode = "enforce"$/ {
	print "#"
	print "# This file, as installed by the fanguard package, sets mode = \"audit\":"
	print "# the package starts the daemon as soon as it is installed, and a new"
	print "# machine (its own files, its rules) should be watched in audit first;"
	print "# review `fanguard quarantine list` and the journal, then enforce. To"
	print "# enforce, set mode = \"enforce\" here, or leave this file as shipped and"
	print "# add a drop-in, /etc/fanguard/fanguard.toml.d/50-enforce.toml, holding"
	print "# the line  mode = \"enforce\"  (a drop-in is never touched by upgrades,"
	print "# and can be put in place before the package is installed). Then:"
	print "# systemctl restart fanguard."
	print "mode = \"audit\""
	next
}
{ print }
' configs/fanguard.toml > "$stage/fanguard.toml"
if [ "$(grep -c '^mode = "audit"$' "$stage/fanguard.toml")" != 1 ] || grep -q '^mode = "enforce"' "$stage/fanguard.toml"; then
	echo "build.sh: $stage/fanguard.toml: setting mode = \"audit\" failed" >&2
	exit 1
fi

for f in build/man/*.8; do gzip -9n -c "$f" > "$stage/man/man8/${f##*/}.gz"; done
for f in build/man/*.5; do gzip -9n -c "$f" > "$stage/man/man5/${f##*/}.gz"; done

GO=$GO packaging/copyright.sh "$out/fanguard" > "$stage/doc/copyright"

# A native package's changelog is /usr/share/doc/fanguard/changelog.gz in
# the Debian format; one entry, for this build.
{
	echo "fanguard ($PKG_VERSION) unstable; urgency=medium"
	echo
	echo "  * Built from commit $(git rev-parse HEAD)."
	git diff --quiet HEAD 2>/dev/null || echo "    The work tree had uncommitted changes."
	echo "    See the project's git history for the changes."
	echo
	echo " -- $PKG_MAINTAINER  $(date -R -d "@$(git log -1 --format=%ct)")"
} | gzip -9n > "$stage/doc/changelog.gz"

# Depends: the C library at least as new as the one built against.
LIBC_VERSION=$(dpkg-query -W -f '${Version}' libc6 | sed 's/-[^-]*$//')
# Requires (rpm): the newest glibc symbol version the binary uses.
RPM_GLIBC=$(readelf --dyn-syms -W "$out/fanguard" | grep -o '@GLIBC_[0-9.]*' | sed 's/^@//' | sort -uV | tail -n 1)
export LIBC_VERSION RPM_GLIBC

nfpm="$GO run github.com/goreleaser/nfpm/v2/cmd/nfpm@$NFPM_VERSION"
for p in deb rpm; do
	$nfpm pkg --packager "$p" --config packaging/nfpm.yaml --target "$out/"
done
ls -l "$out"/*.deb "$out"/*.rpm
