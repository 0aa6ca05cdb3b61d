#!/usr/bin/env bash
# Benchmark (b): a sweep across the two-namespace lab, portcall beside
# `nmap -sT -T4`, REPS times each (alternating). The target host has 4000
# ports behind nftables:
#   20000-20999 dropped, 21000-21999 rejected with ICMP admin-prohibited,
#   22000-22099 open (listening), 22100-23999 closed (nothing listening).
# Prints wall, CPU and peak-RSS medians and the ratio (goal: portcall wall
# <= 0.5x nmap), and fails unless both find the same open set and portcall
# reports every dropped port `timeout`, every open port `open`, every closed
# port `refused`, and every rejected port `unreachable` or - where the
# target's ICMP rate limit swallowed the reject - `timeout` (never open or
# refused). How many rejects came through as `unreachable` is printed,
# with the target's own count of rate-limited ICMP errors.
#
#   cargo build --release -p portcall -p integration --bins
#   sudo scripts/bench/probe_lab.sh            # REPS=3 by default
#
# Needs root, iproute2, nftables, nmap, jq and /usr/bin/time. Everything
# lives in namespaces this script creates (addresses 198.18.0.0/24, a bridge
# in its own namespace, nothing attached to the root namespace) and is
# deleted on exit.
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/bench/lib.sh

REPS=${REPS:-3}
lab_binaries
[[ $(id -u) == 0 ]] || { echo "needs root (network namespaces)" >&2; exit 2; }
for t in ip nft nmap jq; do command -v "$t" >/dev/null || { echo "needs $t" >&2; exit 2; }; done

two_host_lab pcbench
ip netns exec "$target" nft -f - <<'NFT'
table ip bench {
  chain input {
    type filter hook input priority 0; policy accept;
    tcp dport 20000-20999 drop
    tcp dport 21000-21999 reject with icmp type admin-prohibited
  }
}
NFT
ip netns exec "$target" "$SERVER" --bind "$target_ip" --tcp 22000-22099 --lifetime 3600 >"$work/server.out" &
server_pid=$!
for _ in $(seq 100); do grep -q ready "$work/server.out" 2>/dev/null && break; sleep 0.1; done
grep -q ready "$work/server.out" || { echo "lab-server did not start" >&2; exit 1; }
seq 22000 22099 >"$work/want.open"

icmp_ratelimited() {
    # Icmp OutRateLimitHost from the target's own counters (0 when this
    # kernel does not count it).
    ip netns exec "$target" awk '/^Icmp:/ { if (!h) { for (i = 1; i <= NF; i++) n[$i] = i; h = 1 } else print (n["OutRateLimitHost"] ? $n["OutRateLimitHost"] : 0) }' /proc/net/snmp
}

status=0
for rep in $(seq "$REPS"); do
    timed "$work/nmap" "$client" nmap -sT -T4 -n -Pn -p 20000-23999 -oG "$work/nmap.gnmap" "$target_ip"
    # Let the target's ICMP token bucket refill, as it would between two
    # independent runs.
    sleep 6
    limited_before=$(icmp_ratelimited)
    timed "$work/portcall" "$client" "$BIN" probe "$target_ip:20000-23999" --format json
    limited=$(( $(icmp_ratelimited) - limited_before ))
    sleep 6
    r="$work/portcall.stdout"
    grep -oE '[0-9]+/open/' "$work/nmap.gnmap" | cut -d/ -f1 | sort >"$work/nmap.open"
    jq -r '.results[] | select(.observed == "open") | .port' "$r" | sort >"$work/portcall.open"
    count() { jq "[.results[] | select(.port >= $1 and .port <= $2 and .observed == \"$3\")] | length" "$r"; }
    dropped_timeout=$(count 20000 20999 timeout)
    rejected_unreachable=$(count 21000 21999 unreachable)
    rejected_timeout=$(count 21000 21999 timeout)
    open_open=$(count 22000 22099 open)
    closed_refused=$(count 22100 23999 refused)
    fail=()
    diff -q "$work/nmap.open" "$work/portcall.open" >/dev/null || fail+=("open sets differ")
    diff -q "$work/want.open" "$work/portcall.open" >/dev/null || fail+=("portcall's open set is not the 100 listeners")
    [[ $dropped_timeout == 1000 ]] || fail+=("dropped->timeout $dropped_timeout/1000")
    [[ $open_open == 100 ]] || fail+=("open->open $open_open/100")
    [[ $closed_refused == 1900 ]] || fail+=("closed->refused $closed_refused/1900")
    [[ $((rejected_unreachable + rejected_timeout)) == 1000 ]] || fail+=("rejected ports neither unreachable nor timeout")
    echo "rep $rep: nmap $(tail -n 1 "$work/nmap" | cut -d' ' -f1) s, portcall $(tail -n 1 "$work/portcall" | cut -d' ' -f1) s;" \
        "portcall: dropped->timeout $dropped_timeout/1000, open->open $open_open/100, closed->refused $closed_refused/1900," \
        "rejected->unreachable $rejected_unreachable/1000 (->timeout $rejected_timeout; target rate-limited $limited ICMP errors)"
    if ((${#fail[@]})); then
        printf 'rep %s FAILED: %s\n' "$rep" "${fail[*]}" >&2
        status=1
    fi
done

echo
echo "(b) two-namespace lab, 4000 ports, $REPS reps, medians:"
summary "$work/nmap" "$work/portcall" 0.5
exit "$status"
