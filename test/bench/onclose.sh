#!/usr/bin/env bash
# onclose.sh: what [scan] on_close buys. On a tmpfs this script mounts and
# protects (nothing else), `tar xf` of a tarball of /usr/include, then
# `grep -r` over the tree: no daemon; fanguard with on_close = false; with
# on_close = true, grep right after tar; and with on_close = true, grep once
# the scans on close are done. Rounds interleave the four. Prints wall
# times, the daemon's scans during tar and during grep, and the load.
#
# Usage (root): test/bench/onclose.sh [-k ROUNDS] [-r RULES_ROOT] [-s SRC]
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
rounds=3
rules_root=$root/../shared/rules/reversinglabs/yara
src=/usr/include
while getopts k:r:s: o; do
	case $o in
	k) rounds=$OPTARG ;;
	r) rules_root=$OPTARG ;;
	s) src=$OPTARG ;;
	*) exit 2 ;;
	esac
done
[ "$(id -u)" = 0 ] || { echo "needs root" >&2; exit 2; }
work=$(mktemp -d /tmp/fanguard-onclose.XXXXXX)
mnt=$work/mnt
mkdir "$mnt"
dpid=
cleanup() {
	[ -n "$dpid" ] && kill -9 "$dpid" 2>/dev/null && wait "$dpid" 2>/dev/null || true
	umount -l "$mnt" 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT
mount -t tmpfs -o size=2g,mode=0755 tmpfs "$mnt"
(cd "$root" && go build -o "$work/fanguard" ./cmd/fanguard)
tar -C "$(dirname "$src")" -cf "$work/src.tar" "$(basename "$src")"
files=$(tar tf "$work/src.tar" | grep -vc '/$')
rd_args=(--rules-dir "$root/configs/rules.d")
while IFS= read -r d; do
	if compgen -G "$d/*.yar" >/dev/null || compgen -G "$d/*.yara" >/dev/null; then rd_args+=(--rules-dir "$d"); fi
done < <(find "$rules_root" -type d 2>/dev/null | LC_ALL=C sort)
echo "tarball: $files files of $src, $(du -sh "$work/src.tar" | cut -f1); rules dirs: $((${#rd_args[@]} / 2))"

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }
jget() { printf '%s\n' "$2" | sed -n "s/.*\"$1\": \([0-9-]*\).*/\1/p"; }
stats_now() {
	local before
	before=$(grep -ca '	stats	' "$work/d.log" || true)
	kill -USR1 "$dpid"
	until [ "$(grep -ca '	stats	' "$work/d.log" || true)" -gt "$before" ]; do sleep 0.01; done
	grep -a '	stats	' "$work/d.log" | tail -1 | sed 's/^[^{]*//'
}
start_daemon() { # ON_CLOSE
	cat >"$work/fanguard.toml" <<TOML
[protect]
paths = ["$mnt"]
[scan]
on_close = $1
[control]
socket = "$work/control.sock"
[quarantine]
db = "$work/q.db"
vault = "$work/vault"
[rules]
cache_dir = "$work/cache"
TOML
	: >"$work/d.log"
	"$work/fanguard" daemon --config "$work/fanguard.toml" "${rd_args[@]}" 2>"$work/d.log" &
	dpid=$!
	until grep -qa '	protecting	' "$work/d.log"; do
		kill -0 "$dpid" 2>/dev/null || { tail "$work/d.log"; exit 1; }
		sleep 0.05
	done
}
stop_daemon() { kill "$dpid"; wait "$dpid" || true; dpid=; }
settle() { # until the scans on close stop moving
	local a b
	b=$(stats_now)
	while :; do
		sleep 0.5
		a=$b
		b=$(stats_now)
		[ "$(jget close_scans "$a")" = "$(jget close_scans "$b")" ] && [ "$(jget scans "$a")" = "$(jget scans "$b")" ] && break
	done
}

printf '%-12s %5s %8s %8s %12s %12s %12s %12s %s\n' mode round tar_s grep_s scans_tar close_tar scans_grep close_grep load
for r in $(seq 1 "$rounds"); do
	for mode in none off on on+settle; do
		rm -rf "${mnt:?}"/*
		sync
		case $mode in
		none) ;;
		off) start_daemon false ;;
		*) start_daemon true ;;
		esac
		t0=$(now)
		tar -C "$mnt" -xf "$work/src.tar"
		tt=$(since "$t0")
		s1='{}'
		if [ "$mode" != none ]; then
			[ "$mode" = on+settle ] && settle
			s1=$(stats_now)
		fi
		t0=$(now)
		grep -r fanguard_no_such_string_here "$mnt" >/dev/null || true
		tg=$(since "$t0")
		if [ "$mode" != none ]; then
			s2=$(stats_now)
			stop_daemon
			printf '%-12s %5d %8s %8s %12s %12s %12s %12s %s\n' "$mode" "$r" "$tt" "$tg" "$(jget scans "$s1")" "$(jget close_scans "$s1")" \
				$(($(jget scans "$s2") - $(jget scans "$s1"))) $(($(jget close_scans "$s2") - $(jget close_scans "$s1"))) "$(cut -d' ' -f1-3 /proc/loadavg)"
		else
			printf '%-12s %5d %8s %8s %12s %12s %12s %12s %s\n' "$mode" "$r" "$tt" "$tg" - - - - "$(cut -d' ' -f1-3 /proc/loadavg)"
		fi
	done
done
