#!/usr/bin/env bash
# `portcall whatif` on the 14-host WSO2 plan beside a live round (root,
# iproute2, nftables): the netns lab is brought up with the plan's correct
# firewalls and `portcall check` is timed from the operator's host; then
# `portcall state collect` is timed (every agent asked for its state over
# mTLS), and `portcall whatif` is timed on the collected state,
# once without a change (one round in the twin) and once with a candidate
# (a drop on the database: two rounds, base and candidate), both including
# building and removing the twin. Prints medians and the ratio to a live
# round (goal: base + candidate within 2x a live round).
#
#   scripts/bench/whatif.sh [RUNS]       # default 3
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/bench/lib.sh

RUNS=${1:-3}
PLAN=${PLAN_FILE:-examples/wso2-distributed.toml}
COORD=${COORDINATOR:-operator}
export PROFILE=${PROFILE:-release}  # PROFILE=debug skips the release build
export PORTCALL_LAB_STATE
PORTCALL_LAB_STATE=$(mktemp -d)
work=$(mktemp -d)
cleanup() {
    scripts/lab.sh down >/dev/null 2>&1 || true
    rm -rf "$work" "$PORTCALL_LAB_STATE"
}
trap cleanup EXIT

for tool in ip nft /usr/bin/time; do
    command -v "$tool" >/dev/null || { echo "whatif.sh: needs $tool" >&2; exit 2; }
done

scripts/lab.sh rules "$PLAN" "$COORD" "$work/rules" >/dev/null
scripts/lab.sh up "$PLAN" "$work/rules" >/dev/null
. "$PORTCALL_LAB_STATE/env"
ns_of() { awk -v h="$1" '$1 == h { print $2 }' "$PORTCALL_LAB_STATE/hosts"; }

printf 'insert rule inet portcall input tcp dport 3306 drop\n' >"$work/db-drop.nft"

echo "live: portcall check from $COORD, $RUNS runs"
for _ in $(seq "$RUNS"); do
    timed "$work/live.t" "$(ns_of "$COORD")" "$PORTCALL" check --plan "$PLAN" --pki "$PKI" --format json
done
echo "state: portcall state collect from $COORD, $RUNS runs"
for _ in $(seq "$RUNS"); do
    rm -rf "$work/state"
    timed "$work/collect.t" "$(ns_of "$COORD")" "$PORTCALL" state collect --plan "$PLAN" --pki "$PKI" --out "$work/state"
done
echo "twin: portcall whatif without a change, $RUNS runs"
for _ in $(seq "$RUNS"); do
    timed "$work/base.t" - "$PORTCALL" whatif --plan "$PLAN" --state "$work/state" --format json
done
echo "twin: portcall whatif --change db=…, $RUNS runs"
for _ in $(seq "$RUNS"); do
    timed "$work/cand.t" - "$PORTCALL" whatif --plan "$PLAN" --state "$work/state" \
        --change "db=$work/db-drop.nft" --format json
done
grep -q '"breaks": [1-9]' "$work/cand.t.stdout" || { echo "whatif.sh: the candidate broke nothing" >&2; exit 1; }

live=$(median "$work/live.t" 1) collect=$(median "$work/collect.t" 1) base=$(median "$work/base.t" 1) cand=$(median "$work/cand.t" 1)
printf '%-34s %10s\n' "" "wall (s)"
printf '%-34s %10s\n' "live round (check)" "$live"
printf '%-34s %10s\n' "state collect" "$collect"
printf '%-34s %10s\n' "whatif, base only" "$base"
printf '%-34s %10s\n' "whatif, base + candidate" "$cand"
awk -v l="$live" -v c="$cand" 'BEGIN {
    r = c / l
    printf "ratio whatif(base+candidate)/live: %.2fx (goal <= 2x: %s)\n", r, (r <= 2 ? "met" : "missed")
}'
