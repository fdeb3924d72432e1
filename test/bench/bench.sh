#!/usr/bin/env bash
# bench.sh: what fanguard costs, side by side with no scanner and with the
# yara command line, on the same corpus and the same rules, in one run.
# Prints a markdown table and writes it to BENCHMARKS.md at the repo root.
# Needs root (mounts a tmpfs, runs the daemon). See test/bench/README.md.
#
# Safety: the daemon protects ONLY the tmpfs this script mounts. It is run
# in the background with its pid kept; on any exit the trap SIGKILLs it (the
# kernel then allows every held open at once) and unmounts the tmpfs.
set -euo pipefail

usage() {
	cat <<EOF
usage: $0 [-n FILES] [-m MIB] [-k RUNS] [-r RULES_ROOT] [-b BINARY] [-t BUDGET] [-o FILE]

Measures, in one run, on the same corpus (a tmpfs) and the same rules:
  (a) none   every corpus file read once by \$(nproc) parallel cat, no daemon
  (b) cold   the same read with a fresh fanguard daemon protecting the corpus
  (c) warm   the same read again on that daemon, right after (b)
  (d) yara   yara -r -p \$(nproc) RULE_FILES... CORPUS (compile included)
  (e) scan   fanguard scan --rules-dir ... CORPUS
each RUNS times (round robin), and reports median and min-max wall times,
ratios, the daemon's counters, decision latency, peak RSS and start-up time,
and whether the targets hold (warm/none <= 1.10, cold/yara <= 1.25, max
decision latency <= budget).

  -n FILES       corpus size in files (default 10000)
  -m MIB         corpus size in MiB, approximately (default 400)
                 Files come from /usr/lib and /usr/bin: regular, non-empty,
                 at most 16 MiB, sorted by path, sampled evenly (the same
                 machine gives the same corpus on every run).
  -k RUNS        runs of each workload, median reported (default 3, >= 1)
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
files=10000 mib=400 runs=3 budget=5s
rules_root= bin= out=
while getopts "n:m:k:r:b:t:o:h" opt; do
	case $opt in
	n) files=$OPTARG ;; m) mib=$OPTARG ;; k) runs=$OPTARG ;;
	r) rules_root=$OPTARG ;; b) bin=$OPTARG ;; t) budget=$OPTARG ;; o) out=$OPTARG ;;
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
budget_us=$(awk -v d="$budget" 'BEGIN {
	u["ms"]=1e3; u["s"]=1e6; u["m"]=6e7; u["h"]=3.6e9
	if (match(d, /^[0-9]+(\.[0-9]+)?/) && (substr(d, RLENGTH + 1) in u)) printf "%d", substr(d, 1, RLENGTH) * u[substr(d, RLENGTH + 1)]
}')
[ -n "$budget_us" ] || die2 "-t wants a duration such as 250ms, 5s or 1m, not '$budget'"

# Paths given on the command line are relative to where we were started;
# everything else is relative to the repo root.
abspath() { case $1 in /*) printf '%s\n' "$1" ;; *) printf '%s\n' "$PWD/$1" ;; esac; }
bin=$(abspath "${bin:-$root/bin/fanguard}")
out=$(abspath "${out:-$root/BENCHMARKS.md}")
rules_root=${rules_root:-$root/../shared/rules/reversinglabs/yara}
[ -d "$rules_root" ] || die2 "rules root $rules_root is missing (the ReversingLabs rule set is expected at ../shared/rules/reversinglabs/yara from the repo root; -r points elsewhere)"
rules_root=$(cd "$rules_root" && pwd)
cd "$root"

[ "$(id -u)" = 0 ] || die2 "needs root (mounts a tmpfs, runs the daemon)"
[ -x "$bin" ] || die2 "$bin not found or not executable: run make build, or pass -b"
if ! command -v yara >/dev/null; then
	echo "bench: yara not found, installing it (apt-get install -y yara)" >&2
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq yara >&2 || die2 "could not install yara"
fi
for c in yara findmnt mountpoint tar; do command -v "$c" >/dev/null || die2 "$c not found"; done

ncpu=$(nproc)
load_start=$(cut -d' ' -f1 /proc/loadavg)
clk_tck=$(getconf CLK_TCK)

# ---------------------------------------------------------------- cleanup
work=$(mktemp -d /tmp/fanguard-bench.XXXXXX)
corpus=$work/corpus
dpid=
cleanup() {
	local rc=$?
	if [ -n "$dpid" ]; then
		kill -KILL "$dpid" 2>/dev/null || true
		wait "$dpid" 2>/dev/null || true
	fi
	if mountpoint -q "$corpus" 2>/dev/null; then umount "$corpus" || umount -l "$corpus" || true; fi
	rm -rf "$work"
	exit "$rc"
}
trap cleanup EXIT
trap 'echo "bench: line $LINENO failed: $BASH_COMMAND" >&2' ERR
trap 'exit 130' INT
trap 'exit 143' TERM
fail() { echo "bench: $*" >&2; exit 1; }
say() { echo "bench: $*" >&2; }

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

# ---------------------------------------------------------------- corpus
mkdir "$corpus"
mount -t tmpfs -o "size=$((mib * 2 + 256))m,mode=0755" fanguard-bench "$corpus"
[ "$(findmnt -n -o FSTYPE --mountpoint "$corpus")" = tmpfs ] || fail "$corpus is not a tmpfs mount: refusing to go on"

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

cat >"$work/fanguard.toml" <<TOML
# written by test/bench/bench.sh; every other key keeps its default
budget = "$budget"
[rules]
dirs = ["$root/configs/rules.d"] # replaced by --rules-dir
[protect]
paths = ["$corpus"]
TOML

# ---------------------------------------------------------------- helpers
TIMEFORMAT='%3R %3U %3S'
# timed NAME CMD...: runs CMD with stdout in $work/NAME.out and stderr in
# $work/NAME.err; "wall user sys" (seconds) goes to $work/NAME.time. Returns
# CMD's status.
# $work/NAME.busy: CPU time the whole machine spent meanwhile (user, nice,
# system, irq, softirq, steal; all CPUs), to tell other load from ours.
busy_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat; }
timed() {
	local name=$1 rc=0 b0
	shift
	b0=$(busy_ticks)
	{ time "$@" >"$work/$name.out" 2>"$work/$name.err"; } 2>"$work/$name.time" || rc=$?
	awk -v a="$b0" -v b="$(busy_ticks)" -v h="$clk_tck" 'BEGIN { printf "%.2f\n", (b - a) / h }' >"$work/$name.busy"
	return $rc
}
# other NAME OURS...: machine CPU time during NAME minus our processes' CPU
other() {
	local name=$1
	shift
	awk -v b="$(cat "$work/$name.busy")" -v o="$*" 'BEGIN { n = split(o, a, " "); for (i = 1; i <= n; i++) b -= a[i]; printf "%.2f", b < 0 ? 0 : b }'
}
read_corpus() { find "$corpus" -type f -print0 | xargs -0 -P "$ncpu" -n 50 cat >/dev/null; }
# jget KEY JSON: a number from a flat JSON object, or nothing.
jget() { printf '%s\n' "$2" | awk -v k="\"$1\"" '{ i = index($0, k ":"); if (!i) exit; v = substr($0, i + length(k) + 1); sub(/^ */, "", v); if (match(v, /^-?[0-9][0-9.eE+-]*/)) print substr(v, 1, RLENGTH); exit }'; }
# logline WORD: the JSON of the last daemon log line with TAB WORD TAB.
logline() { awk -F'\t' -v w="$1" '$3 == w { l = $0 } END { if (l != "") { sub(/^.*\t/, "", l); print l } }' "$work/daemon.log"; }
cpu_ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'; }
# a read pass; opens the daemon denied (EPERM) are counted, any other
# failure is fatal.
read_pass() {
	local name=$1 rc=0
	timed "$name" read_corpus || rc=$?
	denied=$(grep -c 'Operation not permitted' "$work/$name.err" || true)
	if [ "$rc" -ne 0 ] && grep -qv 'Operation not permitted' "$work/$name.err"; then
		head -5 "$work/$name.err" >&2
		fail "$name: readers failed (status $rc)"
	fi
	if [ "$rc" -ne 0 ] && [ "$denied" -eq 0 ]; then fail "$name: readers failed (status $rc)"; fi
	return 0
}
wall() { cut -d' ' -f1 "$work/$1.time"; }
cpu() { awk '{ print $2 + $3 }' "$work/$1.time"; }

start_daemon() {
	local t0 t1 ready_ns ts
	: >"$work/daemon.log"
	t0=$(date +%s%N)
	"$bin" daemon --config "$work/fanguard.toml" "${rd_args[@]}" 2>"$work/daemon.log" &
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

stop_daemon() {
	local rc=0 i
	hwm_kb=$(awk '/^VmHWM:/ { print $2 }' "/proc/$dpid/status")
	kill -TERM "$dpid"
	for i in $(seq $((budget_us / 100000 + 300))); do
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

# ---------------------------------------------------------------- runs
say "compile cost: yarac over ${#rule_files[@]} rule files"
timed yarac yarac "${rule_files[@]}" "$work/rules.yarc" || { cat "$work/yarac.err" >&2; fail "yarac failed"; }
yarac_s=$(wall yarac)
mkdir "$work/empty"
timed scan0 "$bin" scan --config "$work/fanguard.toml" "${rd_args[@]}" "$work/empty" || { cat "$work/scan0.err" >&2; fail "fanguard scan of an empty directory failed"; }
scan0_s=$(wall scan0)

read_pass warmup # untimed: page in find, xargs, cat and the dentries

declare -a W_NONE W_COLD W_WARM W_YARA W_SCAN STARTUP HWM DCPU_COLD DCPU_WARM
declare -a RCPU_NONE RCPU_COLD RCPU_WARM CPU_YARA CPU_SCAN OCPU_NONE OCPU_COLD OCPU_WARM OCPU_YARA OCPU_SCAN
declare -a COLD_JSON STOP_JSON DENIED_COLD DENIED_WARM YARA_MATCHES SCAN_SUMMARY
for r in $(seq "$runs"); do
	say "run $r/$runs: (a) no daemon"
	read_pass none
	W_NONE[r]=$(wall none) RCPU_NONE[r]=$(cpu none) OCPU_NONE[r]=$(other none "${RCPU_NONE[r]}")
	[ "$denied" -eq 0 ] || fail "opens denied without a daemon"

	say "run $r/$runs: (b) cold, (c) warm"
	start_daemon
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

	say "run $r/$runs: (d) yara"
	timed yara yara -r -p "$ncpu" "${rule_files[@]}" "$corpus" || { head -5 "$work/yara.err" >&2; fail "yara failed"; }
	W_YARA[r]=$(wall yara) CPU_YARA[r]=$(cpu yara) OCPU_YARA[r]=$(other yara "${CPU_YARA[r]}")
	YARA_MATCHES[r]=$(wc -l <"$work/yara.out")

	say "run $r/$runs: (e) fanguard scan"
	rc=0
	timed scan "$bin" scan --config "$work/fanguard.toml" "${rd_args[@]}" "$corpus" || rc=$?
	[ "$rc" -le 1 ] || { tail -5 "$work/scan.err" >&2; fail "fanguard scan failed (status $rc)"; }
	W_SCAN[r]=$(wall scan) CPU_SCAN[r]=$(cpu scan) OCPU_SCAN[r]=$(other scan "${CPU_SCAN[r]}")
	SCAN_SUMMARY[r]=$(grep -a 'scanned' "$work/scan.err" | tail -1 | sed 's/^fanguard: //' || true)
done

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
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
na() { [ -n "$1" ] && printf '%s' "$1" || printf 'n/a'; }
sub0() { [ -n "$1" ] && [ -n "$2" ] && awk -v a="$1" -v b="$2" 'BEGIN { printf "%d", a - b }' || printf 'n/a'; }
us() { [ -n "$1" ] && awk -v u="$1" 'BEGIN { if (u >= 1e6) printf "%.2f s", u / 1e6; else if (u >= 1e3) printf "%.1f ms", u / 1e3; else printf "%d µs", u }' || printf 'n/a'; }
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }

m_none=$(med W_NONE) m_cold=$(med W_COLD) m_warm=$(med W_WARM) m_yara=$(med W_YARA) m_scan=$(med W_SCAN)
rc_=$(medrun W_COLD)       # the cold run with the median time
cj=${COLD_JSON[rc_]}       # its counters after the cold pass (SIGUSR1), maybe empty
sj=${STOP_JSON[rc_]}       # its counters at exit (both passes)
r_warm=$(ratio "$m_warm" "$m_none") r_cold=$(ratio "$m_cold" "$m_none")
r_coldyara=$(ratio "$m_cold" "$m_yara") r_scanyara=$(ratio "$m_scan" "$m_yara")

lat_max=
for r in $(seq "$runs"); do
	for j in "${COLD_JSON[r]}" "${STOP_JSON[r]}"; do
		v=$(jget latency_max_us "$j")
		[ -n "$v" ] && lat_max=$(awk -v a="${lat_max:-0}" -v b="$v" 'BEGIN { print (b > a) ? b : a }')
	done
done
timed_out_total=0 timed_out_known=
for r in $(seq "$runs"); do
	v=$(jget timed_out "${STOP_JSON[r]}")
	[ -n "$v" ] && timed_out_known=1 && timed_out_total=$((timed_out_total + v))
done
hwm_max=$(printf '%s\n' "${HWM[@]}" | sort -n | tail -1)
startup_med=$(med STARTUP)
ready_json=$(grep -a "	protecting	" "$work/daemon.$rc_.log" | head -1 | sed 's/.*	protecting	//')
daemon_rules=$(jget rules "$ready_json") daemon_workers=$(jget workers "$ready_json")
version=$("$bin" version 2>/dev/null | head -1 || true)

counter_row() { # LABEL KEY [unit fn]
	local c s w
	c=$(jget "$2" "$cj") s=$(jget "$2" "$sj")
	w=$(sub0 "$s" "$c")
	[ -n "$c" ] || w=n/a
	printf '| %s | %s | %s | %s |\n' "$1" "$(na "$c")" "$w" "$(na "$s")"
}
target() { # NAME VALUE LIMIT ok?
	local verdict
	case $4 in
	1) verdict="**holds**" ;; 0) verdict="**does not hold**" ;; *) verdict="unknown" ;;
	esac
	printf '| %s | %s | %s | %s |\n' "$1" "$2" "$3" "$verdict"
}
# le A B: 1 if A <= B, 0 if not, x if A is unknown
le() {
	case $1 in '' | n/a) echo x ;; *) awk -v a="$1" -v b="$2" 'BEGIN { print (a <= b) ? 1 : 0 }' ;; esac
}

{
	echo "# fanguard benchmarks"
	echo
	echo "Written by \`make bench\` (test/bench/bench.sh; see test/bench/README.md)."
	echo
	echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
	echo "- machine: $ncpu CPUs (nproc), kernel $(uname -r), $(awk '/MemTotal/ { printf "%.1f GiB RAM", $2 / 1048576 }' /proc/meminfo)"
	echo "- fanguard: ${version:-?} ($bin), daemon with $(na "$daemon_workers") workers, budget $budget, other settings default; yara $(yara --version)"
	echo "- corpus: $corpus_files files, $(mib "$corpus_bytes") (median file $corpus_median B, largest $(mib "$corpus_max")), regular files from /usr/lib and /usr/bin sorted by path and sampled evenly, on a tmpfs (asked for: -n $files -m $mib)"
	echo "- rules: ${#rule_files[@]} files, $rule_count rules by count of \`rule\` lines (the daemon reports $(na "$daemon_rules")), $(mib "$rule_bytes") of source, from configs/rules.d and $((${#rule_dirs[@]} - 1)) directories of $rules_root; compile alone: yarac $yarac_s s, \`fanguard scan\` of an empty directory $scan0_s s"
	echo "- load average (1 min) at start / end: $load_start / $(cut -d' ' -f1 /proc/loadavg)$(awk -v l="$load_start" -v n="$ncpu" 'BEGIN { if (l > n / 4) print " (other work was running: wall times are noisy, CPU times less so)" }')"
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
	echo "- daemon peak RSS (VmHWM just before SIGTERM): max $(awk -v k="$hwm_max" 'BEGIN { printf "%.1f MiB", k / 1024 }') (runs: $(printf '%s\n' "${HWM[@]}" | awk '{ printf "%s%.1f", (NR > 1 ? ", " : ""), $1 / 1024 }') MiB)"
	echo "- yara matches: ${YARA_MATCHES[ry]} lines; fanguard scan: ${SCAN_SUMMARY[rs]:-?}"
	echo
	echo "## Targets"
	echo
	echo "| target | measured | limit | verdict |"
	echo "| --- | ---: | ---: | --- |"
	target "warm / none" "$r_warm" "≤ 1.10" "$(le "$r_warm" 1.10)"
	target "cold / yara" "$r_coldyara" "≤ 1.25" "$(le "$r_coldyara" 1.25)"
	target "max decision latency" "$(us "$lat_max")" "≤ $budget (budget)" "$(le "$lat_max" "$budget_us")"
	echo
	echo "## Runs"
	echo
	echo "Wall times in seconds; other CPU (s) in parentheses."
	echo
	echo "| run | none | cold | warm | yara | scan | daemon start-up | daemon CPU cold / warm | peak RSS |"
	echo "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
	for r in $(seq "$runs"); do
		printf '| %d | %s (%s) | %s (%s) | %s (%s) | %s (%s) | %s (%s) | %s ms | %s / %s s | %s |\n' "$r" \
			"${W_NONE[r]}" "${OCPU_NONE[r]}" "${W_COLD[r]}" "${OCPU_COLD[r]}" "${W_WARM[r]}" "${OCPU_WARM[r]}" \
			"${W_YARA[r]}" "${OCPU_YARA[r]}" "${W_SCAN[r]}" "${OCPU_SCAN[r]}" "${STARTUP[r]}" "${DCPU_COLD[r]}" "${DCPU_WARM[r]}" \
			"$(awk -v k="${HWM[r]}" 'BEGIN { printf "%.1f MiB", k / 1024 }')"
	done
} >"$work/report.md"

cat "$work/report.md"
cp "$work/report.md" "$out"
say "written to $out"
