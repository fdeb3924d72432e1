#!/usr/bin/env bash
# bench.sh: what fanguard costs, side by side with no scanner (and with the
# yara command line), in one run, on the workloads where on-access scanning
# is felt: a corpus of binaries, the Debian linux-source-6.1 tree (tar xf,
# grep -r, a kernel build), first opens of small files, and the daemon's
# memory with a full verdict cache. Prints a markdown report and writes it to
# BENCHMARKS.md at the repo root. Needs root (mounts tmpfs filesystems, runs
# the daemon). See test/bench/README.md.
#
# Safety: a daemon protects ONLY a tmpfs this script has just mounted. It runs
# in the background with its pid kept; every command timed runs in a process
# group of its own. On any exit the trap SIGKILLs the daemon (the kernel then
# allows every held open at once) and that group, and unmounts every tmpfs.

# The run arrays are read through namerefs (local -n), which shellcheck
# does not follow; the bash -c programs are single-quoted on purpose; the
# trap handler is reached through trap.
# shellcheck disable=SC2034,SC2016,SC2317

# The whole script is one compound command, parsed before it runs: a file
# edited or checked out during a run (an hour) does not change the run.
{
set -euo pipefail

usage() {
	cat <<EOF
usage: $0 [-w GROUPS] [-n FILES] [-m MIB] [-k RUNS] [-s RUNS] [-K RUNS]
          [-l FILES] [-c FILES] [-C DIR] [-r RULES_ROOT] [-b BINARY]
          [-t BUDGET] [-o FILE]

Workload groups (-w), each with no daemon and with a fresh fanguard daemon
protecting a tmpfs the script mounts, interleaved in one run:
  corpus   a corpus of -n files from /usr/lib and /usr/bin, read by \$(nproc)
           parallel cat: (a) none, (b) cold (fresh daemon), (c) warm (again,
           same daemon), (d) yara -r -p \$(nproc), (e) fanguard scan
  source   the Debian linux-source-6.1 tree (apt-get install linux-source-6.1,
           decompressed once into -C): tar xf onto the tmpfs; a first and a
           second grep -r over the tree, with the tree written before the
           daemon started (cold tree) and while it ran
  build    make tinyconfig && make -j\$(nproc) in that tree, extracted while
           the daemon ran
  latency  first open() of -l small text files, one after another, timed
           with CLOCK_MONOTONIC (p50, p99), and the daemon's own latency
  rss      the daemon's VmRSS and VmHWM once -c files were opened under it
           (a full verdict cache), and what the memory is
The report ends with the issue's targets, each marked holds or not.

  -w GROUPS      comma-separated groups to run (default: all:
                 corpus,source,build,latency,rss)
  -n FILES       corpus size in files (default 10000)
  -m MIB         corpus size in MiB, approximately (default 400)
                 Files come from /usr/lib and /usr/bin: regular, non-empty,
                 at most 16 MiB, sorted by path, sampled evenly (the same
                 machine gives the same corpus on every run).
  -k RUNS        runs of each corpus workload, median reported (default 3)
  -s RUNS        runs of tar xf and grep -r, and of the latency workload
                 (default 3)
  -K RUNS        runs of the kernel build, about 2 x 100 s each on 2 CPUs
                 (default 3; 0 skips it)
  -l FILES       files first opened in the latency workload (default 2000)
  -c FILES       files opened to fill the verdict cache in the rss workload
                 (default 1050000: the default cache of 1,000,000 entries,
                 and 5 % more so that every shard of it is full)
  -C DIR         where the decompressed linux-source-6.1.tar is kept between
                 runs (default /var/cache/fanguard-bench; ~1.4 GB)
  -r RULES_ROOT  rules root; each directory in it holding *.yar/*.yara files
                 is passed as one --rules-dir, after configs/rules.d
                 (default: <repo>/../shared/rules/reversinglabs/yara)
  -b BINARY      fanguard binary (default: <repo>/bin/fanguard)
  -t BUDGET      the daemon's budget, written to its config and used as the
                 latency target (default 5s; Go duration: 250ms, 5s, 1m)
  -o FILE        where the report goes (default: <repo>/BENCHMARKS.md)
  -h             this help

Exit status: 0 report written (whether the targets hold or not), 1 a
workload or the daemon failed, 2 bad usage or a missing prerequisite.
EOF
}

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
files=10000 mib=400 runs=3 sruns=3 bruns=3 lfiles=2000 cfiles=1050000 budget=5s
groups=corpus,source,build,latency,rss
rules_root='' bin='' out='' cache_dir=/var/cache/fanguard-bench
while getopts "w:n:m:k:s:K:l:c:C:r:b:t:o:h" opt; do
	case $opt in
	w) groups=$OPTARG ;; n) files=$OPTARG ;; m) mib=$OPTARG ;; k) runs=$OPTARG ;;
	s) sruns=$OPTARG ;; K) bruns=$OPTARG ;; l) lfiles=$OPTARG ;; c) cfiles=$OPTARG ;;
	C) cache_dir=$OPTARG ;; r) rules_root=$OPTARG ;; b) bin=$OPTARG ;; t) budget=$OPTARG ;;
	o) out=$OPTARG ;;
	h) usage; exit 0 ;;
	*) usage >&2; exit 2 ;;
	esac
done
shift $((OPTIND - 1))
[ $# -eq 0 ] || { echo "$0: unexpected argument: $1" >&2; usage >&2; exit 2; }
die2() { echo "bench: $*" >&2; exit 2; }
posint() { [[ $2 =~ ^[1-9][0-9]*$ ]] || die2 "$1 wants a positive integer, not '$2'"; }
posint -n "$files"
posint -m "$mib"
posint -k "$runs"
posint -s "$sruns"
[[ $bruns =~ ^(0|[1-9][0-9]*)$ ]] || die2 "-K wants an integer >= 0, not '$bruns'"
posint -l "$lfiles"
posint -c "$cfiles"
budget_us=$(awk -v d="$budget" 'BEGIN {
	u["ms"]=1e3; u["s"]=1e6; u["m"]=6e7; u["h"]=3.6e9
	if (match(d, /^[0-9]+(\.[0-9]+)?/) && (substr(d, RLENGTH + 1) in u)) printf "%d", substr(d, 1, RLENGTH) * u[substr(d, RLENGTH + 1)]
}')
[ -n "$budget_us" ] || die2 "-t wants a duration such as 250ms, 5s or 1m, not '$budget'"
declare -A want=()
IFS=, read -ra gl <<<"$groups"
for g in "${gl[@]}"; do
	case $g in
	corpus | source | build | latency | rss) want[$g]=1 ;;
	all) for h in corpus source build latency rss; do want[$h]=1; done ;;
	*) die2 "-w: unknown workload group '$g' (corpus, source, build, latency, rss, all)" ;;
	esac
done
[ "$bruns" -gt 0 ] || unset 'want[build]'
[ ${#want[@]} -gt 0 ] || die2 "-w names no workload group to run (-K 0 skips the build)"
wants() { [ -n "${want[$1]:-}" ]; }

# Paths given on the command line are relative to where we were started;
# everything else is relative to the repo root.
abspath() { case $1 in /*) printf '%s\n' "$1" ;; *) printf '%s\n' "$PWD/$1" ;; esac; }
bin=$(abspath "${bin:-$root/bin/fanguard}")
out=$(abspath "${out:-$root/BENCHMARKS.md}")
cache_dir=$(abspath "$cache_dir")
rules_root=${rules_root:-$root/../shared/rules/reversinglabs/yara}
[ -d "$rules_root" ] || die2 "rules root $rules_root is missing (the ReversingLabs rule set is expected at ../shared/rules/reversinglabs/yara from the repo root; -r points elsewhere)"
rules_root=$(cd "$rules_root" && pwd)
cd "$root"

[ "$(id -u)" = 0 ] || die2 "needs root (mounts a tmpfs, runs the daemon)"
[ -x "$bin" ] || die2 "$bin not found or not executable: run make build, or pass -b"

# ---------------------------------------------------------------- prerequisites
# command -> Debian package, installed when missing, for the groups that
# need them.
need=(findmnt:util-linux mountpoint:util-linux setsid:util-linux tar:tar jq:jq gcc:gcc)
wants corpus && need+=(yara:yara yarac:yara)
wants source || wants build && need+=(grep:grep)
wants build && need+=(make:make flex:flex bison:bison bc:bc perl:perl)
wants latency && need+=(curl:curl)
pkgs=()
for cp in "${need[@]}"; do
	command -v "${cp%%:*}" >/dev/null || pkgs+=("${cp#*:}")
done
# the build needs headers no command reveals
if wants build; then
	[ -e /usr/include/libelf.h ] || pkgs+=(libelf-dev)
	[ -e /usr/include/openssl/ssl.h ] || pkgs+=(libssl-dev)
fi
src_xz=/usr/src/linux-source-6.1.tar.xz
if wants source || wants build; then
	[ -e "$src_xz" ] || pkgs+=(linux-source-6.1)
	command -v xz >/dev/null || pkgs+=(xz-utils)
fi
if [ ${#pkgs[@]} -gt 0 ]; then
	mapfile -t pkgs < <(printf '%s\n' "${pkgs[@]}" | sort -u)
	echo "bench: installing ${pkgs[*]} (apt-get install -y)" >&2
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >&2 || die2 "could not install ${pkgs[*]}"
fi
for cp in "${need[@]}"; do command -v "${cp%%:*}" >/dev/null || die2 "${cp%%:*} not found"; done
if wants source || wants build; then [ -e "$src_xz" ] || die2 "$src_xz not found after installing linux-source-6.1"; fi

if wants rss; then # a page and an inode per file on the rss tmpfs
	mem_kb=$(awk '/^MemAvailable:/ { print $2 }' /proc/meminfo)
	[ "$mem_kb" -gt $((cfiles * 5 + 2 * 1048576)) ] || die2 "the rss workload's $cfiles files take about $((cfiles * 5 / 1024)) MiB of memory; only $((mem_kb / 1024)) MiB is available (-c sets fewer)"
fi
ncpu=$(nproc)
load_start=$(cut -d' ' -f1 /proc/loadavg)
clk_tck=$(getconf CLK_TCK)
t_start=$(date +%s)

# ---------------------------------------------------------------- cleanup
work=$(mktemp -d /tmp/fanguard-bench.XXXXXX)
dpid='' cpid=''
mounts=() # every tmpfs mounted, unmounted on exit
cleanup() {
	local rc=$? m i
	trap - ERR
	if [ -n "$dpid" ]; then
		kill -KILL "$dpid" 2>/dev/null || true
		wait "$dpid" 2>/dev/null || true
	fi
	if [ -n "$cpid" ]; then # the process group of the command being timed
		kill -KILL -- "-$cpid" 2>/dev/null || true
		wait "$cpid" 2>/dev/null || true
	fi
	for m in "${mounts[@]}"; do
		for i in 1 2 3 4 5 6 7 8 9 10; do
			mountpoint -q "$m" 2>/dev/null || break
			umount "$m" 2>/dev/null && break
			sleep 0.5 # a killed compiler may still be closing its files
		done
		if mountpoint -q "$m" 2>/dev/null; then
			echo "bench: $m is busy: detaching it (umount -l)" >&2
			umount -l "$m" || true
		fi
	done
	for m in "${mounts[@]}"; do mountpoint -q "$m" 2>/dev/null || rmdir "$m" 2>/dev/null || true; done
	rm -rf --one-file-system "$work"
	exit "$rc"
}
trap cleanup EXIT
trap 'echo "bench: line $LINENO failed: $BASH_COMMAND" >&2; exit 1' ERR
trap 'exit 130' INT
trap 'exit 143' TERM
fail() { echo "bench: $*" >&2; exit 1; }
say() { echo "bench: $(date +%H:%M:%S) $*" >&2; }

# mount_tmpfs DIR OPTIONS: a fresh tmpfs at DIR (made), checked to be one.
mount_tmpfs() {
	mkdir -p "$1"
	mountpoint -q "$1" && fail "$1 is already a mount point"
	mounts+=("$1")
	mount -t tmpfs -o "mode=0755,$2" fanguard-bench "$1"
	[ "$(findmnt -n -o FSTYPE --mountpoint "$1")" = tmpfs ] || fail "$1 is not a tmpfs mount: refusing to go on"
}
# umount_tmpfs DIR: unmounts DIR (a tmpfs of ours), which is then gone.
umount_tmpfs() {
	[ -z "$dpid" ] || fail "umount_tmpfs $1 with a daemon running"
	umount "$1" || fail "cannot unmount $1"
	rmdir "$1"
}

# ---------------------------------------------------------------- rules
# configs/rules.d first, then the rules root and each directory below it
# that holds rule files, sorted. fanguard merges by file name (a later
# directory's file replaces an earlier one of the same name; an empty file
# or a link to /dev/null masks it): the yara command line gets the same set.
rule_dirs=("$root/configs/rules.d")
while IFS= read -r d; do
	compgen -G "$d/*.yar" >/dev/null || compgen -G "$d/*.yara" >/dev/null || continue
	rule_dirs+=("$d")
done < <(find "$rules_root" -type d | LC_ALL=C sort)
[ ${#rule_dirs[@]} -gt 1 ] || die2 "no *.yar or *.yara files below $rules_root"
rd_args=()
declare -A rule_by_name=()
for d in "${rule_dirs[@]}"; do
	rd_args+=(--rules-dir "$d")
	for f in "$d"/*.yar "$d"/*.yara; do
		[ -e "$f" ] || [ -L "$f" ] || continue
		n=$(basename "$f")
		[ -n "${rule_by_name[$n]:-}" ] && say "note: $f replaces ${rule_by_name[$n]} (same file name)"
		rule_by_name[$n]=$f
	done
done
rule_files=()
for n in "${!rule_by_name[@]}"; do
	f=${rule_by_name[$n]}
	[ -s "$f" ] && [ "$(readlink -f "$f")" != /dev/null ] && rule_files+=("$f")
done
mapfile -t rule_files < <(printf '%s\n' "${rule_files[@]}" | LC_ALL=C sort)
rule_count=$(grep -hcE '^[[:space:]]*((private|global)[[:space:]]+)*rule[[:space:]]+[A-Za-z_]' "${rule_files[@]}" | awk '{ s += $1 } END { print s + 0 }')
rule_bytes=$(cat "${rule_files[@]}" | wc -c)

# ---------------------------------------------------------------- helpers
# The opener and file maker (test/bench/fgopen.c), built here.
fgopen=$work/fgopen
gcc -O2 -Wall -o "$fgopen" "$root/test/bench/fgopen.c" || die2 "cannot build test/bench/fgopen.c"

# write_config FILE PROTECTED: the daemon's config, protecting one path; the
# control socket and the quarantine live in the work directory (not on the
# protected tmpfs), so that no other fanguard on the machine is disturbed.
write_config() {
	cat >"$1" <<TOML
# written by test/bench/bench.sh; every other key keeps its default
budget = "$budget"
[rules]
dirs = ["$root/configs/rules.d"] # replaced by --rules-dir
[protect]
paths = ["$2"]
[control]
socket = "$work/control.sock"
[quarantine]
db = "$work/quarantine/quarantine.db"
vault = "$work/quarantine/vault"
TOML
}

# timed NAME CMD...: runs CMD (a command, not a function) in a process group
# of its own, stdin /dev/null, stdout in $work/NAME.out, stderr in
# $work/NAME.err; "wall user sys" (seconds) goes to $work/NAME.time. Returns
# CMD's status.
# $work/NAME.busy: CPU time the whole machine spent meanwhile (user, nice,
# system, irq, softirq, steal; all CPUs), to tell other load from ours.
busy_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat; }
# children's user and system time so far, in seconds (from the times builtin,
# which must run in this shell, not in a subshell)
child_cpu() { awk 'NR == 2 { for (i = 1; i <= 2; i++) { split($i, a, /[ms]/); printf "%.3f ", a[1] * 60 + a[2] } }' "$1"; }
timed() {
	local name=$1 rc=0 b0 t0 t1 c0 c1
	shift
	b0=$(busy_ticks)
	times >"$work/times"
	c0=$(child_cpu "$work/times")
	t0=$(date +%s%N)
	setsid "$@" </dev/null >"$work/$name.out" 2>"$work/$name.err" &
	cpid=$!
	wait "$cpid" || rc=$?
	cpid=
	t1=$(date +%s%N)
	times >"$work/times"
	c1=$(child_cpu "$work/times")
	awk -v t0="$t0" -v t1="$t1" -v c0="$c0" -v c1="$c1" 'BEGIN {
		split(c0, a, " "); split(c1, b, " ")
		printf "%.3f %.3f %.3f\n", (t1 - t0) / 1e9, b[1] - a[1], b[2] - a[2] }' >"$work/$name.time"
	awk -v a="$b0" -v b="$(busy_ticks)" -v h="$clk_tck" 'BEGIN { printf "%.2f\n", (b - a) / h }' >"$work/$name.busy"
	return $rc
}
# other NAME OURS...: machine CPU time during NAME minus our processes' CPU
other() {
	local name=$1
	shift
	awk -v b="$(cat "$work/$name.busy")" -v o="$*" 'BEGIN { n = split(o, a, " "); for (i = 1; i <= n; i++) b -= a[i]; printf "%.2f", b < 0 ? 0 : b }'
}
wall() { cut -d' ' -f1 "$work/$1.time"; }
cpu() { awk '{ print $2 + $3 }' "$work/$1.time"; }
# jget KEY JSON: a number from a flat JSON object, or nothing.
jget() { printf '%s\n' "$2" | awk -v k="\"$1\"" '{ i = index($0, k ":"); if (!i) exit; v = substr($0, i + length(k) + 1); sub(/^ */, "", v); if (match(v, /^-?[0-9][0-9.eE+-]*/)) print substr(v, 1, RLENGTH); exit }'; }
# logline WORD: the JSON of the last daemon log line with TAB WORD TAB.
logline() { awk -F'\t' -v w="$1" '$3 == w { l = $0 } END { if (l != "") { sub(/^.*\t/, "", l); print l } }' "$work/daemon.log"; }
cpu_ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'; }
# vm KEY: a field of the daemon's /proc/PID/status, in kB
vm() { awk -v k="$1:" '$1 == k { print $2 }' "/proc/$dpid/status"; }

# start_daemon CONFIG [ENV...]: a fresh daemon with CONFIG; waits for its
# ready (protecting) line. Sets dpid, startup_ms and ready_json.
start_daemon() {
	local conf=$1 t0 t1 ready_ns ts
	shift
	: >"$work/daemon.log"
	rm -f "$work/control.sock"
	t0=$(date +%s%N)
	env "$@" "$bin" daemon --config "$conf" "${rd_args[@]}" </dev/null 2>"$work/daemon.log" &
	dpid=$!
	while ! grep -qa "	protecting	" "$work/daemon.log"; do
		if ! kill -0 "$dpid" 2>/dev/null; then
			wait "$dpid" || true
			dpid=
			tail -20 "$work/daemon.log" >&2
			fail "the daemon exited before it was ready"
		fi
		t1=$(date +%s%N)
		[ $(((t1 - t0) / 1000000000)) -lt 120 ] || { tail -20 "$work/daemon.log" >&2; fail "the daemon was not ready after 120 s"; }
		sleep 0.01
	done
	t1=$(date +%s%N)
	# the ready line's own time stamp (ms) is more exact than our polling
	ts=$(grep -a "	protecting	" "$work/daemon.log" | head -1 | cut -f1)
	ready_ns=$(date -d "$ts" +%s%N 2>/dev/null || echo "$t1")
	[ "$ready_ns" -ge "$t0" ] && [ "$ready_ns" -le "$t1" ] || ready_ns=$t1
	startup_ms=$(((ready_ns - t0) / 1000000))
	ready_json=$(grep -a "	protecting	" "$work/daemon.log" | head -1 | sed 's/.*	protecting	//')
	daemon_workers=$(jget workers "$ready_json")
	daemon_rules=$(jget rules "$ready_json")
	daemon_cache=$(jget cache_entries "$ready_json")
}

# stats_now: SIGUSR1, then wait (up to 2 s) for a new TAB stats TAB line.
# Prints its JSON, or nothing if the daemon does not have the feature.
stats_now() {
	local before i
	before=$(grep -ca "	stats	" "$work/daemon.log" || true)
	kill -USR1 "$dpid"
	for i in $(seq 200); do
		if [ "$(grep -ca "	stats	" "$work/daemon.log" || true)" -gt "$before" ]; then
			logline stats
			return
		fi
		sleep 0.01
	done
}

# status_to FILE: the daemon's status document (fanguard status --json).
status_to() {
	local rc=0
	"$bin" status --json --socket "$work/control.sock" >"$1" 2>"$work/status.err" || rc=$?
	if [ "$rc" -gt 1 ] || ! jq -e .counters "$1" >/dev/null 2>&1; then
		cat "$work/status.err" >&2
		fail "fanguard status failed (status $rc)"
	fi
	[ "$rc" -eq 0 ] || say "note: the daemon says it is not healthy: $(jq -r '.health.reason // ""' "$1")"
}
# jn FILE FILTER: a number from a JSON file, or nothing.
jn() { if [ -s "$1" ]; then jq -r "($2) // empty" "$1" 2>/dev/null || true; fi; }
# cdelta KEY AFTER [BEFORE]: a counter's growth between two status files.
cdelta() {
	local a b
	a=$(jn "$2" ".counters.$1")
	[ -n "$a" ] || { printf 'n/a'; return; }
	b=0
	[ -z "${3:-}" ] || b=$(jn "$3" ".counters.$1")
	echo $((a - ${b:-0}))
}

stop_daemon() {
	local rc=0
	hwm_kb=$(vm VmHWM)
	kill -TERM "$dpid"
	for _ in $(seq $((budget_us / 100000 + 300))); do
		kill -0 "$dpid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$dpid" 2>/dev/null; then
		kill -KILL "$dpid"
		wait "$dpid" || true
		dpid=
		fail "the daemon did not stop on SIGTERM"
	fi
	wait "$dpid" || rc=$?
	dpid=
	[ "$rc" -eq 0 ] || { tail -20 "$work/daemon.log" >&2; fail "the daemon exited with status $rc"; }
	grep -qa "	stopped	" "$work/daemon.log" || fail "the daemon logged no stopped line"
}

# ---------------------------------------------------------------- figures
# medrun ARRAY: the run whose value is the median (lower median for an even
# count), so that its other figures can be reported with it.
medrun() {
	local -n a=$1
	local r
	for r in "${!a[@]}"; do echo "${a[r]} $r"; done | sort -g | sed -n "$(((${#a[@]} + 1) / 2))p" | cut -d' ' -f2
}
med() { local -n a=$1; echo "${a[$(medrun "$1")]}"; }
minmax() { local -n a=$1; printf '%s\n' "${a[@]}" | awk 'NR == 1 || $1 < lo { lo = $1 } NR == 1 || $1 > hi { hi = $1 } END { printf "%.3f–%.3f", lo, hi }'; }
# medmm ARRAY: "median (min–max)" of seconds
medmm() { local -n a=$1; printf '%s (%s)' "$(med "$1")" "$(minmax "$1")"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a != "" && b > 0) printf "%.2f", a / b; else print "n/a" }'; }
na() { [ -n "$1" ] && printf '%s' "$1" || printf 'n/a'; }
sub0() { [ -n "$1" ] && [ -n "$2" ] && awk -v a="$1" -v b="$2" 'BEGIN { printf "%d", a - b }' || printf 'n/a'; }
us() { [ -n "$1" ] && [ "$1" != n/a ] && awk -v u="$1" 'BEGIN { if (u >= 1e6) printf "%.2f s", u / 1e6; else if (u >= 1e3) printf "%.1f ms", u / 1e3; else printf "%d µs", u }' || printf 'n/a'; }
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
kib_mib() { [ -n "$1" ] && awk -v k="$1" 'BEGIN { printf "%.1f MiB", k / 1024 }' || printf 'n/a'; }
# le A B: 1 if A <= B, 0 if not, x if A is unknown
le() {
	case $1 in '' | n/a) echo x ;; *) awk -v a="$1" -v b="$2" 'BEGIN { print (a <= b) ? 1 : 0 }' ;; esac
}
TARGETS=()
# target NAME VALUE LIMIT ok?: a row of the Targets table
target() {
	local verdict
	case $4 in
	1) verdict="**holds**" ;; 0) verdict="**does not hold**" ;; *) verdict="unknown" ;;
	esac
	TARGETS+=("$(printf '| %s | %s | %s | %s |' "$1" "$2" "$3" "$verdict")")
}

# ================================================================ corpus
corpus=$work/corpus
make_corpus() {
	mount_tmpfs "$corpus" "size=$((mib * 2 + 256))m"
	say "picking about $files files / $mib MiB from /usr/lib and /usr/bin"
	# "size path" sorted by path; then a systematic (evenly spaced) sample where
	# a file's inclusion probability is a + b*size, a and b solved so that the
	# expected count is FILES and the expected size MIB; the target size is
	# corrected a few times so the actual total lands close to it.
	find /usr/lib /usr/bin -xdev -type f -size +0 -size -16777217c ! -name "*$'\n'*" -printf '%s %p\n' |
		LC_ALL=C sort -k2 >"$work/all.txt"
	awk -v n="$files" -v m="$mib" '
	{ s[NR] = $1; line[NR] = $0 }
	function solve(M,   it, i, c, s1, s2, fn, fs, changed) {
		for (i = 1; i <= T; i++) fixed[i] = 0
		for (it = 0; it < 30; it++) {
			c = s1 = s2 = fn = fs = 0
			for (i = 1; i <= T; i++)
				if (fixed[i]) { fn++; fs += s[i] } else { c++; s1 += s[i]; s2 += s[i] * s[i] }
			B = (c * (M - fs) - s1 * (N - fn)) / (c * s2 - s1 * s1)
			A = (N - fn - B * s1) / c
			changed = 0
			for (i = 1; i <= T; i++) if (!fixed[i] && A + B * s[i] >= 1) { fixed[i] = 1; changed = 1 }
			if (!changed) break
		}
	}
	function pick(M, print_it,   i, p, acc, tot) {
		solve(M); acc = 0.5; tot = 0
		for (i = 1; i <= T; i++) {
			p = fixed[i] ? 1 : A + B * s[i]
			if (p < 0) p = 0
			if (p > 1) p = 1
			acc += p
			if (acc >= 1) {
				acc -= 1; tot += s[i]
				if (print_it) { l = line[i]; sub(/^[0-9]+ \//, "", l); print l }
			}
		}
		return tot
	}
	END {
		T = NR; N = n; M = m * 1048576
		if (N >= T) { for (i = 1; i <= T; i++) { l = line[i]; sub(/^[0-9]+ \//, "", l); print l }; exit }
		Mt = M; best = -1
		for (j = 0; j < 12; j++) {
			tot = pick(Mt, 0)
			d = tot > M ? tot - M : M - tot
			if (best < 0 || d < best) { best = d; bestM = Mt }
			if (d < M * 0.01 || tot == 0) break
			Mt = Mt * M / tot
		}
		pick(bestM, 1)
	}' "$work/all.txt" >"$work/pick.txt"
	# --hard-dereference: hard-linked sources become distinct files (a shared
	# inode would be a free cache hit).
	tar -C / --no-recursion --hard-dereference -cf - -T "$work/pick.txt" | tar -C "$corpus" -xf -
	corpus_files=$(find "$corpus" -type f | wc -l)
	corpus_bytes=$(find "$corpus" -type f -printf '%s\n' | awk '{ s += $1 } END { printf "%d", s }')
	corpus_max=$(find "$corpus" -type f -printf '%s\n' | sort -n | tail -1)
	corpus_median=$(find "$corpus" -type f -printf '%s\n' | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }')
	[ "$corpus_files" -gt 0 ] || fail "empty corpus"
	say "corpus: $corpus_files files, $((corpus_bytes / 1048576)) MiB on $corpus"
	write_config "$work/fanguard.toml" "$corpus"
}

read_corpus=(bash -c 'find "$1" -type f -print0 | xargs -0 -P "$2" -n 50 cat >/dev/null' read_corpus "$corpus" "$(nproc)")
# a read pass; opens the daemon denied (EPERM) are counted, any other
# failure is fatal.
read_pass() {
	local name=$1 rc=0
	timed "$name" "${read_corpus[@]}" || rc=$?
	denied=$(grep -c 'Operation not permitted' "$work/$name.err" || true)
	if [ "$rc" -ne 0 ] && grep -qv 'Operation not permitted' "$work/$name.err"; then
		head -5 "$work/$name.err" >&2
		fail "$name: readers failed (status $rc)"
	fi
	if [ "$rc" -ne 0 ] && [ "$denied" -eq 0 ]; then fail "$name: readers failed (status $rc)"; fi
	return 0
}

declare -a W_NONE W_COLD W_WARM W_YARA W_SCAN STARTUP HWM DCPU_COLD DCPU_WARM
declare -a RCPU_NONE RCPU_COLD RCPU_WARM CPU_YARA CPU_SCAN OCPU_NONE OCPU_COLD OCPU_WARM OCPU_YARA OCPU_SCAN
declare -a COLD_JSON STOP_JSON DENIED_COLD DENIED_WARM YARA_MATCHES SCAN_SUMMARY
run_corpus() {
	local r c0 c1 c2 c3 rc
	make_corpus
	say "corpus: compile cost: yarac over ${#rule_files[@]} rule files"
	timed yarac yarac "${rule_files[@]}" "$work/rules.yarc" || { cat "$work/yarac.err" >&2; fail "yarac failed"; }
	yarac_s=$(wall yarac)
	mkdir "$work/empty"
	timed scan0 "$bin" scan --config "$work/fanguard.toml" "${rd_args[@]}" "$work/empty" || { cat "$work/scan0.err" >&2; fail "fanguard scan of an empty directory failed"; }
	scan0_s=$(wall scan0)

	read_pass warmup # untimed: page in find, xargs, cat and the dentries

	for r in $(seq "$runs"); do
		say "corpus run $r/$runs: (a) no daemon"
		read_pass none
		W_NONE[r]=$(wall none) RCPU_NONE[r]=$(cpu none) OCPU_NONE[r]=$(other none "${RCPU_NONE[r]}")
		[ "$denied" -eq 0 ] || fail "opens denied without a daemon"

		say "corpus run $r/$runs: (b) cold, (c) warm"
		start_daemon "$work/fanguard.toml"
		STARTUP[r]=$startup_ms
		c0=$(cpu_ticks "$dpid")
		read_pass cold
		W_COLD[r]=$(wall cold) RCPU_COLD[r]=$(cpu cold) DENIED_COLD[r]=$denied
		c1=$(cpu_ticks "$dpid")
		COLD_JSON[r]=$(stats_now)
		c2=$(cpu_ticks "$dpid")
		read_pass warm
		W_WARM[r]=$(wall warm) RCPU_WARM[r]=$(cpu warm) DENIED_WARM[r]=$denied
		c3=$(cpu_ticks "$dpid")
		DCPU_COLD[r]=$(awk -v t=$((c1 - c0)) -v h="$clk_tck" 'BEGIN { printf "%.2f", t / h }')
		DCPU_WARM[r]=$(awk -v t=$((c3 - c2)) -v h="$clk_tck" 'BEGIN { printf "%.2f", t / h }')
		OCPU_COLD[r]=$(other cold "${RCPU_COLD[r]}" "${DCPU_COLD[r]}")
		OCPU_WARM[r]=$(other warm "${RCPU_WARM[r]}" "${DCPU_WARM[r]}")
		stop_daemon
		HWM[r]=$hwm_kb
		STOP_JSON[r]=$(logline stopped)
		cp "$work/daemon.log" "$work/daemon.$r.log"

		say "corpus run $r/$runs: (d) yara"
		timed yara yara -r -p "$ncpu" "${rule_files[@]}" "$corpus" || { head -5 "$work/yara.err" >&2; fail "yara failed"; }
		W_YARA[r]=$(wall yara) CPU_YARA[r]=$(cpu yara) OCPU_YARA[r]=$(other yara "${CPU_YARA[r]}")
		YARA_MATCHES[r]=$(wc -l <"$work/yara.out")

		say "corpus run $r/$runs: (e) fanguard scan"
		rc=0
		timed scan "$bin" scan --config "$work/fanguard.toml" "${rd_args[@]}" "$corpus" || rc=$?
		[ "$rc" -le 1 ] || { tail -5 "$work/scan.err" >&2; fail "fanguard scan failed (status $rc)"; }
		W_SCAN[r]=$(wall scan) CPU_SCAN[r]=$(cpu scan) OCPU_SCAN[r]=$(other scan "${CPU_SCAN[r]}")
		SCAN_SUMMARY[r]=$(grep -a 'scanned' "$work/scan.err" | tail -1 | sed 's/^fanguard: //' || true)
	done
	umount_tmpfs "$corpus"
}

report_corpus() {
	local rn rw ry rs rc_ cj sj r j v lat_max timed_out_total timed_out_known hwm_max startup_med
	local m_none m_cold m_warm m_yara m_scan r_warm r_cold r_coldyara r_scanyara
	m_none=$(med W_NONE) m_cold=$(med W_COLD) m_warm=$(med W_WARM) m_yara=$(med W_YARA) m_scan=$(med W_SCAN)
	rc_=$(medrun W_COLD) # the cold run with the median time
	cj=${COLD_JSON[rc_]} # its counters after the cold pass (SIGUSR1), maybe empty
	sj=${STOP_JSON[rc_]} # its counters at exit (both passes)
	r_warm=$(ratio "$m_warm" "$m_none") r_cold=$(ratio "$m_cold" "$m_none")
	r_coldyara=$(ratio "$m_cold" "$m_yara") r_scanyara=$(ratio "$m_scan" "$m_yara")
	lat_max=
	for r in $(seq "$runs"); do
		for j in "${COLD_JSON[r]}" "${STOP_JSON[r]}"; do
			v=$(jget latency_max_us "$j")
			[ -z "$v" ] || lat_max=$(awk -v a="${lat_max:-0}" -v b="$v" 'BEGIN { print (b > a) ? b : a }')
		done
	done
	timed_out_total=0 timed_out_known=
	for r in $(seq "$runs"); do
		v=$(jget timed_out "${STOP_JSON[r]}")
		[ -z "$v" ] || { timed_out_known=1; timed_out_total=$((timed_out_total + v)); }
	done
	hwm_max=$(printf '%s\n' "${HWM[@]}" | sort -n | tail -1)
	startup_med=$(med STARTUP)
	counter_row() { # LABEL KEY
		local c s w
		c=$(jget "$2" "$cj") s=$(jget "$2" "$sj")
		w=$(sub0 "$s" "$c")
		[ -n "$c" ] || w=n/a
		printf '| %s | %s | %s | %s |\n' "$1" "$(na "$c")" "$w" "$(na "$s")"
	}

	echo "## Corpus: binaries from /usr/lib and /usr/bin"
	echo
	echo "- corpus: $corpus_files files, $(mib "$corpus_bytes") (median file $corpus_median B, largest $(mib "$corpus_max")), regular files from /usr/lib and /usr/bin sorted by path and sampled evenly, on a tmpfs (asked for: -n $files -m $mib)"
	echo "- compile alone: yarac $yarac_s s, \`fanguard scan\` of an empty directory $scan0_s s"
	echo "- readers: \`find | xargs -0 -P $ncpu -n 50 cat\` over every corpus file; $runs runs per workload, round robin; wall time median (min–max), in seconds"
	echo
	echo "CPU columns are for the run with the median wall time. Other CPU: what the whole machine spent meanwhile (/proc/stat, steal included) minus our processes; well above 0, something else was competing."
	echo
	echo "| workload | wall (s) | min–max (s) | vs none | readers CPU (s) | scanner CPU (s) | other CPU (s) |"
	echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
	rn=$(medrun W_NONE) rw=$(medrun W_WARM) ry=$(medrun W_YARA) rs=$(medrun W_SCAN)
	echo "| (a) none: read, no daemon | $m_none | $(minmax W_NONE) | 1.00 | ${RCPU_NONE[rn]} | – | ${OCPU_NONE[rn]} |"
	echo "| (b) cold: read, fresh daemon | $m_cold | $(minmax W_COLD) | $r_cold | ${RCPU_COLD[rc_]} | ${DCPU_COLD[rc_]} (daemon) | ${OCPU_COLD[rc_]} |"
	echo "| (c) warm: read again, same daemon | $m_warm | $(minmax W_WARM) | $r_warm | ${RCPU_WARM[rw]} | ${DCPU_WARM[rw]} (daemon) | ${OCPU_WARM[rw]} |"
	echo "| (d) yara -r -p $ncpu (compile included) | $m_yara | $(minmax W_YARA) | $(ratio "$m_yara" "$m_none") | – | ${CPU_YARA[ry]} | ${OCPU_YARA[ry]} |"
	echo "| (e) fanguard scan | $m_scan | $(minmax W_SCAN) | $(ratio "$m_scan" "$m_none") | – | ${CPU_SCAN[rs]} | ${OCPU_SCAN[rs]} |"
	echo
	echo "| ratio (medians) | value |"
	echo "| --- | ---: |"
	echo "| warm / none | $r_warm |"
	echo "| cold / none | $r_cold |"
	echo "| cold / yara | $r_coldyara |"
	echo "| scan / yara | $r_scanyara |"
	echo
	echo "Daemon counters of the cold run with the median time (run $rc_): after the cold pass (SIGUSR1 \`stats\` line), the warm pass (exit minus that), and at exit (\`stopped\` line, both passes). n/a: the daemon does not report it."
	echo
	echo "| daemon | cold pass | warm pass | both (at exit) |"
	echo "| --- | ---: | ---: | ---: |"
	counter_row events events
	counter_row scans scans
	counter_row "bytes scanned" bytes_scanned
	counter_row "cache hits" cache_hits
	counter_row "cache misses" cache_misses
	counter_row "kernel marks added" kernel_marks_added
	counter_row "timed out" timed_out
	counter_row detections detections
	echo "| opens denied (EPERM seen by readers) | ${DENIED_COLD[rc_]} | ${DENIED_WARM[rc_]} | – |"
	echo "| decision latency p50 | $(us "$(jget latency_p50_us "$cj")") | – | $(us "$(jget latency_p50_us "$sj")") |"
	echo "| decision latency p99 | $(us "$(jget latency_p99_us "$cj")") | – | $(us "$(jget latency_p99_us "$sj")") |"
	echo "| decision latency max (this run) | $(us "$(jget latency_max_us "$cj")") | – | $(us "$(jget latency_max_us "$sj")") |"
	echo
	echo "- decision latency max over all $runs runs: $(us "$lat_max"); timed out over all runs: $([ -n "$timed_out_known" ] && echo "$timed_out_total" || echo n/a)"
	echo "- daemon start-up (start to ready: rules compiled, marks placed): median $startup_med ms (runs: $(printf '%s\n' "${STARTUP[@]}" | paste -sd, | sed 's/,/, /g') ms)"
	echo "- daemon peak RSS (VmHWM just before SIGTERM): max $(kib_mib "$hwm_max") (runs: $(printf '%s\n' "${HWM[@]}" | awk '{ printf "%s%.1f", (NR > 1 ? ", " : ""), $1 / 1024 }') MiB)"
	echo "- yara matches: ${YARA_MATCHES[ry]} lines; fanguard scan: ${SCAN_SUMMARY[rs]:-?}"
	echo
	echo "Wall times of each run in seconds; other CPU (s) in parentheses."
	echo
	echo "| run | none | cold | warm | yara | scan | daemon start-up | daemon CPU cold / warm | peak RSS |"
	echo "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
	for r in $(seq "$runs"); do
		printf '| %d | %s (%s) | %s (%s) | %s (%s) | %s (%s) | %s (%s) | %s ms | %s / %s s | %s |\n' "$r" \
			"${W_NONE[r]}" "${OCPU_NONE[r]}" "${W_COLD[r]}" "${OCPU_COLD[r]}" "${W_WARM[r]}" "${OCPU_WARM[r]}" \
			"${W_YARA[r]}" "${OCPU_YARA[r]}" "${W_SCAN[r]}" "${OCPU_SCAN[r]}" "${STARTUP[r]}" "${DCPU_COLD[r]}" "${DCPU_WARM[r]}" \
			"$(kib_mib "${HWM[r]}")"
	done
	echo
	target "corpus: warm / none" "$r_warm" "≤ 1.02" "$(le "$r_warm" 1.02)"
	target "corpus: cold / yara" "$r_coldyara" "≤ 1.10" "$(le "$r_coldyara" 1.10)"
	target "corpus: max decision latency" "$(us "$lat_max")" "≤ $budget (budget)" "$(le "$lat_max" "$budget_us")"
}

# ================================================================ source, build
src_tar=$cache_dir/linux-source-6.1.tar
src=$work/src
src_top=linux-source-6.1
# the .tar is kept outside every tmpfs of ours, so that the tar xf measured
# reads it (from the page cache) without measuring xz
prepare_source() {
	mkdir -p "$cache_dir"
	case $(findmnt -n -o TARGET -T "$cache_dir") in "$work"/*) die2 "-C $cache_dir is on a tmpfs of this run" ;; esac
	if [ ! -s "$src_tar" ] || [ "$src_xz" -nt "$src_tar" ]; then
		say "decompressing $src_xz into $src_tar (once; kept for later runs)"
		xz -dc "$src_xz" >"$src_tar.tmp" || { rm -f "$src_tar.tmp"; fail "cannot decompress $src_xz into $cache_dir"; }
		mv "$src_tar.tmp" "$src_tar"
	fi
	cat "$src_tar" >/dev/null # into the page cache, for every variant alike
	src_version=$(dpkg-query -W -f='${Version}' linux-source-6.1 2>/dev/null || echo '?')
}
# untar NAME: tar xf of the tree onto $src, timed as NAME
untar() {
	local rc=0
	timed "$1" tar -C "$src" -xf "$src_tar" || rc=$?
	[ "$rc" -eq 0 ] || { head -5 "$work/$1.err" >&2; fail "$1: tar xf onto $src failed (status $rc)"; }
	[ -d "$src/$src_top" ] || fail "$1: $src_tar holds no $src_top directory"
	if [ -z "${tree_files:-}" ]; then
		tree_files=$(find "$src/$src_top" -type f | wc -l)
		tree_bytes=$(find "$src/$src_top" -type f -printf '%s\n' | awk '{ s += $1 } END { printf "%d", s }')
	fi
}
# grep_tree NAME: grep -r over the whole tree for what matches nothing, so
# that grep reads every file to its end; 1 (no match) is the expected status
grep_tree() {
	local rc=0
	timed "$1" env LC_ALL=C grep -r -F -q zzfanguard-nomatch-zz "$src/$src_top" || rc=$?
	[ "$rc" -le 1 ] || { head -5 "$work/$1.err" >&2; fail "$1: grep -r failed (status $rc)"; }
}
build_tree() {
	local rc=0
	timed "$1" bash -c 'make -C "$1" tinyconfig && make -C "$1" -j"$2"' build "$src/$src_top" "$ncpu" || rc=$?
	[ "$rc" -eq 0 ] || { tail -15 "$work/$1.out" "$work/$1.err" >&2; fail "$1: make tinyconfig && make -j$ncpu failed (status $rc)"; }
}
# dcpu T0 T1: daemon CPU seconds between two cpu_ticks readings
dcpu() { awk -v t=$(($2 - $1)) -v h="$clk_tck" 'BEGIN { printf "%.2f", t / h }'; }

# rec NAME RUN [DAEMON_CPU]: the other CPU of a timed NAME, kept by run
declare -A OT=()
rec() { OT[$1.$2]=$(other "$1" "$(cpu "$1")" "${3:-0}"); }
# wo ARRAY NAME RUN: "wall (other CPU)" of a run, or – when it did not run
wo() {
	local -n a=$1
	if [ -n "${a[$3]:-}" ]; then printf '%s (%s)' "${a[$3]}" "${OT[$2.$3]:-?}"; else printf '–'; fi
}
declare -a S_TAR_NONE S_TAR_FG S_G1_NONE S_G2_NONE S_G1_C S_G2_C S_G1_W S_G2_W B_NONE B_FG
declare -a D_TAR D_G1_W D_G2_W D_G1_C D_G2_C D_B S_HWM_W S_HWM_C B_HWM
source_round() {
	local r=$1 t0 t1
	say "source run $r/$sruns: no daemon: tar xf, grep -r, grep -r"
	mount_tmpfs "$src" size=4g
	untar tar_none
	S_TAR_NONE[r]=$(wall tar_none)
	rec tar_none "$r"
	grep_tree g1_none
	grep_tree g2_none
	S_G1_NONE[r]=$(wall g1_none) S_G2_NONE[r]=$(wall g2_none)
	rec g1_none "$r"
	rec g2_none "$r"
	umount_tmpfs "$src"

	say "source run $r/$sruns: fanguard, tree written while it runs: tar xf, grep -r, grep -r"
	mount_tmpfs "$src" size=4g
	write_config "$work/src.toml" "$src"
	start_daemon "$work/src.toml"
	status_to "$work/st.w0.$r.json"
	t0=$(cpu_ticks "$dpid")
	untar tar_fg
	t1=$(cpu_ticks "$dpid")
	S_TAR_FG[r]=$(wall tar_fg) D_TAR[r]=$(dcpu "$t0" "$t1")
	rec tar_fg "$r" "${D_TAR[r]}"
	status_to "$work/st.wtar.$r.json"
	t0=$(cpu_ticks "$dpid")
	grep_tree g1_w
	t1=$(cpu_ticks "$dpid")
	S_G1_W[r]=$(wall g1_w) D_G1_W[r]=$(dcpu "$t0" "$t1")
	rec g1_w "$r" "${D_G1_W[r]}"
	status_to "$work/st.wg1.$r.json"
	t0=$(cpu_ticks "$dpid")
	grep_tree g2_w
	t1=$(cpu_ticks "$dpid")
	S_G2_W[r]=$(wall g2_w) D_G2_W[r]=$(dcpu "$t0" "$t1")
	rec g2_w "$r" "${D_G2_W[r]}"
	status_to "$work/st.wg2.$r.json"
	stop_daemon
	S_HWM_W[r]=$hwm_kb
	umount_tmpfs "$src"

	say "source run $r/$sruns: fanguard, tree written before it started: grep -r, grep -r"
	mount_tmpfs "$src" size=4g
	untar tar_pre # not reported: a tar xf with no daemon, as tar_none
	start_daemon "$work/src.toml"
	status_to "$work/st.c0.$r.json"
	t0=$(cpu_ticks "$dpid")
	grep_tree g1_c
	t1=$(cpu_ticks "$dpid")
	S_G1_C[r]=$(wall g1_c) D_G1_C[r]=$(dcpu "$t0" "$t1")
	rec g1_c "$r" "${D_G1_C[r]}"
	status_to "$work/st.cg1.$r.json"
	t0=$(cpu_ticks "$dpid")
	grep_tree g2_c
	t1=$(cpu_ticks "$dpid")
	S_G2_C[r]=$(wall g2_c) D_G2_C[r]=$(dcpu "$t0" "$t1")
	rec g2_c "$r" "${D_G2_C[r]}"
	status_to "$work/st.cg2.$r.json"
	stop_daemon
	S_HWM_C[r]=$hwm_kb
	umount_tmpfs "$src"
}
build_round() {
	local r=$1 t0 t1
	say "build run $r/$bruns: no daemon: tar xf, make tinyconfig && make -j$ncpu"
	mount_tmpfs "$src" size=4g
	untar bt_none
	build_tree build_none
	B_NONE[r]=$(wall build_none)
	rec build_none "$r"
	umount_tmpfs "$src"

	say "build run $r/$bruns: fanguard: tar xf, make tinyconfig && make -j$ncpu"
	mount_tmpfs "$src" size=4g
	write_config "$work/src.toml" "$src"
	start_daemon "$work/src.toml"
	untar bt_fg
	status_to "$work/st.b0.$r.json"
	t0=$(cpu_ticks "$dpid")
	build_tree build_fg
	t1=$(cpu_ticks "$dpid")
	B_FG[r]=$(wall build_fg) D_B[r]=$(dcpu "$t0" "$t1")
	rec build_fg "$r" "${D_B[r]}"
	status_to "$work/st.b1.$r.json"
	stop_daemon
	B_HWM[r]=$hwm_kb
	umount_tmpfs "$src"
}
run_source() {
	local r n
	prepare_source
	n=0
	wants source && n=$sruns
	wants build && [ "$bruns" -gt "$n" ] && n=$bruns
	for r in $(seq "$n"); do
		if wants source && [ "$r" -le "$sruns" ]; then source_round "$r"; fi
		if wants build && [ "$r" -le "$bruns" ]; then build_round "$r"; fi
	done
}

# phase_row LABEL ARRAY_OF_TIMES ARRAY_OF_DAEMON_CPU AFTER BEFORE: the
# daemon's counters over one phase of the run with the median time
phase_row() {
	local r a b
	r=$(medrun "$2")
	local -n dc=$3
	a=$work/st.$4.$r.json b=$work/st.$5.$r.json
	printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$1" "$r" "${dc[r]}" \
		"$(cdelta events "$a" "$b")" "$(cdelta scans "$a" "$b")" \
		"$(awk -v v="$(cdelta bytes_scanned "$a" "$b")" 'BEGIN { if (v == "n/a") print v; else printf "%.1f", v / 1048576 }')" \
		"$(cdelta kernel_marks_added "$a" "$b")" "$(cdelta cache_hits "$a" "$b")" \
		"$(awk -v x="$(cdelta timed_out "$a" "$b")" -v y="$(cdelta overloaded "$a" "$b")" 'BEGIN { if (x == "n/a" || y == "n/a") print "n/a"; else print x + y }')" "$(cdelta detections "$a" "$b")"
}
# lat_of FILE: "p50 / p99 / max" decision latency of a status file
lat_of() { printf '%s / %s / %s' "$(us "$(jn "$1" .latency.p50_us)")" "$(us "$(jn "$1" .latency.p99_us)")" "$(us "$(jn "$1" .latency.max_us)")"; }

report_source() {
	local r_tar r_g1c r_g1w r_g2c r_g2w r_b m r
	echo "## Source tree: linux-source-6.1"
	echo
	echo "- tree: Debian linux-source-6.1 $src_version, $(na "${tree_files:-}") files, $(mib "${tree_bytes:-0}"); $src_xz decompressed once to $src_tar (outside the tmpfs; read from the page cache), so \`tar xf\` measures no xz; each phase extracts it onto a fresh tmpfs"
	echo "- grep: \`LC_ALL=C grep -r -F -q zzfanguard-nomatch-zz\` over the tree: nothing matches, so grep reads every file to its end"
	echo "- build: \`make tinyconfig && make -j$ncpu\` in a tree extracted just before (with fanguard: extracted while the same daemon ran)"
	echo "- runs: tar and grep $(wants source && echo "$sruns" || echo 0), build $(wants build && echo "$bruns" || echo 0), interleaved; a round is: no daemon, then fanguard with the tree written while it ran, then fanguard with the tree written before it started (then the build, without and with fanguard); every fanguard phase has a fresh daemon and a fresh tmpfs. Wall time median (min–max), in seconds."
	echo
	echo "| workload | no daemon (s) | fanguard (s) | ratio | target |"
	echo "| --- | ---: | ---: | ---: | ---: |"
	if wants source; then
		r_tar=$(ratio "$(med S_TAR_FG)" "$(med S_TAR_NONE)")
		r_g1c=$(ratio "$(med S_G1_C)" "$(med S_G1_NONE)") r_g1w=$(ratio "$(med S_G1_W)" "$(med S_G1_NONE)")
		r_g2c=$(ratio "$(med S_G2_C)" "$(med S_G2_NONE)") r_g2w=$(ratio "$(med S_G2_W)" "$(med S_G2_NONE)")
		echo "| \`tar xf\` (under the daemon) | $(medmm S_TAR_NONE) | $(medmm S_TAR_FG) | $r_tar | ≤ 1.3 |"
		echo "| first \`grep -r\`, tree written before the daemon started | $(medmm S_G1_NONE) | $(medmm S_G1_C) | $r_g1c | ≤ 2 |"
		echo "| first \`grep -r\`, tree written while the daemon ran | $(medmm S_G1_NONE) | $(medmm S_G1_W) | $r_g1w | ≤ 1.2 |"
		echo "| second \`grep -r\` (tree written before) | $(medmm S_G2_NONE) | $(medmm S_G2_C) | $r_g2c | ≤ 1.05 |"
		echo "| second \`grep -r\` (tree written while it ran) | $(medmm S_G2_NONE) | $(medmm S_G2_W) | $r_g2w | ≤ 1.05 |"
		target "\`tar xf\` of linux-source-6.1" "$r_tar" "≤ 1.3" "$(le "$r_tar" 1.3)"
		target "first \`grep -r\` (tree written before the daemon)" "$r_g1c" "≤ 2" "$(le "$r_g1c" 2)"
		target "first \`grep -r\` (tree written while it ran)" "$r_g1w" "≤ 1.2" "$(le "$r_g1w" 1.2)"
		target "second \`grep -r\` (tree written before)" "$r_g2c" "≤ 1.05" "$(le "$r_g2c" 1.05)"
		target "second \`grep -r\` (tree written while it ran)" "$r_g2w" "≤ 1.05" "$(le "$r_g2w" 1.05)"
	fi
	if wants build; then
		r_b=$(ratio "$(med B_FG)" "$(med B_NONE)")
		echo "| \`make tinyconfig && make -j$ncpu\` | $(medmm B_NONE) | $(medmm B_FG) | $r_b | ≤ 1.05 |"
		target "\`make tinyconfig && make -j$ncpu\`" "$r_b" "≤ 1.05" "$(le "$r_b" 1.05)"
	fi
	echo
	echo "The daemon over each phase of the fanguard run with the median time (counters of \`fanguard status\` before and after; unscanned: opens answered by on_timeout or on_overload):"
	echo
	echo "| phase | run | daemon CPU (s) | events | scans | MiB scanned | marks added | cache hits | unscanned | detections |"
	echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
	if wants source; then
		phase_row "\`tar xf\`" S_TAR_FG D_TAR wtar w0
		phase_row "first \`grep -r\`, written while it ran" S_G1_W D_G1_W wg1 wtar
		phase_row "second \`grep -r\`, written while it ran" S_G2_W D_G2_W wg2 wg1
		phase_row "first \`grep -r\`, written before" S_G1_C D_G1_C cg1 c0
		phase_row "second \`grep -r\`, written before" S_G2_C D_G2_C cg2 cg1
	fi
	wants build && phase_row "build (after a \`tar xf\` under the same daemon)" B_FG D_B b1 b0
	echo
	echo "Decision latency (read to answer, p50 / p99 / max over the daemon's life) of those runs, and its peak RSS (VmHWM):"
	echo
	if wants source; then
		r=$(medrun S_TAR_FG)
		echo "- tree written while it ran (run $r): $(lat_of "$work/st.wg2.$r.json"); scan p50 $(us "$(jn "$work/st.wg2.$r.json" .scan_latency.p50_us)"); VmHWM $(kib_mib "${S_HWM_W[r]}")"
		r=$(medrun S_G1_C)
		echo "- tree written before (run $r): $(lat_of "$work/st.cg2.$r.json"); scan p50 $(us "$(jn "$work/st.cg2.$r.json" .scan_latency.p50_us)"); VmHWM $(kib_mib "${S_HWM_C[r]}")"
	fi
	if wants build; then
		r=$(medrun B_FG)
		echo "- build (run $r): $(lat_of "$work/st.b1.$r.json"); scan p50 $(us "$(jn "$work/st.b1.$r.json" .scan_latency.p50_us)"); VmHWM $(kib_mib "${B_HWM[r]}")"
	fi
	echo
	echo "Wall times of each run, in seconds; in parentheses, the CPU time the whole machine spent meanwhile beyond the workload's own processes and the daemon (/proc/stat, steal included): well above 0, something else was competing."
	echo
	echo "| run | tar none | tar fanguard | grep 1 none | grep 1 before | grep 1 while | grep 2 none | grep 2 before | grep 2 while | build none | build fanguard |"
	echo "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
	m=$sruns
	wants source || m=0
	wants build && [ "$bruns" -gt "$m" ] && m=$bruns
	for r in $(seq "$m"); do
		printf '| %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$r" "$(wo S_TAR_NONE tar_none "$r")" "$(wo S_TAR_FG tar_fg "$r")" \
			"$(wo S_G1_NONE g1_none "$r")" "$(wo S_G1_C g1_c "$r")" "$(wo S_G1_W g1_w "$r")" "$(wo S_G2_NONE g2_none "$r")" \
			"$(wo S_G2_C g2_c "$r")" "$(wo S_G2_W g2_w "$r")" "$(wo B_NONE build_none "$r")" "$(wo B_FG build_fg "$r")"
	done
	echo
}

# ================================================================ latency
lat=$work/lat
lat_size=512 # bytes of text per file
# kv KEY FILE: a value of fgopen's key=value line
kv() { tr ' ' '\n' <"$2" | awk -F= -v k="$1" '$1 == k { print $2 }'; }
ns_us() { awk -v n="$1" 'BEGIN { printf "%.1f", n / 1000 }'; }
declare -a L_NONE50 L_NONE99 L_NONE90 L_NONEMAX L_FG50 L_FG90 L_FG99 L_FGMAX
lat_open() { # NAME: one opener over the files, timed
	timed "$1" "$fgopen" open "$lat" "$lfiles" 1 || { cat "$work/$1.err" >&2; fail "$1: fgopen open failed"; }
	[ "$(kv denied "$work/$1.out")" = 0 ] || fail "$1: $(kv denied "$work/$1.out") opens denied"
}
lat_round() {
	local r=$1
	say "latency run $r/$sruns: no daemon: $lfiles first opens"
	mount_tmpfs "$lat" "size=$((lfiles * 8 / 1024 + 64))m"
	"$fgopen" create "$lat" "$lfiles" "$lat_size" || fail "fgopen create failed"
	lat_open lat_none
	L_NONE50[r]=$(kv p50_ns "$work/lat_none.out") L_NONE90[r]=$(kv p90_ns "$work/lat_none.out")
	L_NONE99[r]=$(kv p99_ns "$work/lat_none.out") L_NONEMAX[r]=$(kv max_ns "$work/lat_none.out")
	umount_tmpfs "$lat"

	say "latency run $r/$sruns: fanguard: $lfiles first opens"
	mount_tmpfs "$lat" "size=$((lfiles * 8 / 1024 + 64))m"
	"$fgopen" create "$lat" "$lfiles" "$lat_size" || fail "fgopen create failed"
	write_config "$work/lat.toml" "$lat"
	start_daemon "$work/lat.toml"
	lat_open lat_fg
	L_FG50[r]=$(kv p50_ns "$work/lat_fg.out") L_FG90[r]=$(kv p90_ns "$work/lat_fg.out")
	L_FG99[r]=$(kv p99_ns "$work/lat_fg.out") L_FGMAX[r]=$(kv max_ns "$work/lat_fg.out")
	status_to "$work/st.lat.$r.json"
	curl -sf --max-time 10 --unix-socket "$work/control.sock" http://fanguard/metrics >"$work/metrics.lat.$r" || : >"$work/metrics.lat.$r"
	stop_daemon
	umount_tmpfs "$lat"
}
run_latency() {
	local r
	for r in $(seq "$sruns"); do lat_round "$r"; done
}
# histogram FILE: the decision latency histogram of a /metrics scrape, as
# "≤ BOUND: COUNT" of the non-empty buckets
histogram() {
	awk '/^fanguard_decision_latency_seconds_bucket/ {
		le = $0; sub(/.*le="/, "", le); sub(/".*/, "", le)
		n = $NF; d = n - prev; prev = n
		if (d > 0) {
			if (le == "+Inf") b = "more"
			else { u = le * 1e6; b = (u >= 1e6) ? sprintf("≤ %g s", u / 1e6) : (u >= 1e3) ? sprintf("≤ %g ms", u / 1e3) : sprintf("≤ %g µs", u) }
			printf "%s%s: %d", sep, b, d; sep = ", "
		} }' "$1"
}
report_latency() {
	local r s p50
	r=$(medrun L_FG50)
	s=$work/st.lat.$r.json
	p50=$(ns_us "$(med L_FG50)")
	echo "## First open of a small file"
	echo
	echo "- $lfiles files of $lat_size bytes of text (a C comment line, not executable), created on a fresh tmpfs with no daemon; then, with fanguard, a fresh daemon is started; then one process (test/bench/fgopen.c) opens each file once, one after another, and times each open() with CLOCK_MONOTONIC. $sruns runs, interleaved; median of the runs' percentiles, in µs (min–max of the runs in parentheses)."
	echo
	echo "| open() | p50 (µs) | p90 (µs) | p99 (µs) | max (µs) |"
	echo "| --- | ---: | ---: | ---: | ---: |"
	mm() { local -n a=$1; printf '%s (%s–%s)' "$(ns_us "$(med "$1")")" "$(ns_us "$(printf '%s\n' "${a[@]}" | sort -n | head -1)")" "$(ns_us "$(printf '%s\n' "${a[@]}" | sort -n | tail -1)")"; }
	echo "| no daemon (the floor) | $(mm L_NONE50) | $(mm L_NONE90) | $(mm L_NONE99) | $(mm L_NONEMAX) |"
	echo "| fanguard, first open | $(mm L_FG50) | $(mm L_FG90) | $(mm L_FG99) | $(mm L_FGMAX) |"
	echo
	echo "The daemon's own figures (\`fanguard status\`, run $r, whose open p50 is the median): decision latency (read to answer) p50 / p99 / max $(lat_of "$s") over $(na "$(jn "$s" .latency.count)") decisions; scans $(na "$(jn "$s" .counters.scans)"), scan time p50 $(us "$(jn "$s" .scan_latency.p50_us)"), p99 $(us "$(jn "$s" .scan_latency.p99_us)")."
	if [ -s "$work/metrics.lat.$r" ]; then
		echo "Its decision latency histogram (GET /metrics, \`fanguard_decision_latency_seconds\`): $(histogram "$work/metrics.lat.$r")."
	fi
	echo
	target "first open of a small file, p50" "$p50 µs" "≤ 50 µs" "$(le "$p50" 50)"
}

# ================================================================ rss
rssd=$work/rss
# smaps_split PID: the daemon's resident memory by kind of mapping, in kB,
# as "KIND<TAB>kB" lines. Go places its heap arenas at a random base below
# the mmap area (64 MiB reservations); glibc's per-thread malloc arenas,
# which libyara uses from the cgo threads, and thread stacks are mmaps near
# the top (0x7f…); the anonymous mapping right after the binary is its BSS.
smaps_split() {
	awk '$1 ~ /^[0-9a-f]+-[0-9a-f]+$/ {
		split($1, a, "-"); p = $6
		if (p == "[heap]") c = "C heap, brk (glibc main arena)"
		else if (p == "[stack]") c = "main thread stack"
		else if (substr(p, 1, 1) == "/") c = "mapped files (fanguard binary, libyara and other libraries)"
		else if (substr(p, 1, 1) == "[") c = "kernel ([vdso], [vvar])"
		else if (a[1] == prev_end && prev_file) c = "fanguard binary BSS (Go runtime and package globals)"
		else if (length(a[1]) == 12 && a[1] >= "7f0000000000") c = "anonymous, mmap area (glibc malloc arenas of cgo threads: libyara; thread stacks)"
		else c = "anonymous, below the mmap area (Go heap arenas and goroutine stacks, Go runtime metadata)"
		prev_end = a[2]; prev_file = (substr(p, 1, 1) == "/")
		next
	}
	$1 == "Rss:" { k[c] += $2 }
	END { for (c in k) printf "%s\t%d\n", c, k[c] }' "/proc/$1/smaps" | sort -t"$(printf '\t')" -k2,2nr
}
# gcfield N FILE: of a gctrace line "A->B->C MB, D MB goal": N = 1..3 the
# heap sizes, 4 the goal (MB)
gcfield() {
	[ -s "$2" ] || return 0
	awk -v n="$1" '{ if (match($0, /[0-9]+->[0-9]+->[0-9]+ MB, [0-9]+ MB goal/)) {
		s = substr($0, RSTART, RLENGTH); gsub(/->| MB, | MB goal/, " ", s); split(s, f, " "); print f[n] } }' "$2"
}
run_rss() {
	say "rss: creating $cfiles files of 1 byte (no daemon)"
	mount_tmpfs "$rssd" "size=$((cfiles * 5 / 1024 + 1024))m,nr_inodes=$((cfiles + cfiles / 500 + 10000))"
	timed rss_create "$fgopen" create "$rssd" "$cfiles" 1 || { cat "$work/rss_create.err" >&2; fail "fgopen create of $cfiles files failed"; }
	write_config "$work/rss.toml" "$rssd"
	start_daemon "$work/rss.toml" GODEBUG=gctrace=1
	sleep 1
	rss_start=$(vm VmRSS) hwm_start=$(vm VmHWM)
	grep -a '^gc [0-9]' "$work/daemon.log" | tail -1 >"$work/rss.gc0" || true
	status_to "$work/st.rss0.json"
	say "rss: opening each of them once under the daemon ($ncpu openers)"
	timed rss_open "$fgopen" open "$rssd" "$cfiles" "$ncpu" || { cat "$work/rss_open.err" >&2; fail "fgopen open of $cfiles files failed"; }
	sleep 2
	status_to "$work/st.rss1.json"
	rss_full=$(vm VmRSS) hwm_full=$(vm VmHWM)
	rss_anon=$(vm RssAnon) rss_file=$(vm RssFile)
	smaps_split "$dpid" >"$work/rss.smaps"
	grep -a '^gc [0-9]' "$work/daemon.log" | tail -1 >"$work/rss.gc" || true
	cp "/proc/$dpid/smaps_rollup" "$work/rss.rollup"
	stop_daemon
	say "rss: unmounting the $cfiles files"
	umount_tmpfs "$rssd"
}
report_rss() {
	local s=$work/st.rss1.json entries limit ev per gcl over
	entries=$(jn "$s" .cache.entries)
	limit=${daemon_cache:-}
	ev=$(jn "$s" .counters.cache_evictions)
	per=$(awk -v a="$rss_full" -v b="$rss_start" -v n="${entries:-0}" 'BEGIN { if (n > 0) printf "%.0f", (a - b) * 1024 / n; else print "n/a" }')
	gcl=$(cat "$work/rss.gc")
	echo "## Daemon memory with a full verdict cache"
	echo
	echo "- $cfiles files of 1 byte in directories of 1000, created on a fresh tmpfs with no daemon (${cfiles} inodes, $(wall rss_create) s); then a fresh daemon (shipped + ReversingLabs rules, cache.entries default) was started and each file opened once by $ncpu openers ($(wall rss_open) s: $(awk -v n="$cfiles" -v t="$(wall rss_open)" 'BEGIN { printf "%.0f", n / t }') first opens/s)"
	echo "- verdict cache: $(na "$entries") entries of a limit of $(na "$limit"), $(na "$ev") evicted; $(na "$(jn "$s" .counters.scans)") scans, $(na "$(jn "$s" .counters.cache_misses)") misses, $(na "$(jn "$s" .counters.kernel_marks_added)") kernel marks added"
	echo
	echo "| daemon (/proc/PID/status) | VmRSS | VmHWM |"
	echo "| --- | ---: | ---: |"
	echo "| ready: rules loaded, cache empty | $(kib_mib "$rss_start") | $(kib_mib "$hwm_start") |"
	echo "| after the $cfiles first opens: $(na "$entries") cache entries | $(kib_mib "$rss_full") | $(kib_mib "$hwm_full") |"
	echo
	echo "- growth per cache entry: (VmRSS full − VmRSS ready) / entries = $per bytes"
	echo "- resident at full cache: RssAnon $(kib_mib "$rss_anon"), RssFile $(kib_mib "$rss_file"); by mapping (/proc/PID/smaps):"
	echo
	echo "| mapping | resident |"
	echo "| --- | ---: |"
	while IFS=$'\t' read -r kind kb; do
		[ "$kb" -gt 0 ] && echo "| $kind | $(kib_mib "$kb") |"
	done <"$work/rss.smaps"
	echo
	if [ -n "$gcl" ]; then
		echo "- Go heap from the runtime (GODEBUG=gctrace=1, the last collection before the reading): \`$gcl\` (heap at start → at end of the cycle → live after it, the goal for the next)"
	fi
	# gctrace: "A->B->C MB, D MB goal": heap when the cycle began, when it
	# ended, live after it; the goal (the heap size of the next collection)
	live0=$(gcfield 3 "$work/rss.gc0") live=$(gcfield 3 "$work/rss.gc") goal=$(gcfield 4 "$work/rss.gc")
	if [ "$(le "$rss_full" $((100 * 1024)))" = 0 ]; then
		echo "- above 100 MiB: the daemon grew by $(kib_mib $((rss_full - rss_start))) from ready to a full cache of $(na "$entries") entries, $per bytes per entry resident (daemon/cache.go: a 40-byte record and its index slots, off the Go heap, about 48 bytes)."
		if [ -n "$live" ]; then
			echo "  The Go heap held $live MB of live objects after the last collection ($(na "$live0") MB when ready: $(awk -v a="$live" -v b="${live0:-0}" -v n="${entries:-0}" 'BEGIN { if (n > 0) printf "%.0f", (a - b) * 1e6 / n; else print "n/a" }') live bytes per entry), with a goal of $(na "$goal") MB: with the default GOGC=100 the heap grows to twice its live data before the next collection, and the scavenger returns the pages it reached to the system only slowly."
			local cache_mb room_mib
			cache_mb=$(awk -v a="$live" -v b="${live0:-0}" 'BEGIN { printf "%.0f", a - b }')
			room_mib=$(awk -v r="$rss_start" 'BEGIN { printf "%.0f", (100 * 1024 - r) / 1024 }')
			if awk -v c="$cache_mb" -v m="$room_mib" 'BEGIN { exit !(c * 1e6 > m * 1048576) }'; then
				echo "  So the cache's live data alone (about $cache_mb MB) is more than what 100 MiB leaves beside the daemon when ready ($room_mib MiB): a memory limit (GOMEMLIMIT) would trim the collector's headroom, not that."
			else
				echo "  The cache's live data (about $cache_mb MB) would fit in what 100 MiB leaves beside the daemon when ready ($room_mib MiB): a memory limit (GOMEMLIMIT) that trims the collector's headroom may be enough, at the cost of more collections."
			fi
			echo "  At the resident cost measured here, $(awk -v r="$rss_start" -v p="$per" 'BEGIN { if (p + 0 > 0) printf "%.0f", (100 * 1024 - r) * 1024 / p; else print "n/a" }') entries fit in 100 MiB with these rules; a full $(na "$entries") takes about $(awk -v r="$rss_start" -v n="${entries:-0}" 'BEGIN { if (n > 0) printf "%.0f", (100 * 1024 - r) * 1024 / n; else print "n/a" }') bytes resident per entry, collector's headroom included, or a cache outside the Go heap."
		fi
	fi
	echo
	target "daemon VmRSS with a full cache ($(na "$entries") entries)" "$(kib_mib "$rss_full")" "≤ 100 MiB" "$(le "$rss_full" $((100 * 1024)))"
}

# ================================================================ run
order=()
for g in corpus source build latency rss; do wants "$g" && order+=("$g"); done
say "workloads: ${order[*]}; load average $load_start"
if wants corpus; then run_corpus; fi
if wants source || wants build; then run_source; fi
if wants latency; then run_latency; fi
if wants rss; then run_rss; fi

# ================================================================ report
version=$("$bin" version 2>/dev/null | head -1 || true)
load_end=$(cut -d' ' -f1 /proc/loadavg)
took=$(($(date +%s) - t_start))
{
	if wants corpus; then report_corpus; fi
	if wants source || wants build; then report_source; fi
	if wants latency; then report_latency; fi
	if wants rss; then report_rss; fi
} >"$work/sections.md"
{
	echo "# fanguard benchmarks"
	echo
	echo "Written by \`make bench\` (test/bench/bench.sh; see test/bench/README.md)."
	echo
	echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ); workloads: ${order[*]}; the whole run took $((took / 60)) min $((took % 60)) s"
	echo "- machine: $ncpu CPUs (nproc), kernel $(uname -r), $(awk '/MemTotal/ { printf "%.1f GiB RAM", $2 / 1048576 }' /proc/meminfo)"
	echo "- fanguard: ${version:-?} ($bin), daemon with $(na "${daemon_workers:-}") workers, budget $budget, other settings default (cache.entries $(na "${daemon_cache:-}")); each daemon protects only a tmpfs mounted for it"
	echo "- rules: ${#rule_files[@]} files, $rule_count rules by count of \`rule\` lines (the daemon reports $(na "${daemon_rules:-}")), $(mib "$rule_bytes") of source, from configs/rules.d and $((${#rule_dirs[@]} - 1)) directories of $rules_root$(wants corpus && echo "; yara $(yara --version)")"
	echo "- load average (1 min) at start / end: $load_start / $load_end$(awk -v l="$load_start" -v e="$load_end" -v n="$ncpu" 'BEGIN { if (l > n / 4 || e > n / 2 + 1) print " (other work was running: wall times are noisy, CPU times less so)" }')"
	echo
	echo "## Targets"
	echo
	echo "The figures the issue asks for (ratios to no daemon in the same run)."
	echo
	echo "| target | measured | limit | verdict |"
	echo "| --- | ---: | ---: | --- |"
	printf '%s\n' "${TARGETS[@]}"
	echo
	cat "$work/sections.md"
} >"$work/report.md"

cat "$work/report.md"
cp "$work/report.md" "$out"
say "written to $out (took $((took / 60)) min $((took % 60)) s)"
exit 0
}
