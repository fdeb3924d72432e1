#!/usr/bin/env bash
# Times `cat` over N small files on a tmpfs protected by fanguard and on an
# unprotected tmpfs, in one run, and prints a markdown table. Needs root.
# The first pass over the protected files scans each one (cold); the later
# passes find them in the kernel's verdict cache (warm).
#
#   test/bench/cat.sh [-n FILES] [-s BYTES] [-r ROUNDS] [-b BINARY]
set -euo pipefail

files=2000 size=4096 rounds=7 bin=bin/fanguard
while getopts "n:s:r:b:" opt; do
	case $opt in
	n) files=$OPTARG ;; s) size=$OPTARG ;; r) rounds=$OPTARG ;; b) bin=$OPTARG ;;
	*) echo "usage: $0 [-n FILES] [-s BYTES] [-r ROUNDS] [-b BINARY]" >&2; exit 2 ;;
	esac
done
[ "$(id -u)" = 0 ] || { echo "$0: needs root (mounts tmpfs, runs the daemon)" >&2; exit 2; }
[ -x "$bin" ] || { echo "$0: $bin not found: run make build" >&2; exit 2; }

work=$(mktemp -d /tmp/fanguard-bench.XXXXXX)
pid=
cleanup() {
	[ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null || true
	umount "$work/protected" "$work/plain" 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT
mkdir "$work/protected" "$work/plain"
mount -t tmpfs -o size=512m tmpfs "$work/protected"
mount -t tmpfs -o size=512m tmpfs "$work/plain"
set +o pipefail # head ends the pipe early, on purpose
for dir in "$work/protected" "$work/plain"; do
	head -c $((files * size)) /dev/urandom | base64 -w 0 | fold -w "$((size - 1))" | head -n "$files" |
		split -l 1 -a 5 - "$dir/f"
done
set -o pipefail

cat > "$work/fanguard.toml" <<TOML
[rules]
dirs = ["$(pwd)/configs/rules.d"]
[protect]
paths = ["$work/protected"]
TOML
"$bin" daemon --config "$work/fanguard.toml" 2>"$work/daemon.log" &
pid=$!
for _ in $(seq 100); do
	grep -q "	protecting	" "$work/daemon.log" && break
	kill -0 "$pid" 2>/dev/null || { cat "$work/daemon.log" >&2; exit 1; }
	sleep 0.1
done

# one `cat` over every file of a directory, in microseconds
time_cat_once() {
	local t0 t1
	t0=$(date +%s%N)
	cat "$1"/f* >/dev/null
	t1=$(date +%s%N)
	echo $(((t1 - t0) / 1000))
}
# median of ROUNDS timings
time_cat() {
	for _ in $(seq "$rounds"); do time_cat_once "$1"; done | sort -n | sed -n "$(((rounds + 1) / 2))p"
}
plain=$(time_cat "$work/plain")
cold=$(time_cat_once "$work/protected")
protected=$(time_cat "$work/protected")
kill -TERM "$pid"
wait "$pid" || true
pid=

ms() { printf '%d.%03d ms' $(($1 / 1000)) $(($1 % 1000)); }
ratio() { awk -v a="$1" -v b="$plain" -v n="$files" 'BEGIN { printf "%.2f× (%+.1f µs per open)", a / b, (a - b) / n }'; }
printf '| cat over %s files of %s bytes | time | vs unprotected |\n' "$files" "$size"
printf '| --- | ---: | ---: |\n'
printf '| unprotected tmpfs (median of %s) | %s | 1.00× |\n' "$rounds" "$(ms "$plain")"
printf '| protected, first pass: every file scanned | %s | %s |\n' "$(ms "$cold")" "$(ratio "$cold")"
printf '| protected, later passes: kernel cache (median of %s) | %s | %s |\n' "$rounds" "$(ms "$protected")" "$(ratio "$protected")"
echo
grep "stopped" "$work/daemon.log" | sed 's/.*stopped\t/daemon counters: /'
