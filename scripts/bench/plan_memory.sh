#!/usr/bin/env bash
# Memory that follows a host's own paths, on the plan of a 200-host x
# 20-port full mesh (796,000 paths, from scripts/bench/mesh_plan.py):
#
#   - an idle agent: `portcall agent --plan P --host h1 --insecure` on
#     loopback (its control endpoint on 127.0.$NET.1; nothing is probed),
#     VmRSS sampled for two seconds once it serves: goal <= 16 MiB;
#   - `portcall plan show --format json` of that plan to /dev/null, RUNS
#     times: median wall time (goal <= 1 s), CPU time and peak RSS; and
#     `plan lint` of it.
#
#   cargo build --release -p portcall && scripts/bench/plan_memory.sh
#   N=100 M=10 scripts/bench/plan_memory.sh     # another mesh
#
# Exits 1 when a goal is missed. Wall times depend on the machine's load:
# the CPU time is printed beside them.
set -euo pipefail

N=${N:-200}
M=${M:-20}
RUNS=${RUNS:-5}
NET=${NET:-73}
BIN=${PORTCALL:-target/release/portcall}
here=$(cd "$(dirname "$0")" && pwd)
AGENT_GOAL_KIB=$((16 * 1024))
SHOW_GOAL_S=1.0

if [[ ! -x $BIN ]]; then
    echo "build first: cargo build --release -p portcall (or set PORTCALL)" >&2
    exit 2
fi
source "$here/lib.sh"

tmp=$(mktemp -d)
pid=
cleanup() {
    if [[ -n $pid ]]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    rm -rf "$tmp"
}
trap cleanup EXIT

plan=$tmp/mesh.toml
python3 "$here/mesh_plan.py" "$N" "$M" >"$plan"
paths=$((N * (N - 1) * M))
mib() { awk -v k="$1" 'BEGIN { printf "%.1f MiB", k / 1024 }'; }
failed=0

# --- the idle agent ---------------------------------------------------------------
RUST_LOG=warn "$BIN" agent --plan "$plan" --host h1 --insecure --no-rule-trace \
    --listen "127.0.$NET.1:0" 2>"$tmp/agent.log" &
pid=$!
for _ in $(seq 200); do
    grep -q "control endpoint" "$tmp/agent.log" 2>/dev/null && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
done
if ! grep -q "control endpoint" "$tmp/agent.log"; then
    echo "the agent did not start:" >&2
    cat "$tmp/agent.log" >&2
    exit 1
fi
samples=()
for ((i = 0; i < 20; i++)); do
    samples+=("$(awk '/^VmRSS:/{print $2}' "/proc/$pid/status")")
    sleep 0.1
done
hwm=$(awk '/^VmHWM:/{print $2}' "/proc/$pid/status")
kill "$pid" 2>/dev/null || true
wait "$pid" 2>/dev/null || true
pid=
sorted=($(printf '%s\n' "${samples[@]}" | sort -n))
idle=${sorted[$(( ${#sorted[@]} / 2 ))]}
echo "plan: ${N} hosts x ${M} ports, full mesh: $paths paths"
echo "idle agent (h1): RSS $idle KiB ($(mib "$idle")), peak (VmHWM) $hwm KiB ($(mib "$hwm"))"
if (( idle <= AGENT_GOAL_KIB )); then
    echo "goal: idle agent RSS <= 16 MiB: met"
else
    echo "goal: idle agent RSS <= 16 MiB: NOT met"
    failed=1
fi

# --- plan show --format json, plan lint ------------------------------------------------
# Timed writing to /dev/null (a pipe or a file adds the reader's or the
# disk's time); the output is checked once, apart.
show=$tmp/show
for ((r = 0; r < RUNS; r++)); do
    /usr/bin/time -f '%e %U %S %M' -o "$tmp/t" "$BIN" plan show "$plan" --format json >/dev/null
    tail -n 1 "$tmp/t" | awk '{ printf "%.3f %.3f %d\n", $1, $2 + $3, $4 }' >>"$show"
done
lint=$tmp/lint
timed "$lint" - "$BIN" plan lint "$plan"
"$BIN" plan show "$plan" --format json >"$tmp/show.json"
bytes=$(wc -c <"$tmp/show.json")
got=$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["paths"]))' "$tmp/show.json")
rm -f "$tmp/show.json"
if (( got != paths )); then
    echo "plan show listed $got paths, expected $paths" >&2
    exit 1
fi
wall=$(median "$show" 1)
cpu=$(median "$show" 2)
rss=$(median "$show" 3)
echo "plan show --format json: median wall $wall s, cpu $cpu s, peak RSS $rss KiB ($(mib "$rss")); $bytes bytes, $got paths ($RUNS runs)"
echo "plan lint: wall $(median "$lint" 1) s, peak RSS $(median "$lint" 3) KiB"
if awk -v w="$wall" -v g="$SHOW_GOAL_S" 'BEGIN { exit !(w <= g) }'; then
    echo "goal: plan show --format json <= ${SHOW_GOAL_S} s: met"
else
    echo "goal: plan show --format json <= ${SHOW_GOAL_S} s: NOT met (cpu $cpu s; load: $(cut -d' ' -f1-3 /proc/loadavg))"
    failed=1
fi
exit "$failed"
