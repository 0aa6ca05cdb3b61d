#!/usr/bin/env bash
# Path quality (`check --samples N`, issue 27) on the 14-host WSO2 plan in
# the netns lab (root, iproute2, nftables, ping): the lab is brought up
# with the plan's correct firewalls and `portcall check --samples N` is
# timed from the operator's host, with the CPU the agents spent meanwhile
# (utime + stime of every process in the lab's namespaces, read from /proc
# before and after), and a round without samples for the round's own cost. Beside it, the same measurement with `ping -c N -i
# 0.01` (one echo every 10 ms, as portcall paces its samples) from each
# source namespace to the target address of every path the round sampled:
# a source's pings to one address one after another (as an agent samples
# a source's paths to one address), every source and address at once.
# Prints medians and the ratios portcall / ping.
#
# ping is Debian's iputils-ping (apt-get install iputils-ping); without it
# only portcall is timed. The bench is not run by CI.
#
#   scripts/bench/quality.sh [RUNS] [SAMPLES]   # default 3 runs, 1000 samples
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/bench/lib.sh

RUNS=${1:-3}
SAMPLES=${2:-1000}
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

for tool in ip nft /usr/bin/time python3; do
    command -v "$tool" >/dev/null || { echo "quality.sh: needs $tool" >&2; exit 2; }
done
PING=$(command -v ping || true)
[[ -n $PING ]] || echo "quality.sh: no ping (apt-get install iputils-ping): portcall only" >&2

scripts/lab.sh rules "$PLAN" "$COORD" "$work/rules" >/dev/null
# The plan's firewalls drop ICMP echo; ping needs it to measure the same
# source -> address pairs. Accepting it changes none of portcall's paths.
sed -i 's/^\( *\)ct state established,related accept$/&\n\1icmp type echo-request accept/' "$work/rules/"*.nft
grep -q 'icmp type echo-request accept' "$work/rules/db.nft" || { echo "quality.sh: could not open the firewalls to ping" >&2; exit 1; }
scripts/lab.sh up "$PLAN" "$work/rules" >/dev/null
. "$PORTCALL_LAB_STATE/env"
ns_of() { awk -v h="$1" '$1 == h { print $2 }' "$PORTCALL_LAB_STATE/hosts"; }

# The lab's processes (agents, lab servers), by namespace, not by name.
lab_pids() {
    local ns
    for ns in $(awk '{ print $2 }' "$PORTCALL_LAB_STATE/hosts"); do
        ip netns pids "$ns" 2>/dev/null || true
    done | sort -un
}
# cpu_ticks PIDS...: their utime + stime in clock ticks (gone ones count 0).
cpu_ticks() {
    local p sum=0 f
    for p in "$@"; do
        f=$(cut -d')' -f2- "/proc/$p/stat" 2>/dev/null) || continue
        # After "pid (comm)": field 14 (utime) is the 12th, 15 (stime) the 13th.
        sum=$((sum + $(awk '{ print $12 + $13 }' <<<"$f")))
    done
    echo "$sum"
}
HZ=$(getconf CLK_TCK)

echo "portcall: check --samples $SAMPLES from $COORD, $RUNS runs"
for _ in $(seq "$RUNS"); do
    mapfile -t pids < <(lab_pids)
    before=$(cpu_ticks "${pids[@]}")
    timed "$work/pc.t" "$(ns_of "$COORD")" "$PORTCALL" check --plan "$PLAN" --pki "$PKI" \
        --samples "$SAMPLES" --format json
    after=$(cpu_ticks "${pids[@]}")
    awk -v d=$((after - before)) -v hz="$HZ" 'BEGIN { printf "%.3f\n", d / hz }' >>"$work/pc.agents"
done

echo "portcall: check without samples from $COORD (the round's own cost), $RUNS runs"
for _ in $(seq "$RUNS"); do
    mapfile -t pids < <(lab_pids)
    before=$(cpu_ticks "${pids[@]}")
    timed "$work/base.t" "$(ns_of "$COORD")" "$PORTCALL" check --plan "$PLAN" --pki "$PKI" \
        --samples 1 --format json
    after=$(cpu_ticks "${pids[@]}")
    awk -v d=$((after - before)) -v hz="$HZ" 'BEGIN { printf "%.3f\n", d / hz }' >>"$work/base.agents"
done

# Every sampled path: its source's namespace and target address, and the
# figures, from the last run's report.
python3 - "$work/pc.t.stdout" >"$work/sampled" <<'EOF'
import json, sys
report = json.load(open(sys.argv[1]))
n = 0
for p in report["paths"]:
    q = p.get("quality")
    if q:
        n += 1
        print(p["from"], p["address"], q["sent"], q["answered"], (q.get("rtt_ms") or {}).get("p50", "-"))
if n == 0:
    sys.exit("quality.sh: the round sampled no path")
EOF
paths=$(wc -l <"$work/sampled")
echo "sampled paths: $paths ($(awk '{ s += $3; a += $4 } END { print a " of " s " samples answered" }' "$work/sampled"))"

if [[ -n $PING ]]; then
    # One chain per (source, address): its paths' pings one after another.
    awk '{ print $1, $2 }' "$work/sampled" | sort | uniq -c >"$work/chains"
    echo "ping: -c $SAMPLES -i 0.01, $(wc -l <"$work/chains") source/address chains at once, $RUNS runs"
    for _ in $(seq "$RUNS"); do
        mapfile -t pids < <(lab_pids)
        start=$(date +%s.%N)
        cpu_before=$(awk '{ print $14 + $15 + $16 + $17 }' /proc/$$/stat)
        chains=()
        while read -r count from addr; do
            ns=$(ns_of "$from")
            (
                for _ in $(seq "$count"); do
                    ip netns exec "$ns" "$PING" -n -q -c "$SAMPLES" -i 0.01 -W 1 "$addr" || true
                done
            ) >>"$work/ping.out" 2>&1 &
            chains+=($!)
        done <"$work/chains"
        wait "${chains[@]}"
        end=$(date +%s.%N)
        # The pings' CPU: this shell's waited-for children.
        cpu_after=$(awk '{ print $14 + $15 + $16 + $17 }' /proc/$$/stat)
        awk -v s="$start" -v e="$end" -v c=$((cpu_after - cpu_before)) -v hz="$HZ" \
            'BEGIN { printf "%.3f %.3f 0\n", e - s, c / hz }' >>"$work/ping.t"
    done
    lost=$(grep -c ' 0% packet loss' "$work/ping.out" || true)
    echo "ping runs without loss: $lost of $((RUNS * paths))"
fi

pw=$(median "$work/pc.t" 1) pc=$(median "$work/pc.t" 2) pa=$(median "$work/pc.agents" 1)
printf '%-34s %10s %10s\n' "" "wall (s)" "cpu (s)"
printf '%-34s %10s %10s\n' "portcall check (coordinator)" "$pw" "$pc"
printf '%-34s %10s %10s\n' "portcall agents" "" "$pa"
printf '%-34s %10s %10s\n' "round without samples" "$(median "$work/base.t" 1)" "$(median "$work/base.t" 2)"
printf '%-34s %10s %10s\n' "its agents" "" "$(median "$work/base.agents" 1)"
if [[ -n $PING ]]; then
    nw=$(median "$work/ping.t" 1) nc=$(median "$work/ping.t" 2)
    printf '%-34s %10s %10s\n' "ping, every sampled path" "$nw" "$nc"
    awk -v pw="$pw" -v nw="$nw" -v pc="$pc" -v pa="$pa" -v nc="$nc" 'BEGIN {
        printf "ratio portcall/ping: wall %.2fx, cpu (agents + coordinator) %.2fx\n", pw / nw, (pa + pc) / (nc > 0 ? nc : 0.001)
    }'
fi
