#!/usr/bin/env bash
# Memory that follows a host's own paths: one idle `portcall agent` holding
# a HOSTS x PORTS full-mesh plan (scripts/bench/mesh_plan.py; default
# 200 x 20 = 796,000 paths, of which the agent's own are 3,980 outgoing
# and 20 canary ports), and `portcall plan show --format json` of the same
# plan.
#
#   scripts/bench/idle_agent.sh                 # 200 x 20, release build
#   HOSTS=100 PORTS=10 PORTCALL_BIN=... scripts/bench/idle_agent.sh
#
# The agent plays host h1 with its control endpoint on loopback
# (--listen 127.0.$NET.1:$LISTEN_PORT, mutual TLS with a fresh CA); no
# round runs, nothing is probed. Its RSS is sampled from /proc for two
# seconds once the endpoint listens (median; VmHWM is the startup peak).
# `plan show` is timed RUNS times with /usr/bin/time (median wall, max RSS).
# Goals: idle agent RSS <= 16 MiB, plan show <= 1 s; exits 1 when one is
# missed, after printing both.
set -euo pipefail
cd "$(dirname "$0")/../.."

HOSTS=${HOSTS:-200}
PORTS=${PORTS:-20}
RUNS=${RUNS:-3}
NET=${NET:-72}
LISTEN_PORT=${LISTEN_PORT:-19750}
GOAL_RSS_KIB=$((16 * 1024))
GOAL_SHOW_S=1.0
if [[ -n ${PORTCALL_BIN:-} ]]; then
    BIN=$PORTCALL_BIN
else
    cargo build -q --release -p portcall
    BIN=${CARGO_TARGET_DIR:-target}/release/portcall
fi
[[ -x $BIN ]] || { echo "idle_agent.sh: no portcall binary at $BIN" >&2; exit 2; }
command -v /usr/bin/time >/dev/null || { echo "idle_agent.sh: needs /usr/bin/time" >&2; exit 2; }

tmp=$(mktemp -d /tmp/portcall-idle-agent.XXXXXX)
pid=
cleanup() {
    if [[ -n $pid ]]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

plan=$tmp/plan.toml
scripts/bench/mesh_plan.py "$HOSTS" "$PORTS" >"$plan"
paths=$((HOSTS * (HOSTS - 1) * PORTS))
mib() { awk -v k="$1" 'BEGIN { printf "%.1f MiB", k / 1024 }'; }
echo "portcall: $BIN ($("$BIN" --version)); plan: $HOSTS hosts x $PORTS ports, full mesh, $paths paths"

# plan show --format json: wall and peak RSS.
: >"$tmp/show.t"
for _ in $(seq "$RUNS"); do
    /usr/bin/time -f '%e %M' -o "$tmp/t" "$BIN" plan show "$plan" --format json >"$tmp/show.json"
    tail -n 1 "$tmp/t" >>"$tmp/show.t"
done
show_wall=$(sort -g "$tmp/show.t" | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }')
show_rss=$(awk '$2 > m { m = $2 } END { print m }' "$tmp/show.t")
show_paths=$(python3 -c 'import json, sys; print(len(json.load(open(sys.argv[1]))["paths"]))' "$tmp/show.json")
if ((show_paths != paths)); then
    echo "idle_agent.sh: plan show listed $show_paths paths, expected $paths" >&2
    exit 1
fi

# One idle agent.
"$BIN" pki init --dir "$tmp/pki" >/dev/null 2>&1
"$BIN" pki issue --dir "$tmp/pki" --name h1 --ip 198.18.0.1 >/dev/null 2>&1
t0=$(date +%s.%N)
RUST_LOG=warn "$BIN" agent --plan "$plan" --host h1 --pki "$tmp/pki" --listen "127.0.$NET.1:$LISTEN_PORT" \
    </dev/null >"$tmp/agent.log" 2>&1 &
pid=$!
hex=$(printf ':%04X' "$LISTEN_PORT")
for ((i = 0; ; i++)); do
    if ! kill -0 "$pid" 2>/dev/null; then
        echo "idle_agent.sh: the agent exited:" >&2
        cat "$tmp/agent.log" >&2
        exit 1
    fi
    awk -v h="$hex" '$4 == "0A" && substr($2, length($2) - 4) == h { f = 1 } END { exit !f }' \
        "/proc/$pid/net/tcp" && break
    ((i < 600)) || { echo "idle_agent.sh: the agent did not listen within 60 s" >&2; exit 1; }
    sleep 0.1
done
ready=$(awk -v t0="$t0" -v t1="$(date +%s.%N)" 'BEGIN { printf "%.2f", t1 - t0 }')
sleep 1
samples=()
for ((i = 0; i < 20; i++)); do
    samples+=("$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status")")
    sleep 0.1
done
hwm=$(awk '/^VmHWM:/ { print $2 }' "/proc/$pid/status")
rss=$(printf '%s\n' "${samples[@]}" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }')

echo "plan show --format json: median wall ${show_wall} s over $RUNS runs, max RSS $(mib "$show_rss")"
echo "idle agent (host h1): listening after ${ready} s, RSS $(mib "$rss") (median of 20 samples), startup peak (VmHWM) $(mib "$hwm")"
status=0
if ((rss <= GOAL_RSS_KIB)); then
    echo "goal: idle agent RSS <= 16 MiB: met"
else
    echo "goal: idle agent RSS <= 16 MiB: NOT met"
    status=1
fi
if awk -v w="$show_wall" -v g="$GOAL_SHOW_S" 'BEGIN { exit !(w <= g) }'; then
    echo "goal: plan show <= 1 s: met"
else
    echo "goal: plan show <= 1 s: NOT met"
    status=1
fi
exit "$status"
