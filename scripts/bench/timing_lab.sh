#!/usr/bin/env bash
# Benchmark: the cost of silence with a short timeout (issue 14, adaptive
# timing). A two-namespace lab; the target has 100 open ports
# (22000-22099), 100 closed (22100-22199) and 100 dropped by nftables
# (20000-20099). `portcall probe --timeout-ms 100 --retries 1` across all
# 300, REPS times; prints the wall median and the outcome counts (which
# must be 100 open, 100 refused, 100 timeout). With fixed 1 s retry gaps
# this took 1.2 s; the floor is two 100 ms attempts.
#
#   cargo build --release -p portcall -p integration --bins
#   sudo scripts/bench/timing_lab.sh                 # REPS=5 by default
#   sudo PORTCALL=/path/to/other/portcall scripts/bench/timing_lab.sh
#
# Needs root, iproute2, nftables and jq. Everything lives in namespaces this
# script creates (198.18.0.0/24, a bridge in its own namespace, nothing in
# the root namespace) and is deleted on exit.
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/bench/lib.sh

REPS=${REPS:-5}
BIN=$(realpath "${PORTCALL:-target/release/portcall}")
SERVER=$(realpath "${LAB_SERVER:-target/release/lab-server}")
for f in "$BIN" "$SERVER"; do
    [[ -x $f ]] || { echo "build first: cargo build --release -p portcall -p integration --bins ($f missing)" >&2; exit 2; }
done
[[ $(id -u) == 0 ]] || { echo "needs root (network namespaces)" >&2; exit 2; }
for t in ip nft jq; do command -v "$t" >/dev/null || { echo "needs $t" >&2; exit 2; }; done

ns="pctime$$"
br="$ns-br" client="$ns-client" target="$ns-target"
target_ip=198.18.0.11
work=$(mktemp -d)
server_pid=
cleanup() {
    if [[ -n $server_pid ]]; then kill "$server_pid" 2>/dev/null || true; fi
    for n in "$client" "$target" "$br"; do ip netns del "$n" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

ip netns add "$br"
ip -n "$br" link set lo up
ip -n "$br" link add br0 type bridge
ip -n "$br" link set br0 up
i=0
for host in "$client" "$target"; do
    ip netns add "$host"
    ip -n "$br" link add "p$i" type veth peer name eth0 netns "$host"
    ip -n "$br" link set "p$i" master br0 up
    ip -n "$host" link set lo up
    ip -n "$host" addr add "198.18.0.$((10 + i))/24" dev eth0
    ip -n "$host" link set eth0 up
    i=$((i + 1))
done
ip netns exec "$target" nft -f - <<'NFT'
table ip bench {
  chain input {
    type filter hook input priority 0; policy accept;
    tcp dport 20000-20099 drop
  }
}
NFT
ip netns exec "$target" "$SERVER" --bind "$target_ip" --tcp 22000-22099 --lifetime 600 >"$work/server.out" &
server_pid=$!
for _ in $(seq 100); do grep -q ready "$work/server.out" 2>/dev/null && break; sleep 0.1; done
grep -q ready "$work/server.out" || { echo "lab-server did not start" >&2; exit 1; }

for r in $(seq "$REPS"); do
    timed "$work/times" "$client" "$BIN" probe "$target_ip:20000-20099,22000-22199" \
        --timeout-ms 100 --retries 1 --format json
    counts=$(jq -c '[.results[].observed] | group_by(.) | map({(.[0]): length}) | add' "$work/times.stdout")
    echo "run $r: wall $(tail -n 1 "$work/times" | cut -d' ' -f1) s  $counts"
    [[ $counts == '{"open":100,"refused":100,"timeout":100}' ]] || { echo "wrong outcomes" >&2; exit 1; }
done
echo "median wall: $(median "$work/times" 1) s (--timeout-ms 100 --retries 1, 300 ports)"
