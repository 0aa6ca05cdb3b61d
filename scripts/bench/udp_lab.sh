#!/usr/bin/env bash
# Benchmark: 200 UDP ports across the two-namespace lab, portcall beside
# `nmap -sU -T4` on the same port list, REPS interleaved pairs (the order
# alternates) for each setting of the target's ICMP limits in ICMP
# ("defaults": Linux's, a burst of six per peer then one a second; "off":
# net.ipv4.icmp_ratelimit 0, the host-wide 1000 a second left). The target
# has:
#   53      a DNS server (dnsmasq, authoritative for `.`),
#   7       an echo service (lab-server --udp-echo),
#   30000-30099 closed (nothing bound: ICMP port-unreachable),
#   30100-30197 dropped by nftables.
# Prints wall, CPU and peak-RSS medians with min-max and the ratio (goal:
# portcall wall <= 0.7x nmap), and the exactness of both per class:
# portcall must say closed -> refused, dropped -> timeout (never flagged
# as a possibly rate-limited reject), DNS and echo -> open; nmap's states
# per class are printed beside.
#
#   cargo build --release -p portcall -p integration --bins
#   sudo REPS=5 scripts/bench/udp_lab.sh
#
# Needs root, iproute2, nftables, nmap, dnsmasq, jq, python3 and
# /usr/bin/time. Everything lives in namespaces this script creates and is
# deleted on exit.
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/bench/lib.sh

REPS=${REPS:-5}
ICMP=${ICMP:-"off defaults"}
lab_binaries
[[ $(id -u) == 0 ]] || { echo "needs root (network namespaces)" >&2; exit 2; }
for t in ip nft nmap jq python3 dnsmasq; do command -v "$t" >/dev/null || { echo "needs $t" >&2; exit 2; }; done
PORTS=7,53,30000-30197

two_host_lab pcudp
ip netns exec "$target" nft -f - <<'NFT'
table ip bench {
  chain input {
    type filter hook input priority 0; policy accept;
    udp dport 30100-30197 drop
  }
}
NFT
ip netns exec "$target" "$SERVER" --bind "$target_ip" --udp-echo 7 --lifetime 3600 >"$work/server.out" &
server_pid=$!
ip netns exec "$target" dnsmasq --keep-in-foreground --conf-file=/dev/null --no-resolv --no-hosts \
    --pid-file= --user=root --log-facility=- --port=53 --listen-address="$target_ip" --bind-interfaces \
    --auth-server=ns1.lab.test,eth0 --auth-zone=. --host-record=ns1.lab.test,"$target_ip" 2>"$work/dnsmasq.log" &
dnsmasq_pid=$!
trap 'kill $dnsmasq_pid 2>/dev/null || true; two_host_lab_down' EXIT
for _ in $(seq 100); do grep -q ready "$work/server.out" 2>/dev/null && break; sleep 0.1; done
grep -q ready "$work/server.out" || { echo "lab-server did not start" >&2; exit 1; }
sleep 1

nmap_classes() {
    python3 - "$1" <<'PY'
import sys, xml.etree.ElementTree as ET
from collections import Counter
root = ET.parse(sys.argv[1]).getroot()
def cls(p):
    return {7: "echo", 53: "dns"}.get(p, "closed" if p <= 30099 else "dropped")
def ports(spec):
    for part in spec.split(","):
        a, _, b = part.partition("-")
        yield from range(int(a), int(b or a) + 1)
states = {c: Counter() for c in ("closed", "dropped", "dns", "echo")}
for h in root.iter("host"):
    for p in h.iter("port"):
        states[cls(int(p.get("portid")))][p.find("state").get("state")] += 1
    for ex in h.iter("extraports"):
        for r in ex.iter("extrareasons"):
            for n in ports(r.get("ports", "")):
                states[cls(n)][ex.get("state")] += 1
fmt = lambda c: " ".join(f"{k}={v}" for k, v in sorted(c.items()))
print("nmap: " + " ".join(f"{k}[{fmt(v)}]" for k, v in states.items()))
PY
}

run_nmap() {
    timed "$work/nmap.$mode" "$client" nmap -sU -T4 -n -Pn --reason -p "$PORTS" -oX "$work/nmap.xml" "$target_ip"
    nmap_line=$(nmap_classes "$work/nmap.xml")
}

run_portcall() {
    timed "$work/portcall.$mode" "$client" "$BIN" probe "$target_ip:$PORTS/udp" --format json
}

status=0
for mode in $ICMP; do
    case $mode in
        defaults) ip netns exec "$target" sysctl -qw net.ipv4.icmp_ratelimit=1000 ;;
        off) ip netns exec "$target" sysctl -qw net.ipv4.icmp_ratelimit=0 ;;
        *) echo "ICMP modes: defaults, off" >&2; exit 2 ;;
    esac
    : >"$work/nmap.$mode"; : >"$work/portcall.$mode"
    for rep in $(seq "$REPS"); do
        if ((rep % 2)); then run_nmap; sleep 7; run_portcall; else run_portcall; sleep 7; run_nmap; fi
        sleep 7
        r="$work/portcall.$mode.stdout"
        count() { jq "[.results[] | select(.port >= $1 and .port <= $2 and $3)] | length" "$r"; }
        closed=$(count 30000 30099 '.observed == "refused"')
        dropped=$(count 30100 30197 '.observed == "timeout" and (.silence.possibly_rate_limited // false | not)')
        dns=$(count 53 53 '.observed == "open"')
        echo_=$(count 7 7 '.observed == "open" and (.detail | startswith("echoed"))')
        waited=$(jq '[.results[] | select(.observed == "timeout") | .silence.waited_ms] | max' "$r")
        fail=()
        [[ $closed == 100 ]] || fail+=("closed->refused $closed/100")
        [[ $dropped == 98 ]] || fail+=("dropped->timeout $dropped/98")
        [[ $dns == 1 ]] || fail+=("dns not open")
        [[ $echo_ == 1 ]] || fail+=("echo not open (echoed)")
        echo "[$mode] rep $rep: nmap $(tail -n 1 "$work/nmap.$mode" | cut -d' ' -f1) s, portcall $(tail -n 1 "$work/portcall.$mode" | cut -d' ' -f1) s;" \
            "portcall: closed->refused $closed/100, dropped->timeout $dropped/98 (longest wait ${waited} ms), dns->open $dns/1, echo->open $echo_/1"
        echo "[$mode] rep $rep: $nmap_line"
        if ((${#fail[@]})); then
            printf '[%s] rep %s FAILED: %s\n' "$mode" "$rep" "${fail[*]}" >&2
            jq -c '.results[] | select(.port == 7 or .port == 53)' "$r" >&2
            status=1
        fi
    done
done

for mode in $ICMP; do
    echo
    echo "UDP lab, 200 ports, target ICMP limits $mode, $REPS interleaved pairs, medians:"
    summary "$work/nmap.$mode" "$work/portcall.$mode" 0.7
    range() { awk -v c="$2" '{ print $c }' "$1" | sort -g | awk 'NR == 1 { a = $1 } { b = $1 } END { printf "%s-%s", a, b }'; }
    echo "wall min-max: nmap $(range "$work/nmap.$mode" 1) s, portcall $(range "$work/portcall.$mode" 1) s"
done
exit "$status"
