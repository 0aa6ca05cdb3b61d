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
lab_binaries
[[ $(id -u) == 0 ]] || { echo "needs root (network namespaces)" >&2; exit 2; }
for t in ip nft jq; do command -v "$t" >/dev/null || { echo "needs $t" >&2; exit 2; }; done

two_host_lab pctime
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
