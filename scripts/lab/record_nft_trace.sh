#!/usr/bin/env bash
# Records real trace events into probe-core/src/agent/testdata/, for the
# parser tests of nftrace (text) and trace_netlink (netlink): the kernel's
# netlink trace messages as hex (one datagram a line), `nft -a monitor
# trace` of the installed nftables, and `nft -j monitor trace` (nftables
# 1.0.6 prints trace events as text even with -j: recorded to show it).
# Runs in a network namespace of its own with only its loopback: a trace
# table like an agent's, a rule drop, a reset, an ip6 policy drop and an
# output drop, each hit by one connection attempt to 127.0.0.1 or ::1 in
# that namespace. Needs root; removes the namespace on exit.
set -euo pipefail
out="$(cd "$(dirname "$0")/../.." && pwd)/probe-core/src/agent/testdata"
ver="$(nft --version | awk '{print $2}' | tr -d v)"
ns="pcrec-$$"
ip netns add "$ns"
trap 'ip netns del "$ns"' EXIT
ip -n "$ns" link set lo up
ip netns exec "$ns" nft -f - <<'RULES'
table inet portcall_trace_ab12_1999999999 {
  set in4 {
    type ipv4_addr . inet_service
    flags timeout
    elements = { 127.0.0.1 . 7701 timeout 60s, 127.0.0.1 . 7702 timeout 60s }
  }
  set in6 {
    type ipv6_addr . inet_service
    flags timeout
    elements = { ::1 . 7702 timeout 60s }
  }
  set out4 {
    type ipv4_addr . inet_service
    flags timeout
    elements = { 127.0.0.1 . 7703 timeout 60s }
  }
  chain pre {
    type filter hook prerouting priority -500; policy accept;
    ip saddr . tcp dport @in4 meta nftrace set 1
    ip6 saddr . tcp dport @in6 meta nftrace set 1
  }
  chain out {
    type filter hook output priority -500; policy accept;
    ip daddr . tcp dport @out4 meta nftrace set 1
  }
}
table inet filter {
  chain input {
    type filter hook input priority 0; policy accept;
    tcp dport 7701 drop comment "the culprit"
    tcp dport 7702 reject with tcp reset
  }
}
table ip6 filter6 {
  chain input {
    type filter hook input priority 0; policy drop;
  }
}
table ip legacyish {
  chain OUTPUT {
    type filter hook output priority 0; policy accept;
    tcp dport 7703 counter drop
  }
}
RULES
ip netns exec "$ns" timeout 3 python3 -c '
import socket, sys, time
# NETLINK_NETFILTER (12), group NFNLGRP_NFTRACE (9): bit 8 of the mask.
s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 12)
s.bind((0, 1 << 8))
s.settimeout(0.2)
end = time.time() + 2.4
with open(sys.argv[1], "w") as f:
    while time.time() < end:
        try:
            f.write(s.recv(65536).hex() + "\n")
            f.flush()
        except socket.timeout:
            pass
' "$out/netlink-$(uname -r | cut -d- -f1)-trace.hex" &
ip netns exec "$ns" timeout 3 nft -j monitor trace >"$out/nft-$ver-monitor-trace.jsonl" 2>&1 &
ip netns exec "$ns" timeout 3 nft -a monitor trace >"$out/nft-$ver-monitor-trace.txt" 2>&1 &
sleep 0.7
for target in 127.0.0.1/7701 127.0.0.1/7702 ::1/7702 127.0.0.1/7703; do
  ip netns exec "$ns" timeout 0.3 bash -c "exec 3<>/dev/tcp/$target" 2>/dev/null || true
done
wait
echo "recorded nft $ver into $out"
