#!/usr/bin/env bash
# Round benchmark on loopback, no root: N real `portcall agent` processes
# (mutual TLS, certificates from `portcall pki`), each serving M planned
# ports, every host reaching every other on every port: N*(N-1)*M paths,
# one `portcall check`. Prints the round's wall time beside its floor,
# timeout * (1 + retries), and the idle and peak RSS of the agents and the
# peak RSS of the coordinator.
#
#   scripts/bench/round.sh [N] [M]        # default 14 agents x 6 ports
#   SILENT=0 scripts/bench/round.sh       # without the silent path
#
# With SILENT=1 (the default) one extra must-be-blocked path goes to a
# loopback listener whose accept queue is full, so the kernel drops its
# SYNs: the round then has a timed-out path and must reach its floor, which
# is what the "within 1 s of the floor" goal is about. Everything stays on
# 127.0.$NET.0/24.
set -euo pipefail

N=${1:-14}
M=${2:-6}
NET=${NET:-60}
SILENT=${SILENT:-1}
BIN=${PORTCALL:-target/release/portcall}
BASE_PORT=${BASE_PORT:-21000}
CONTROL_PORT=${CONTROL_PORT:-17400}

if [[ ! -x $BIN ]]; then
    echo "build first: cargo build --release -p portcall (or set PORTCALL)" >&2
    exit 2
fi
if (( N < 2 || N > 200 || M < 1 || M > 200 )); then
    echo "N must be 2..200 and M 1..200" >&2
    exit 2
fi

work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    [[ -n ${KEEP:-} ]] && echo "kept $work" >&2 || rm -rf "$work"
}
trap cleanup EXIT

# --- the plan -----------------------------------------------------------------
plan=$work/plan.toml
{
    echo "name = \"bench-${N}x${M}\""
    echo "[defaults]"
    echo "timeout_ms = 1000"
    echo "retries = 1"
    echo "control_port = $CONTROL_PORT"
    for ((i = 1; i <= N; i++)); do
        printf '[[hosts]]\nname = "h%d"\naddress = "127.0.%d.%d"\nroles = ["svc"]\n' "$i" "$NET" "$i"
    done
    printf '[roles.svc]\nports = [\n'
    names=()
    for ((j = 0; j < M; j++)); do
        printf '  { name = "p%d", port = %d, offset = false },\n' "$j" $((BASE_PORT + j))
        names+=("\"p$j\"")
    done
    printf ']\n'
    printf '[[flows]]\nfrom = "all"\nto = "role:svc"\nports = [%s]\n' "$(IFS=,; echo "${names[*]}")"
    if [[ $SILENT == 1 ]]; then
        printf '[[hosts]]\nname = "sink"\naddress = "127.0.%d.250"\nroles = ["sinkrole"]\n' "$NET"
        printf '[roles.sinkrole]\nports = [{ name = "full", port = %d, offset = false }]\n' $((BASE_PORT + 999))
        printf '[[flows]]\nfrom = "host:h1"\nto = "host:sink"\nports = ["full"]\nexpect = "blocked"\n'
    fi
} >"$plan"

# A listener that never accepts, its queue filled, holds the sink's port:
# the sink agent reports it held, and h1's SYNs to it are dropped.
if [[ $SILENT == 1 ]]; then
    python3 - "127.0.$NET.250" $((BASE_PORT + 999)) <<'EOF' &
import socket, sys, time
ip, port = sys.argv[1], int(sys.argv[2])
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((ip, port))
s.listen(0)
fill = []
for _ in range(4):
    c = socket.socket()
    c.setblocking(False)
    c.connect_ex((ip, port))
    fill.append(c)
time.sleep(600)
EOF
    pids+=($!)
fi

# --- certificates ---------------------------------------------------------------
pki=$work/pki
"$BIN" pki init --dir "$pki" 2>/dev/null
"$BIN" pki issue --dir "$pki" --name coordinator 2>/dev/null
hosts=()
for ((i = 1; i <= N; i++)); do hosts+=("h$i:127.0.$NET.$i"); done
[[ $SILENT == 1 ]] && hosts+=("sink:127.0.$NET.250")
for h in "${hosts[@]}"; do
    "$BIN" pki issue --dir "$pki" --name "${h%%:*}" --ip "${h#*:}" 2>/dev/null
done

# INSECURE=1: plain TCP control on loopback (no TLS handshakes), for a
# machine too loaded to finish 100 mutual-TLS handshakes within their 1 s.
auth=(--pki "$pki")
[[ ${INSECURE:-0} == 1 ]] && auth=(--insecure)

# --- agents -----------------------------------------------------------------------
agent_pids=()
for h in "${hosts[@]}"; do
    name=${h%%:*}
    RUST_LOG=warn "$BIN" agent --plan "$plan" --host "$name" "${auth[@]}" ${AGENT_ARGS:-} 2>"$work/$name.log" &
    pids+=($!)
    agent_pids+=($!)
done
for h in "${hosts[@]}"; do
    name=${h%%:*}
    for _ in $(seq 100); do
        grep -q "control endpoint" "$work/$name.log" 2>/dev/null && break
        sleep 0.05
    done
    grep -q "control endpoint" "$work/$name.log" || { echo "agent $name did not start:" >&2; cat "$work/$name.log" >&2; exit 1; }
done
sleep 1

kib() { awk -v k="$2" '$1 == k":" { print $2 }' "/proc/$1/status"; }
idle_max=0
idle_sum=0
for p in "${agent_pids[@]}"; do
    r=$(kib "$p" VmRSS)
    idle_sum=$((idle_sum + r))
    ((r > idle_max)) && idle_max=$r
done

# --- the round ------------------------------------------------------------------------
timing=$work/time
set +e
/usr/bin/time -f "%e %M" -o "$timing" "$BIN" check --plan "$plan" "${auth[@]}" --format json --out "$work/report.json" 2>"$work/check.log"
code=$?
set -e
read -r wall coord_kib < <(tail -n 1 "$timing")

peak_max=0
for p in "${agent_pids[@]}"; do
    r=$(kib "$p" VmHWM)
    ((r > peak_max)) && peak_max=$r
done

tail -n 5 "$work/check.log" >&2
summary=$(python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))
s = r["summary"]
print("{} paths: {} ok, {} violations, {} errors".format(s["paths"], s["ok"], s["violations"], s["errors"]))
' "$work/report.json")

mib() { awk -v k="$1" 'BEGIN { printf "%.1f MiB", k / 1024 }'; }
agents=${#agent_pids[@]}
echo "round benchmark: $agents agents, $M ports each, silent path: $([[ $SILENT == 1 ]] && echo yes || echo no)"
echo "  report:             $summary (check exit $code)"
echo "  round wall time:    ${wall} s (floor timeout*(1+retries) = $([[ $SILENT == 1 ]] && echo "2.0 s" || echo "0 s, no silent path"))"
echo "  agent RSS idle:     max $(mib "$idle_max"), mean $(mib $((idle_sum / agents)))"
echo "  agent RSS peak:     max $(mib "$peak_max")"
echo "  coordinator peak:   $(mib "$coord_kib")"
