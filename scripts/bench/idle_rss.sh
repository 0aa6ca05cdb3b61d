#!/usr/bin/env bash
# Idle memory of a schedule-mode agent (goal: RSS <= 10 MiB). Runs the
# release binary as `portcall agent --every 2s --metrics ...` on loopback
# with a plan of PATHS outgoing paths (one open path to the agent's own
# metrics endpoint, one TLS path to an openssl s_server, the rest to closed
# ports: refused),
# lets it run ROUNDS rounds while its /metrics is scraped, then samples
# VmRSS from /proc between rounds. Prints the median and largest idle RSS
# and the peak (VmHWM); exits 1 when the median idle RSS is over the goal.
#
#   cargo build --release -p portcall && scripts/bench/idle_rss.sh
#   PATHS=200 ROUNDS=10 scripts/bench/idle_rss.sh
#
# Everything stays on 127.0.$NET.0/24.
set -euo pipefail

PATHS=${PATHS:-100}
ROUNDS=${ROUNDS:-5}
NET=${NET:-71}
BIN=${PORTCALL:-target/release/portcall}
METRICS_PORT=${METRICS_PORT:-19740}
GOAL_KIB=$((10 * 1024))

if [[ ! -x $BIN ]]; then
    echo "build first: cargo build --release -p portcall (or set PORTCALL)" >&2
    exit 2
fi
if (( PATHS < 3 )); then
    echo "PATHS must be at least 3" >&2
    exit 2
fi

tmp=$(mktemp -d)
pid=
tls_pid=
cleanup() {
    for p in $pid $tls_pid; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
    rm -rf "$tmp"
}
trap cleanup EXIT

# The agent is host `app` (127.0.$NET.1); its metrics endpoint listens on
# host `db`'s address (127.0.$NET.2), so one planned path is open; a TLS
# server (openssl s_server, when installed) on host `web` (127.0.$NET.3)
# makes one path a real TLS handshake, whose certificate check loads the
# system trust store as it would in production.
metrics="127.0.$NET.2:$METRICS_PORT"
TLS_PORT=$((METRICS_PORT + 1))
tls_paths=0
if command -v openssl >/dev/null 2>&1; then
    openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=web \
        -keyout "$tmp/key.pem" -out "$tmp/cert.pem" 2>/dev/null
    openssl s_server -quiet -accept "127.0.$NET.3:$TLS_PORT" \
        -cert "$tmp/cert.pem" -key "$tmp/key.pem" </dev/null >/dev/null 2>&1 &
    tls_pid=$!
    tls_paths=1
else
    echo "note: openssl not found, so no TLS path (the trust store stays unloaded)"
fi
closed=()
for ((i = 0; i < PATHS - 1 - tls_paths; i++)); do closed+=($((30001 + i))); done
{
    echo 'name = "idle-rss"'
    echo '[defaults]'
    echo 'timeout_ms = 500'
    echo 'retries = 0'
    echo '[[hosts]]'
    echo 'name = "app"'
    echo "address = \"127.0.$NET.1\""
    echo '[[hosts]]'
    echo 'name = "db"'
    echo "address = \"127.0.$NET.2\""
    echo 'roles = ["metrics"]'
    echo '[roles.metrics]'
    echo "ports = [{ name = \"metrics\", port = $METRICS_PORT, offset = false }]"
    echo '[[flows]]'
    echo 'from = "host:app"'
    echo 'to = "host:db"'
    echo 'ports = ["metrics"]'
    echo '[[flows]]'
    echo 'from = "host:app"'
    echo 'to = "host:db"'
    echo "ports = [$(IFS=,; echo "${closed[*]}")]"
    echo 'expect = "blocked"'
    if (( tls_paths )); then
        echo '[[hosts]]'
        echo 'name = "web"'
        echo "address = \"127.0.$NET.3\""
        echo 'roles = ["https"]'
        echo '[roles.https]'
        echo "ports = [{ name = \"https\", port = $TLS_PORT, protocol = \"tls\", offset = false }]"
        echo '[[flows]]'
        echo 'from = "host:app"'
        echo 'to = "host:web"'
        echo 'ports = ["https"]'
    fi
} >"$tmp/plan.toml"

RUST_LOG=warn "$BIN" agent --plan "$tmp/plan.toml" --host app --every 2s --metrics "$metrics" \
    2>"$tmp/agent.log" &
pid=$!

scrape() {
    exec 3<>"/dev/tcp/127.0.$NET.2/$METRICS_PORT"
    printf 'GET /metrics HTTP/1.0\r\n\r\n' >&3
    cat <&3
    exec 3<&-
}
rounds_total() { scrape 2>/dev/null | awk '/^portcall_rounds_total[{ ]/{print $2}'; }

deadline=$((SECONDS + 10 + 3 * ROUNDS))
while :; do
    n=$(rounds_total || true)
    [[ -n $n ]] && (( n >= ROUNDS )) && break
    if (( SECONDS > deadline )) || ! kill -0 "$pid" 2>/dev/null; then
        echo "the agent did not complete $ROUNDS rounds:" >&2
        cat "$tmp/agent.log" >&2
        exit 1
    fi
    sleep 0.5
done
paths=$(scrape | grep -c '^portcall_path_ok{' || true)
if (( paths != PATHS )); then
    echo "expected $PATHS paths in /metrics, found $paths" >&2
    exit 1
fi

# Idle: sample between rounds for four seconds (two periods).
samples=()
for ((i = 0; i < 40; i++)); do
    samples+=("$(awk '/^VmRSS:/{print $2}' "/proc/$pid/status")")
    sleep 0.1
done
hwm=$(awk '/^VmHWM:/{print $2}' "/proc/$pid/status")
sorted=($(printf '%s\n' "${samples[@]}" | sort -n))
median=${sorted[$(( ${#sorted[@]} / 2 ))]}
max=${sorted[$(( ${#sorted[@]} - 1 ))]}

mib() { awk -v k="$1" 'BEGIN { printf "%.1f MiB", k / 1024 }'; }
observed=$(scrape | awk -F'observed="' '/^portcall_path_observed\{/ { split($2, a, "\""); n[a[1]]++ }
    END { sep = " "; for (k in n) { printf "%s%s=%d", sep, k, n[k]; sep = ", " } }')
echo "portcall agent --every 2s --metrics: $PATHS paths (observed:$observed), $(rounds_total) rounds done"
echo "idle RSS: median $median KiB ($(mib "$median")), max $max KiB ($(mib "$max")); peak (VmHWM) $hwm KiB ($(mib "$hwm"))"
if (( median <= GOAL_KIB )); then
    echo "goal: idle RSS <= 10 MiB: met"
else
    echo "goal: idle RSS <= 10 MiB: NOT met"
    exit 1
fi
