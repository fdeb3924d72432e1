#!/usr/bin/env bash
# feedgate.sh: what `fanguard rules update` costs with a real rule set. The
# ReversingLabs set is installed as a local-directory feed into a feeds
# directory of a temporary configuration (no daemon, nothing protected),
# ROUNDS times with --force, so that each round goes through the whole
# gate: copy, compile with the rules in force (the shipped ones), canary on
# canary_files trusted files of this host (dpkg's md5sums), cost. Prints
# each round's wall time and the update's own gate line.
#
# Usage: test/bench/feedgate.sh [-b BINARY] [-k ROUNDS] [-r RULES_ROOT] [-n CANARY_FILES]
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
bin=$root/bin/fanguard
rounds=5
rules_root=$root/../shared/rules/reversinglabs/yara
canary=2000
while getopts b:k:r:n: o; do
	case $o in
	b) bin=$OPTARG ;;
	k) rounds=$OPTARG ;;
	r) rules_root=$OPTARG ;;
	n) canary=$OPTARG ;;
	*) exit 2 ;;
	esac
done
[ -x "$bin" ] || { echo "no binary at $bin (make build)" >&2; exit 2; }
[ -d "$rules_root" ] || { echo "no rule set at $rules_root (-r)" >&2; exit 2; }
work=$(mktemp -d /tmp/fanguard-feedgate.XXXXXX)
trap 'rm -rf "$work"' EXIT
cat > "$work/fanguard.toml" <<TOML
[rules]
dirs = ["$root/configs/rules.d", "$work/feeds.d", "$work/rules.d"]
cache_dir = ""
[control]
socket = "$work/control.sock"
[update]
dir = "$work/feeds.d"
canary_files = $canary
[[feeds]]
name = "reversinglabs"
url = "$rules_root"
TOML
echo "feed: $rules_root ($(find "$rules_root" -name '*.yar*' | wc -l) files), canary_files = $canary, $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
for i in $(seq "$rounds"); do
	start=$(date +%s.%N)
	out=$("$bin" rules update --force --no-reload --config "$work/fanguard.toml")
	end=$(date +%s.%N)
	printf 'round %d: %s s wall; %s\n' "$i" "$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.2f", b - a }')" "$(grep -o 'gate: .*' <<<"$out")"
done
