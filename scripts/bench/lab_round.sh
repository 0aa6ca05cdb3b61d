#!/usr/bin/env bash
# The WSO2 round in the netns lab beside nmap (root, iproute2, nftables,
# nmap): the same paths, measured by one `portcall check` (agents on every
# host, canaries, nonces, evidence) and by `nmap -sT` run in parallel from
# every source host to its targets on exactly the ports of its paths, with
# real listeners on the planned ports. Both run behind the plan's correct
# firewall, so the must-be-blocked paths are dropped and set the pace.
# Prints wall-time medians and the ratio (goal: portcall <= 1.0x nmap), and
# checks both found the same open paths.
#
#   scripts/bench/lab_round.sh [RUNS]       # default 5
#
# CPU and RSS are not compared here: portcall's probing happens in the agent
# processes, not in the timed coordinator (see scripts/bench/round.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/bench/lib.sh

RUNS=${1:-5}
PLAN=${PLAN_FILE:-examples/wso2-distributed.toml}
COORD=${COORDINATOR:-operator}
export PROFILE=release
export PORTCALL_LAB_STATE
PORTCALL_LAB_STATE=$(mktemp -d)
work=$(mktemp -d)
servers=()
cleanup() {
    for p in "${servers[@]}"; do kill "$p" 2>/dev/null || true; done
    scripts/lab.sh down >/dev/null 2>&1 || true
    rm -rf "$work" "$PORTCALL_LAB_STATE"
}
trap cleanup EXIT

for tool in ip nft nmap python3 /usr/bin/time; do
    command -v "$tool" >/dev/null || { echo "lab_round.sh: needs $tool" >&2; exit 2; }
done

scripts/lab.sh rules "$PLAN" "$COORD" "$work/rules" >/dev/null
scripts/lab.sh up "$PLAN" "$work/rules" >/dev/null
. "$PORTCALL_LAB_STATE/env"
ns_of() { awk -v h="$1" '$1 == h { print $2 }' "$PORTCALL_LAB_STATE/hosts"; }
"$PORTCALL" plan show "$PLAN" --format json >"$work/plan.json"

echo "portcall check from $COORD, $RUNS runs"
for _ in $(seq "$RUNS"); do
    timed "$work/portcall.t" "$(ns_of "$COORD")" "$PORTCALL" check --plan "$PLAN" --pki "$PKI" --format json
    cp "$work/portcall.t.stdout" "$work/portcall.json"
done

# Real listeners on every planned port, now that no round holds canaries.
LAB_SERVER="$(dirname "$PORTCALL")/lab-server"
python3 - "$work/plan.json" >"$work/listeners" <<'PY'
import json, sys
plan = json.load(open(sys.argv[1]))
for h in plan["hosts"]:
    tcp = sorted({p["port"] for p in h["ports"] if p["protocol"] == "tcp"})
    tls = sorted({p["port"] for p in h["ports"] if p["protocol"] == "tls"})
    if tcp or tls:
        print(h["name"], h["address"], ",".join(map(str, tcp)) or "-", ",".join(map(str, tls)) or "-")
PY
while read -r host addr tcp tls; do
    args=(--bind "$addr" --lifetime 600)
    [[ $tcp != - ]] && args+=(--tcp "$tcp")
    [[ $tls != - ]] && args+=(--tls "$tls" --ca-out "$work/ca-$host.pem" --name "$host")
    ip netns exec "$(ns_of "$host")" "$LAB_SERVER" "${args[@]}" >"$work/server-$host.log" 2>&1 &
    servers+=($!)
    for _ in $(seq 100); do grep -qs '^ready' "$work/server-$host.log" && break; sleep 0.1; done
done <"$work/listeners"

# One nmap per (source, target) pair, on exactly that pair's ports, all at once.
python3 - "$work/plan.json" "$PORTCALL_LAB_STATE/hosts" "$work" >"$work/nmap.sh" <<'PY'
import json, sys, collections
plan = json.load(open(sys.argv[1]))
ns = {l.split()[0]: l.split()[1] for l in open(sys.argv[2]) if l.strip()}
pairs = collections.defaultdict(set)
addr = {}
for p in plan["paths"]:
    pairs[(p["from"], p["to"])].add(p["port"])
    addr[p["to"]] = p["address"]
print("#!/usr/bin/env bash")
for i, ((src, dst), ports) in enumerate(sorted(pairs.items())):
    out = f"{sys.argv[3]}/nmap-{i}.gnmap"
    print(f"echo {src} {dst} >{out}.pair")
    print(f"ip netns exec {ns[src]} nmap -sT -Pn -n -T4 -p {','.join(map(str, sorted(ports)))} -oG {out} {addr[dst]} >/dev/null &")
print("wait")
PY
echo "nmap -sT -T4 from every source in parallel, $RUNS runs"
for _ in $(seq "$RUNS"); do
    timed "$work/nmap.t" - bash "$work/nmap.sh"
done

# Same open paths?
python3 - "$work/portcall.json" "$work" <<'PY'
import glob, json, re, sys
report = json.load(open(sys.argv[1]))
pc = {(p["from"], p["to"], p["port"]) for p in report["paths"] if p["observed"] == "open"}
nm = set()
for g in glob.glob(f"{sys.argv[2]}/nmap-*.gnmap"):
    src, dst = open(g + ".pair").read().split()
    for m in re.finditer(r"(\d+)/open/tcp", open(g).read()):
        nm.add((src, dst, int(m.group(1))))
print(f"open paths: portcall {len(pc)}, nmap {len(nm)}: {'same set' if pc == nm else 'DIFFERENT'}")
if pc != nm:
    print("  only portcall:", sorted(pc - nm)[:10]); print("  only nmap:", sorted(nm - pc)[:10])
    sys.exit(1)
PY
echo
summary "$work/nmap.t" "$work/portcall.t" 1.0 | grep -v '^ratio' | awk '{ print $1, $2 }' | column -t
awk -v pw="$(median "$work/portcall.t" 1)" -v nw="$(median "$work/nmap.t" 1)" 'BEGIN {
    printf "ratio portcall/nmap wall: %.2fx (goal <= 1.0x: %s)\n", pw / nw, (pw / nw <= 1.0 ? "met" : "missed") }'
