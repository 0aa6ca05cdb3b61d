#!/usr/bin/env bash
# Plan parsing against the host count: `plan lint` of generated plans of
# 10,000, 20,000 and 40,000 hosts (scripts/bench/plan_scale.py), the wall
# time of each and the ratio 40k/20k (about 2 when parsing is linear; it
# was 4.2 when locating each host rescanned the file: 21.7 s at 20,000
# hosts, 92 s at 40,000).
#
#   scripts/bench/plan_parse.sh            # PROFILE=release for target/release
set -euo pipefail
cd "$(dirname "$0")/../.."
PROFILE=${PROFILE:-debug}
BIN=target/$PROFILE/portcall
[[ -x $BIN ]] || { echo "plan_parse.sh: build first ($BIN missing)" >&2; exit 2; }
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
declare -A wall
for n in 10000 20000 40000; do
    python3 scripts/bench/plan_scale.py "$n" >"$dir/plan-$n.toml"
    /usr/bin/time -f '%e' -o "$dir/time-$n" "$BIN" plan lint "$dir/plan-$n.toml" >/dev/null
    wall[$n]=$(tail -n 1 "$dir/time-$n")
    printf '%6d hosts: %6.2f s\n' "$n" "${wall[$n]}"
done
awk -v a="${wall[20000]}" -v b="${wall[40000]}" 'BEGIN { printf "ratio 40k/20k: %.2f (linear: about 2)\n", b / a }'
