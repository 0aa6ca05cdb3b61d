#!/usr/bin/env bash
# Benchmark (b): a sweep across the two-namespace lab, portcall beside
# `nmap -sT -T4`, REPS interleaved pairs (the order alternates) for each
# setting of the target's ICMP limits in ICMP ("defaults": Linux's, a
# burst of six per peer then one a second; "off": net.ipv4.icmp_ratelimit
# 0, only the host-wide 1000 a second left). The target has 4000 ports
# behind nftables:
#   20000-20999 dropped, 21000-(21000+REJECTED-1) rejected with ICMP
#   admin-prohibited (REJECTED=1000 by default, 400 for issue 25's
#   must-show), 22000-22099 open (listening), every other port of
#   20000-23999 closed (nothing listening).
# Prints wall, CPU and peak-RSS medians with min-max and the ratio (goal:
# portcall wall <= 0.5x nmap), and the exactness of both per port class:
# portcall must report every dropped port `timeout`, every open port
# `open`, every closed port `refused`, and every rejected port
# `unreachable` or - where the target's ICMP rate limit swallowed the
# reject - `timeout` flagged `possibly_rate_limited` (never a bare
# `timeout`); how many dropped ports carry that flag is printed (a drop
# probed while the budget was spent cannot be told from a swallowed
# reject). nmap's states per class (and its reasons for the rejected
# class) are printed beside; both must find the same open set. The
# target's own count of rate-limited ICMP errors is printed for each run.
#
#   cargo build --release -p portcall -p integration --bins
#   sudo REJECTED=400 REPS=5 scripts/bench/probe_lab.sh
#
# Needs root, iproute2, nftables, nmap, jq, python3 and /usr/bin/time.
# Everything lives in namespaces this script creates (addresses
# 198.18.0.0/24, a bridge in its own namespace, nothing attached to the
# root namespace) and is deleted on exit.
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/bench/lib.sh

REPS=${REPS:-5}
REJECTED=${REJECTED:-1000}
ICMP=${ICMP:-"defaults off"}
lab_binaries
[[ $(id -u) == 0 ]] || { echo "needs root (network namespaces)" >&2; exit 2; }
for t in ip nft nmap jq python3; do command -v "$t" >/dev/null || { echo "needs $t" >&2; exit 2; }; done
((REJECTED >= 1 && REJECTED <= 1000)) || { echo "REJECTED must be 1..1000" >&2; exit 2; }
rej_last=$((21000 + REJECTED - 1))
closed_count=$((4000 - 1000 - REJECTED - 100))

two_host_lab pcbench
ip netns exec "$target" nft -f - <<NFT
table ip bench {
  chain input {
    type filter hook input priority 0; policy accept;
    tcp dport 20000-20999 drop
    tcp dport 21000-$rej_last reject with icmp type admin-prohibited
  }
}
NFT
ip netns exec "$target" "$SERVER" --bind "$target_ip" --tcp 22000-22099 --lifetime 3600 >"$work/server.out" &
server_pid=$!
for _ in $(seq 100); do grep -q ready "$work/server.out" 2>/dev/null && break; sleep 0.1; done
grep -q ready "$work/server.out" || { echo "lab-server did not start" >&2; exit 1; }
seq 22000 22099 >"$work/want.open"

icmp_ratelimited() {
    # Icmp OutRateLimitHost + OutRateLimitGlobal from the target's own
    # counters (0 when this kernel does not count them).
    ip netns exec "$target" awk '/^Icmp:/ { if (!h) { for (i = 1; i <= NF; i++) n[$i] = i; h = 1 } else print (n["OutRateLimitHost"] ? $n["OutRateLimitHost"] : 0) + (n["OutRateLimitGlobal"] ? $n["OutRateLimitGlobal"] : 0) }' /proc/net/snmp
}

# nmap_classes XML: nmap's states per port class (and reasons for the
# rejected class), one line.
nmap_classes() {
    python3 - "$1" "$rej_last" <<'PY'
import sys, xml.etree.ElementTree as ET
from collections import Counter
root = ET.parse(sys.argv[1]).getroot()
rej_last = int(sys.argv[2])
def cls(p):
    if p <= 20999: return "dropped"
    if p <= rej_last: return "rejected"
    if 22000 <= p <= 22099: return "open"
    return "closed"
def ports(spec):
    for part in spec.split(","):
        a, _, b = part.partition("-")
        yield from range(int(a), int(b or a) + 1)
states = {c: Counter() for c in ("dropped", "rejected", "open", "closed")}
reasons = Counter()
for h in root.iter("host"):
    for p in h.iter("port"):
        n, st = int(p.get("portid")), p.find("state")
        states[cls(n)][st.get("state")] += 1
        if cls(n) == "rejected": reasons[st.get("reason")] += 1
    for ex in h.iter("extraports"):
        for r in ex.iter("extrareasons"):
            for n in ports(r.get("ports", "")):
                states[cls(n)][ex.get("state")] += 1
                if cls(n) == "rejected": reasons[r.get("reason")] += 1
fmt = lambda c: " ".join(f"{k}={v}" for k, v in sorted(c.items()))
print(f"nmap: dropped[{fmt(states['dropped'])}] rejected[{fmt(states['rejected'])}; reasons {fmt(reasons)}] "
      f"open[{fmt(states['open'])}] closed[{fmt(states['closed'])}]")
PY
}

run_nmap() {
    timed "$work/nmap.$mode" "$client" nmap -sT -T4 -n -Pn --reason -p 20000-23999 -oX "$work/nmap.xml" -oG "$work/nmap.gnmap" "$target_ip"
    grep -oE '[0-9]+/open/' "$work/nmap.gnmap" | cut -d/ -f1 | sort >"$work/nmap.open" || true
    nmap_line=$(nmap_classes "$work/nmap.xml")
}

run_portcall() {
    local before
    before=$(icmp_ratelimited)
    timed "$work/portcall.$mode" "$client" "$BIN" probe "$target_ip:20000-23999" --format json
    limited=$(($(icmp_ratelimited) - before))
}

status=0
for mode in $ICMP; do
    case $mode in
        defaults) ip netns exec "$target" sysctl -qw net.ipv4.icmp_ratelimit=1000 ;;
        off) ip netns exec "$target" sysctl -qw net.ipv4.icmp_ratelimit=0 ;;
        *) echo "ICMP modes: defaults, off" >&2; exit 2 ;;
    esac
    : >"$work/nmap.$mode"; : >"$work/portcall.$mode"; : >"$work/exact.$mode"
    for rep in $(seq "$REPS"); do
        # Interleaved: the order alternates, and the target's ICMP buckets
        # refill between runs, as between two independent sweeps.
        if ((rep % 2)); then run_nmap; sleep 7; run_portcall; else run_portcall; sleep 7; run_nmap; fi
        sleep 7
        r="$work/portcall.$mode.stdout"
        jq -r '.results[] | select(.observed == "open") | .port' "$r" | sort >"$work/portcall.open"
        count() { jq "[.results[] | select(.port >= $1 and .port <= $2 and $3)] | length" "$r"; }
        timeout_plain='.observed == "timeout" and (.silence.possibly_rate_limited // false | not)'
        timeout_flag='.observed == "timeout" and (.silence.possibly_rate_limited // false)'
        dropped_plain=$(count 20000 20999 "$timeout_plain")
        dropped_flag=$(count 20000 20999 "$timeout_flag")
        rej_unreach=$(count 21000 "$rej_last" '.observed == "unreachable"')
        rej_flag=$(count 21000 "$rej_last" "$timeout_flag")
        rej_bare=$(count 21000 "$rej_last" "$timeout_plain")
        open_open=$(count 22000 22099 '.observed == "open"')
        closed_refused=$(jq "[.results[] | select((.port > $rej_last and .port < 22000) or .port > 22099) | select(.observed == \"refused\")] | length" "$r")
        fail=()
        diff -q "$work/nmap.open" "$work/portcall.open" >/dev/null || fail+=("open sets differ")
        diff -q "$work/want.open" "$work/portcall.open" >/dev/null || fail+=("portcall's open set is not the 100 listeners")
        [[ $((dropped_plain + dropped_flag)) == 1000 ]] || fail+=("dropped->timeout $((dropped_plain + dropped_flag))/1000")
        [[ $open_open == 100 ]] || fail+=("open->open $open_open/100")
        [[ $closed_refused == "$closed_count" ]] || fail+=("closed->refused $closed_refused/$closed_count")
        [[ $((rej_unreach + rej_flag)) == "$REJECTED" ]] || fail+=("rejected: $rej_bare bare timeouts or other outcomes")
        echo "$rej_unreach $rej_flag $rej_bare $dropped_plain $dropped_flag" >>"$work/exact.$mode"
        echo "[$mode] rep $rep: nmap $(tail -n 1 "$work/nmap.$mode" | cut -d' ' -f1) s, portcall $(tail -n 1 "$work/portcall.$mode" | cut -d' ' -f1) s;" \
            "portcall: rejected->unreachable $rej_unreach/$REJECTED, ->timeout flagged $rej_flag, bare timeout $rej_bare;" \
            "dropped->timeout $dropped_plain plain + $dropped_flag flagged /1000, open $open_open/100, closed->refused $closed_refused/$closed_count" \
            "(target rate-limited $limited ICMP errors)"
        echo "[$mode] rep $rep: $nmap_line"
        if ((${#fail[@]})); then
            printf '[%s] rep %s FAILED: %s\n' "$mode" "$rep" "${fail[*]}" >&2
            status=1
        fi
    done
done

for mode in $ICMP; do
    echo
    echo "(b) two-namespace lab, 4000 ports ($REJECTED rejected), target ICMP limits $mode, $REPS interleaved pairs, medians [min-max]:"
    summary "$work/nmap.$mode" "$work/portcall.$mode" 0.5
    range() { awk -v c="$2" '{ print $c }' "$1" | sort -g | awk 'NR == 1 { a = $1 } { b = $1 } END { printf "%s-%s", a, b }'; }
    echo "wall min-max: nmap $(range "$work/nmap.$mode" 1) s, portcall $(range "$work/portcall.$mode" 1) s"
    echo "portcall rejects, median: unreachable $(median "$work/exact.$mode" 1), flagged timeout $(median "$work/exact.$mode" 2), bare timeout $(median "$work/exact.$mode" 3) (of $REJECTED);" \
        "drops: plain timeout $(median "$work/exact.$mode" 4), flagged $(median "$work/exact.$mode" 5) (of 1000)"
done
exit "$status"
