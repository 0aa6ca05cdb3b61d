#!/usr/bin/env bash
# Scale benchmark, portcall against nmap in interleaved pairs (root,
# iproute2, nftables, python3, /usr/bin/time, nmap): for each N, a bridge
# lab of N hosts (one network namespace each, a veth to a bridge in its
# own namespace, nothing in the root namespace, addresses from
# 198.18.0.0/15), a full-mesh plan of N hosts x PORTS ports
# (scripts/bench/mesh_plan.py: N*(N-1)*PORTS paths, all expected open),
# about DROP of the paths dropped by the target hosts' nft firewalls (a
# selection by SEED from scripts/bench/mesh_drops.py: the ground truth),
# then PAIRS interleaved pairs on that one lab. Pair k is one timed
# portcall round and one timed nmap round, portcall first when k is odd,
# nmap first when k is even, so that neither side always gets the warmer
# machine and the machine's noise hits both alike:
#
#   portcall round: one `portcall agent` per host is started (fresh for
#     every pair; its start-up, until all listen and are idle, is not
#     timed), one timed `portcall check` from host h1, the agents end.
#   nmap round: every host holds plain listeners on its ports (which never
#     accept: the kernel completes each handshake, the peer's cheapest
#     case; not timed), every host runs `nmap -sT -n -Pn -T4 --max-retries
#     RETRIES --max-rtt-timeout TIMEOUT_MS` on every other host's ports,
#     all hosts at once (timed from the first nmap's start to the last
#     one's end), the listeners end. nmap proves less: a handshake, not
#     that the planned host answered.
#
#   scripts/bench/mesh.sh [--pairs P] [N...]   # default: 10 25 50 100, 5 pairs
#   scripts/bench/mesh.sh --rounds P ...       # the same (older name)
#   PORTCALL_BIN=/path/to/portcall scripts/bench/mesh.sh --pairs 5 50
#   PORTS=10 DROP=0.05 SEED=14 TIMEOUT_MS=1000 RETRIES=1 ROUND_LIMIT=300 ...
#   PAIRS=5                      # as --pairs
#   NMAP=0                       # portcall's rounds alone (so does NMAP_ROUNDS=0)
#   NMAP_BIN=/path/to/nmap       # default: nmap from PATH
#   AGENT_ARGS=--no-rule-trace   # extra `portcall agent` arguments
#   KILL_STRAYS=1                # end leftover agent children after each round
#   CHECK_WRAP='heaptrack -o /tmp/ht'  # run each `check` under a profiler
#   CHECK_LOG=...                # the `check`'s RUST_LOG (default: its phase laps)
#   FLOOR_ROUNDS=3               # exchange-floor rounds per N after the pairs (default 0)
#   FLOOR_BIN=/path/to/exchange-floor   # default: a release build of it
#
# Without nmap (none on PATH, or NMAP=0) portcall's PAIRS rounds still run,
# the script says so, and there are no ratios.
#
# Every host has a static (`nud permanent`) neighbour entry for every other
# host: the kernel's neighbour table limit (gc_thresh3) is shared by all
# namespaces, and dynamic ARP for 100 x 99 pairs would overflow it and make
# the lab, not portcall, drop packets. Permanent entries are not counted
# against it (the script prints both numbers).
#
# Per pair: portcall's wall, nmap's wall and their ratio; portcall's
# coordinator peak RSS, the agents' RSS idle (before the round) and peak
# (VmHWM, after), the processes agents left in the lab, and each side's
# false results against the ground truth (portcall: every dropped path
# must be `timeout`/violation, every other path `open`/ok, mesh_score.py
# names the kinds; nmap: dropped `filtered`, others `open`); under it the
# coordinator's phases and the agents' sweeps.
#
# Optionally, after the pairs, the machine's own floor (FLOOR_ROUNDS
# rounds, not paired): every host runs `exchange-floor` (built from
# integration/src/bin/exchange-floor.rs) at one agreed moment, which does
# only the packets of portcall's nonce exchange to every other host's ports
# (an attempt given up after TIMEOUT_MS, RETRIES more for a port that did
# not answer), with no evidence, control channel or report. Its wall is the
# slowest host's sweep; fewer answers than open paths means it did less
# than portcall does (its own load cost it paths).
#
# Then a summary per N: the median and min-max wall of each side, the
# median of the pairs' ratios portcall/nmap and the ratio of the medians,
# the coordinator's peak RSS (median, max), the false results of each side
# per pair; a table of portcall's details (wall/floor, false kinds, agents'
# RSS) and, with FLOOR_ROUNDS, portcall/floor. Exits 1 when any portcall
# round had a false result (a gate), 2 on bad arguments or a lab that could
# not be built. Everything (agents, the check, listeners, nmap, namespaces
# pc<pid>-mesh-*) is torn down on exit, error, Ctrl-C or SIGTERM.
set -euo pipefail
cd "$(dirname "$0")/../.."

PAIRS=${PAIRS:-${ROUNDS:-5}}
ns_list=()
while (($#)); do
    case $1 in
        --pairs | --rounds) PAIRS=${2:?$1 needs a number}; shift 2 ;;
        --pairs=* | --rounds=*) PAIRS=${1#*=}; shift ;;
        -h | --help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        *[!0-9]* | '') echo "mesh.sh: not a host count: $1" >&2; exit 2 ;;
        *) ns_list+=("$1"); shift ;;
    esac
done
((${#ns_list[@]})) || ns_list=(10 25 50 100)
PORTS=${PORTS:-10}
DROP=${DROP:-0.05}
SEED=${SEED:-14}
TIMEOUT_MS=${TIMEOUT_MS:-1000}
RETRIES=${RETRIES:-1}
CONTROL_PORT=${CONTROL_PORT:-7400}
BASE_PORT=20000
# Bound of one `portcall check` or nmap round (seconds); past it the round
# is killed and scored as it stands (portcall: no report, every path false).
ROUND_LIMIT=${ROUND_LIMIT:-300}
NMAP=${NMAP:-1}
[[ ${NMAP_ROUNDS:-1} != 0 ]] || NMAP=0
NMAP_BIN=${NMAP_BIN:-nmap}
FLOOR_ROUNDS=${FLOOR_ROUNDS:-0}
[[ $FLOOR_ROUNDS =~ ^[0-9]+$ ]] || { echo "mesh.sh: FLOOR_ROUNDS must be a number, got $FLOOR_ROUNDS" >&2; exit 2; }
[[ $NMAP =~ ^[01]$ ]] || { echo "mesh.sh: NMAP must be 0 or 1, got $NMAP" >&2; exit 2; }
[[ $PAIRS =~ ^[1-9][0-9]*$ ]] || { echo "mesh.sh: --pairs must be a positive number, got $PAIRS" >&2; exit 2; }
for n in "${ns_list[@]}"; do
    ((n >= 2 && n <= 250)) || { echo "mesh.sh: N must be between 2 and 250, got $n" >&2; exit 2; }
done

if ((EUID != 0)); then echo "mesh.sh: needs root (network namespaces)" >&2; exit 2; fi
for tool in ip nft python3 timeout /usr/bin/time; do
    command -v "$tool" >/dev/null || { echo "mesh.sh: needs $tool" >&2; exit 2; }
done
if ((NMAP)) && ! command -v "$NMAP_BIN" >/dev/null; then
    echo "note: no nmap here ($NMAP_BIN): portcall's $PAIRS rounds per N run alone, without the peer and without ratios (apt-get install nmap)"
    NMAP=0
elif ((!NMAP)); then
    echo "note: NMAP=0: portcall's $PAIRS rounds per N run alone, without the peer and without ratios"
fi
if [[ -n ${PORTCALL_BIN:-} ]]; then
    BIN=$PORTCALL_BIN
else
    cargo build -q --release -p portcall
    BIN=${CARGO_TARGET_DIR:-target}/release/portcall
fi
[[ -x $BIN ]] || { echo "mesh.sh: no portcall binary at $BIN" >&2; exit 2; }
BIN=$(realpath "$BIN")
if ((FLOOR_ROUNDS)); then
    if [[ -z ${FLOOR_BIN:-} ]]; then
        cargo build -q --release -p integration --bin exchange-floor
        FLOOR_BIN=${CARGO_TARGET_DIR:-target}/release/exchange-floor
    fi
    [[ -x $FLOOR_BIN ]] || { echo "mesh.sh: no exchange-floor binary at $FLOOR_BIN" >&2; exit 2; }
    FLOOR_BIN=$(realpath "$FLOOR_BIN")
fi

# A hundred agents each hold a connection per path of theirs plus the
# canaries' and the control channel's: lift the descriptor limit.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# Namespaces are pc<pid>-mesh-*, like integration::Lab's pc<pid>-<seq>, so
# parallel runs never collide. Leftovers of a run that was SIGKILLed
# (its pid gone) are removed first; nothing else is touched.
PREFIX="pc$$-mesh-"
while read -r name _; do
    if [[ $name =~ ^pc([0-9]+)-mesh- ]] && ! kill -0 "${BASH_REMATCH[1]}" 2>/dev/null; then
        ip netns del "$name" 2>/dev/null || true
    fi
done < <(ip netns list)

work=$(mktemp -d /tmp/portcall-mesh.XXXXXX)
agents=()
check_pid=
nmap_pids=()
lab_ns=()
printed=
rows=$work/rows nmap_rows=$work/nmap_rows pair_rows=$work/pair_rows floor_rows=$work/floor_rows
: >"$rows"
: >"$nmap_rows"
: >"$pair_rows"
: >"$floor_rows"

# agents_down: ends the agents (or the nmap round's listeners, or the
# exchange-floor processes) and whatever else runs inside the lab; the
# namespaces stay.
agents_down() {
    local p
    if ((${#agents[@]})); then
        kill -TERM "${agents[@]}" 2>/dev/null || true
        for _ in $(seq 50); do
            local alive=0
            for p in "${agents[@]}"; do kill -0 "$p" 2>/dev/null && alive=1 && break; done
            ((alive)) || break
            sleep 0.1
        done
        kill -KILL "${agents[@]}" 2>/dev/null || true
        wait "${agents[@]}" 2>/dev/null || true
    fi
    agents=()
    # Whatever the agents left running inside the lab (a child that outlived
    # its agent keeps the namespace alive after `netns del`).
    local ns strays=()
    for ns in "${lab_ns[@]}"; do
        mapfile -t -O "${#strays[@]}" strays < <(ip netns pids "$ns" 2>/dev/null)
    done
    if ((${#strays[@]})); then
        kill -KILL "${strays[@]}" 2>/dev/null || true
    fi
}

lab_down() {
    agents_down
    if ((${#lab_ns[@]})); then
        printf 'netns del %s\n' "${lab_ns[@]}" | ip -force -batch - 2>/dev/null || true
    fi
    lab_ns=()
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [[ -n $check_pid ]]; then
        kill -TERM "$check_pid" 2>/dev/null || true
        wait "$check_pid" 2>/dev/null || true
    fi
    # The nmap round's `timeout` wrappers (each ends its nmap on TERM).
    if ((${#nmap_pids[@]})); then
        kill -TERM "${nmap_pids[@]}" 2>/dev/null || true
        wait "${nmap_pids[@]}" 2>/dev/null || true
    fi
    nmap_pids=()
    lab_down
    # Anything of ours still there (a namespace made before lab_ns knew it).
    ip netns list | awk -v p="$PREFIX" 'index($1, p) == 1 { print "netns del " $1 }' |
        ip -force -batch - 2>/dev/null || true
    [[ -n $printed ]] || table || true
    rm -rf "$work"
    exit "$rc"
}
trap cleanup EXIT
trap 'echo "mesh.sh: line $LINENO failed" >&2' ERR
trap 'exit 130' INT
trap 'exit 143' TERM

mac_of() { printf '02:00:c6:12:%02x:%02x' $(($1 >> 8)) $(($1 & 255)); }
# The addresses mesh_plan.py gives: 250 hosts per /24 of 198.18.0.0/15.
addr_of() { local k=$(($1 - 1)); echo "198.$((18 + k / 250 / 256)).$((k / 250 % 256)).$((k % 250 + 1))"; }
kib_mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

# lab_up N DIR: namespaces, bridge, addresses, permanent neighbours.
lab_up() {
    local n=$1 dir=$2 i j br="${PREFIX}br"
    lab_ns=("$br")
    for ((i = 1; i <= n; i++)); do lab_ns+=("${PREFIX}h$i"); done
    # Each namespace gets a TCP connection hash table of its own, as each
    # real host has: otherwise every agent's read of /proc/net/tcp (its
    # handshake watch) walks one table shared by all N hosts' sockets, a
    # cost of the lab, growing with N squared, that no real fleet has. The
    # root namespace's setting applies only to namespaces created while it
    # is set, and is put back at once.
    local child_ehash
    child_ehash=$(sysctl -n net.ipv4.tcp_child_ehash_entries 2>/dev/null || true)
    [[ -z $child_ehash ]] || sysctl -qw net.ipv4.tcp_child_ehash_entries=16384
    local rc=0
    printf 'netns add %s\n' "${lab_ns[@]}" | ip -batch - || rc=$?
    [[ -z $child_ehash ]] || sysctl -qw net.ipv4.tcp_child_ehash_entries="$child_ehash"
    ((rc == 0)) || return "$rc"
    {
        echo "link add br0 type bridge"
        echo "link set br0 up"
        for ((i = 1; i <= n; i++)); do
            echo "link add v$i type veth peer name eth0 address $(mac_of "$i") netns ${PREFIX}h$i"
            echo "link set v$i master br0 up"
        done
    } | ip -n "$br" -batch -
    # The bridge is a switch, not a firewall: where br_netfilter is loaded
    # (a new namespace then passes bridged frames to its own netfilter
    # hooks), the lab's switch skips them, as a real one has none.
    local f
    for f in iptables ip6tables arptables; do
        ip netns exec "$br" sysctl -qw "net.bridge.bridge-nf-call-$f=0" 2>/dev/null || true
    done
    for ((i = 1; i <= n; i++)); do
        {
            echo "link set lo up"
            echo "addr add $(addr_of "$i")/15 dev eth0"
            echo "link set eth0 up"
            for ((j = 1; j <= n; j++)); do
                ((j == i)) || echo "neigh replace $(addr_of "$j") lladdr $(mac_of "$j") dev eth0 nud permanent"
            done
        } >"$dir/ip-h$i"
        ip -n "${PREFIX}h$i" -batch "$dir/ip-h$i"
    done
}

# neigh_count N STATE: neighbour entries of STATE (permanent or all) over all hosts.
neigh_count() {
    local i total=0 c
    for ((i = 1; i <= $1; i++)); do
        if [[ $2 == permanent ]]; then
            c=$(ip -n "${PREFIX}h$i" neigh show nud permanent | wc -l)
        else
            c=$(ip -n "${PREFIX}h$i" neigh show | wc -l)
        fi
        total=$((total + c))
    done
    echo "$total"
}

# firewalls N DIR DROPS: each target host drops its selected (source, port) pairs.
firewalls() {
    local n=$1 dir=$2 drops=$3 i
    python3 - "$drops" "$dir" "$n" <<'PY'
import collections, sys
drops, out, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
def addr(h):
    k = int(h[1:]) - 1
    return f"198.{18 + k // 250 // 256}.{k // 250 % 256}.{k % 250 + 1}"
by_target = collections.defaultdict(list)
for line in open(drops):
    s, t, p = line.split()
    by_target[t].append(f"{addr(s)} . {p}")
for i in range(1, n + 1):
    elems = by_target.get(f"h{i}", [])
    with open(f"{out}/fw-h{i}.nft", "w") as f:
        f.write("table inet pcmesh {\n")
        f.write("  set drops { type ipv4_addr . inet_service\n")
        if elems:
            f.write("    elements = { " + ", ".join(elems) + " }\n")
        f.write("  }\n")
        f.write("  chain input { type filter hook input priority 0; policy accept;\n")
        f.write("    ip saddr . tcp dport @drops drop\n  }\n}\n")
PY
    for ((i = 1; i <= n; i++)); do
        ip netns exec "${PREFIX}h$i" nft -f "$dir/fw-h$i.nft"
    done
}

# agents_ready N: every agent's control port is listening (read from the
# agent's own /proc/PID/net/tcp, which shows its namespace).
agents_ready() {
    local hex p
    hex=$(printf ':%04X' "$CONTROL_PORT")
    for p in "${agents[@]}"; do
        kill -0 "$p" 2>/dev/null || return 2
        awk -v h="$hex" '$4 == "0A" && substr($2, length($2) - 4) == h { f = 1 } END { exit !f }' \
            "/proc/$p/net/tcp" || return 1
    done
}

# strays: processes in the lab's namespaces that are not agents (children
# an agent should have ended; counted after each round).
strays() {
    local ns
    for ns in "${lab_ns[@]}"; do ip netns pids "$ns" 2>/dev/null; done |
        { grep -vxF -f <(printf '%s\n' "${agents[@]}") || true; } | wc -l
}

# kill_strays: ends them (KILL_STRAYS=1: to tell their cost from the rest).
kill_strays() {
    local ns p
    for ns in "${lab_ns[@]}"; do
        for p in $(ip netns pids "$ns" 2>/dev/null); do
            [[ " ${agents[*]} " == *" $p "* ]] || kill -KILL "$p" 2>/dev/null || true
        done
    done
}

# agents_cpu: CPU ticks (user + system) the agents have used so far.
agents_cpu() {
    local p
    for p in "${agents[@]}"; do cat "/proc/$p/stat" 2>/dev/null; done |
        sed 's/.*) //' | awk '{ t += $12 + $13 } END { print t + 0 }'
}

# rss FIELD: median and max of FIELD (VmRSS, VmHWM) over the agents, in KiB.
rss() {
    local p files=()
    for p in "${agents[@]}"; do files+=("/proc/$p/status"); done
    awk -v f="$1:" '$1 == f { print $2 }' "${files[@]}" | sort -n |
        awk '{ v[NR] = $1 } END { printf "%d %d\n", v[int((NR + 1) / 2)], v[NR] }'
}

# agents_up N DIR PLAN: one agent per host, started fresh, until every one
# listens and together they are idle (not timed); sets up_s.
agents_up() {
    local n=$1 dir=$2 plan=$3 i t0=$SECONDS rc deadline settle_deadline cpu0 cpu1
    for ((i = 1; i <= n; i++)); do
        # shellcheck disable=SC2086 # AGENT_ARGS: words on purpose
        RUST_LOG=${RUST_LOG:-warn,probe_core::agent=info} ip netns exec "${PREFIX}h$i" "$BIN" agent --plan "$plan" --host "h$i" --pki "$dir/pki" ${AGENT_ARGS:-} \
            </dev/null >"$dir/agent-h$i.log" 2>&1 &
        agents+=($!)
    done
    deadline=$((SECONDS + 60 + 2 * n))
    until agents_ready; do
        rc=$?
        if ((rc == 2)) || ((SECONDS > deadline)); then
            echo "mesh.sh: agents not ready after $((SECONDS - t0)) s ($( ((rc == 2)) && echo 'one exited' || echo 'timed out'))" >&2
            tail -n 3 "$dir"/agent-*.log | head -n 40 >&2
            exit 2
        fi
        sleep 0.5
    done
    # Listening is not idle: wait (bounded) until the agents together use
    # under a tenth of a CPU, so startup work is not timed as the round.
    settle_deadline=$((SECONDS + 60 + n))
    cpu0=$(agents_cpu)
    while sleep 1; do
        cpu1=$(agents_cpu)
        (((cpu1 - cpu0) * 10 < $(getconf CLK_TCK))) && break
        cpu0=$cpu1
        if ((SECONDS > settle_deadline)); then
            echo "note: the agents still use $(((cpu1 - cpu0) * 100 / $(getconf CLK_TCK)))% CPU; timing anyway"
            break
        fi
    done
    up_s=$((SECONDS - t0))
}

# portcall_round N PATHS FLOOR K DIR PLAN DROPS: pair K's portcall side:
# agents up, one timed `portcall check` from h1, scored, agents down. Adds
# a row to $rows, sets pc_* for the pair's line, prints its details.
portcall_round() {
    local n=$1 paths=$2 floor=$3 k=$4 dir=$5 plan=$6 drops=$7
    local idle_med idle_max hwm_max report=$dir/report.json tfile=$dir/time code stray wall coord score false kinds phases sweeps
    agents_up "$n" "$dir" "$plan"
    read -r idle_med idle_max < <(rss VmRSS)
    rm -f "$report" "$tfile"
    # shellcheck disable=SC2086 # CHECK_WRAP: words on purpose
    RUST_LOG=${CHECK_LOG:-warn,probe_core::round=info,portcall::check_cmd=info} \
        timeout -k 10 "$ROUND_LIMIT" ip netns exec "${PREFIX}h1" /usr/bin/time -f '%e %M' -o "$tfile" \
        ${CHECK_WRAP:-} "$BIN" check --plan "$plan" --pki "$dir/pki" --format json --out "$report" \
        </dev/null >/dev/null 2>"$dir/check.err" &
    check_pid=$!
    code=0
    wait "$check_pid" || code=$?
    check_pid=
    read -r _ hwm_max < <(rss VmHWM)
    sleep 1
    stray=$(strays)
    ((${KILL_STRAYS:-0} == 0)) || kill_strays
    if [[ -s $tfile ]] && read -r wall coord < <(tail -n 1 "$tfile") && [[ $wall =~ ^[0-9.]+$ ]]; then :; else
        wall=$ROUND_LIMIT coord=0
    fi
    score=$(python3 scripts/bench/mesh_score.py "$report" "$drops" "$n" "$PORTS" "$BASE_PORT")
    false=$(sed -n '1s/^false=\([0-9]*\).*/\1/p' <<<"$score")
    kinds=$(sed -n '1s/.* kinds=\([^ ]*\).*/\1/p' <<<"$score")
    echo "$n $paths $floor $k $wall $coord $idle_med $idle_max $hwm_max $false $kinds $code $stray" >>"$rows"
    pc_wall=$wall pc_coord=$coord pc_idle_med=$idle_med pc_idle_max=$idle_max pc_hwm=$hwm_max pc_stray=$stray pc_false=$false
    echo "portcall: agents up (listening, idle) in $up_s s; false kinds: $kinds"
    # `check` exits 1 for the dropped paths' violations; anything but
    # 0/1 is worth seeing.
    if ((code != 0 && code != 1)); then
        echo "  check exited $code: $(tail -n 2 "$dir/check.err" | tr '\n' ' ')"
    fi
    sed -n '2,$p' <<<"$score"
    # Where the round's time went: the coordinator's phase laps.
    phases=$(sed -n 's/.*phase="\([^"]*\)" elapsed_ms=\([0-9]*\).*/\1 at \2 ms/p; s/.*report joined and written elapsed_ms=\([0-9]*\).*/report in \1 ms/p' "$dir/check.err" | paste -sd, - | sed 's/,/, /g')
    [[ -z $phases ]] || echo "  phases: $phases"
    # And the agents' own sweeps (this round's `probes done` lines).
    sweeps=$(cat "$dir"/agent-h*.log | sed -n "s/.*probes done round=$(sed -n 's/.*round starting round=\([0-9a-f]*\).*/\1/p' "$dir/check.err" | head -n 1) .* ms=\([0-9]*\).*/\1/p" | sort -n)
    if [[ -n $sweeps ]]; then
        echo "  agent sweeps: median $(awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }' <<<"$sweeps") ms, max $(tail -n 1 <<<"$sweeps") ms ($(wc -l <<<"$sweeps") agents)"
    fi
    agents_down
}

# listeners_up N DIR: every host holds plain listeners on its ports that
# never accept (in $agents, so agents_down ends them).
listeners_up() {
    local n=$1 dir=$2 i last=$((BASE_PORT + PORTS - 1)) deadline
    for ((i = 1; i <= n; i++)); do
        rm -f "$dir/hold-h$i.log"
        ip netns exec "${PREFIX}h$i" python3 -c '
import socket, sys, time
held = []
for port in range(int(sys.argv[2]), int(sys.argv[3]) + 1):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((sys.argv[1], port))
    s.listen(4096)
    held.append(s)
print("ready", flush=True)
time.sleep(3600)
' "$(addr_of "$i")" "$BASE_PORT" "$last" >"$dir/hold-h$i.log" 2>&1 &
        agents+=($!)
    done
    deadline=$((SECONDS + 60))
    for ((i = 1; i <= n; i++)); do
        until grep -q ready "$dir/hold-h$i.log" 2>/dev/null; do
            if ((SECONDS > deadline)); then
                echo "mesh.sh: listeners for nmap not up on h$i: $(head -c 300 "$dir/hold-h$i.log")" >&2
                exit 2
            fi
            sleep 0.1
        done
    done
}

# nmap_round N K DIR DROPS: pair K's nmap side: listeners up, one timed
# round of nmap from every host at once, scored, listeners down. Adds a
# row to $nmap_rows, sets nm_wall and nm_false, prints its details.
nmap_round() {
    local n=$1 k=$2 dir=$3 drops=$4 i j last=$((BASE_PORT + PORTS - 1)) t0 t1 wall score false kinds
    listeners_up "$n" "$dir"
    rm -f "$dir"/nmap-h*.gnmap
    t0=$(date +%s%N)
    for ((i = 1; i <= n; i++)); do
        local others=()
        for ((j = 1; j <= n; j++)); do ((j == i)) || others+=("$(addr_of "$j")"); done
        timeout -k 10 "$ROUND_LIMIT" ip netns exec "${PREFIX}h$i" "$NMAP_BIN" -sT -n -Pn -T4 \
            --max-retries "$RETRIES" --max-rtt-timeout "${TIMEOUT_MS}ms" -p "$BASE_PORT-$last" \
            -oG "$dir/nmap-h$i.gnmap" "${others[@]}" >/dev/null 2>"$dir/nmap-h$i.err" &
        nmap_pids+=($!)
    done
    wait "${nmap_pids[@]}" 2>/dev/null || true
    t1=$(date +%s%N)
    nmap_pids=()
    wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", (b - a) / 1e9 }')
    score=$(python3 scripts/bench/mesh_nmap_score.py "$dir" "$drops" "$n" "$PORTS")
    read -r false kinds <<<"$score"
    echo "$n $k $wall $false $kinds" >>"$nmap_rows"
    nm_wall=$wall nm_false=$false
    echo "nmap: false kinds: $kinds"
    agents_down
}

# floor_pass N DIR DROPPED: FLOOR_ROUNDS rounds of exchange-floor in every
# host at once; the wall is the slowest host's sweep.
floor_pass() {
    local n=$1 dir=$2 dropped=$3 i j r
    local last=$((BASE_PORT + PORTS - 1)) open=$((n * (n - 1) * PORTS - dropped))
    echo "exchange-floor from every host at once: the exchange's packets and nothing else ($open paths answer)"
    printf '%5s %8s %9s\n' round wall_s answered
    for ((r = 1; r <= FLOOR_ROUNDS; r++)); do
        agents_down
        local start=$(($(date +%s%3N) + 3000 + 30 * n))
        for ((i = 1; i <= n; i++)); do
            local others=()
            for ((j = 1; j <= n; j++)); do ((j == i)) || others+=("$(addr_of "$j")"); done
            ip netns exec "${PREFIX}h$i" "$FLOOR_BIN" --bind "$(addr_of "$i")" --ports "$BASE_PORT-$last" \
                --start-ms "$start" --timeout-ms "$TIMEOUT_MS" --retries "$RETRIES" --lifetime "$ROUND_LIMIT" "${others[@]}" \
                </dev/null >"$dir/floor-h$i.out" 2>&1 &
            agents+=($!)
        done
        local deadline=$((SECONDS + 10 + ROUND_LIMIT)) done_hosts
        while :; do
            done_hosts=$({ grep -l '^sweep_ms=' "$dir"/floor-h*.out 2>/dev/null || true; } | wc -l)
            ((done_hosts < n)) || break
            if ((SECONDS > deadline)); then
                echo "mesh.sh: exchange-floor finished on $done_hosts of $n hosts: $(grep -hv '^ready' "$dir"/floor-h*.out | head -n 3)" >&2
                exit 2
            fi
            sleep 0.2
        done
        local wall answered
        wall=$(sed -n 's/^sweep_ms=\([0-9]*\).*/\1/p' "$dir"/floor-h*.out | sort -n | tail -n 1 | awk '{ printf "%.2f", $1 / 1000 }')
        answered=$(sed -n 's/^sweep_ms=[0-9]* ok=\([0-9]*\).*/\1/p' "$dir"/floor-h*.out | awk '{ t += $1 } END { print t + 0 }')
        echo "$n $r $wall $answered $open" >>"$floor_rows"
        printf '%5s %8s %9s\n' "$r" "$wall" "$answered"
    done
    agents_down
}

# median_of FILE N COLUMN: median of a column of N's rows in FILE ("-": none).
median_of() {
    awk -v n="$2" -v c="$3" '$1 == n { print $c }' "$1" | sort -g |
        awk '{ v[NR] = $1 } END { if (!NR) print "-"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
# range_of FILE N COLUMN: "min-max" of a column of N's rows in FILE ("-": none).
range_of() {
    awk -v n="$2" -v c="$3" '$1 == n { if (!k++ || $c < lo) lo = $c; if ($c > hi) hi = $c }
        END { if (k) printf "%.2f-%.2f\n", lo, hi; else print "-" }' "$1"
}
# list_of FILE N COLUMN: N's values of a column, comma-separated ("-": none).
list_of() { awk -v n="$2" -v c="$3" '$1 == n { printf "%s%s", s, $c; s = "," } END { if (!s) printf "-"; print "" }' "$1"; }
median_col() { median_of "$rows" "$@"; } # median_col N COLUMN: of portcall's rows
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b == 0) print "-"; else printf "%.2fx\n", a / b }'; }
f2() { awk -v v="$1" 'BEGIN { if (v == "-") print "-"; else printf "%.2f\n", v }'; }
fx() { awk -v v="$1" 'BEGIN { if (v == "-") print "-"; else printf "%.2fx\n", v }'; }
max_col() { awk -v n="$1" -v c="$2" '$1 == n && $c > m { m = $c } END { print m + 0 }' "$rows"; }

# rows: N paths floor pair wall coord_kib idle_med idle_max hwm_max false kinds exit strays
# nmap_rows: N pair wall false kinds; pair_rows: N pair first portcall_wall nmap_wall ratio
table() {
    [[ -s $rows ]] || return 0
    printed=1
    local n
    echo
    if [[ -s $nmap_rows ]]; then
        echo "portcall and nmap in interleaved pairs on the same lab (pair k: portcall first when k is odd, nmap first when even)"
    else
        echo "portcall's rounds alone (no nmap: no ratios)"
    fi
    echo "walls in s: median, min-max over the pairs; pc/nmap: median of the pairs' ratios, and med/med: the ratio of the medians;"
    echo "coordinator peak RSS in MiB (median, max); false results of each side, per pair"
    printf '%-9s %5s %8s %11s %9s %11s %8s %8s %9s %9s %-14s %s\n' \
        hosts pairs pc_wall pc_min-max nmap_wall nmap_min-max pc/nmap med/med coord_med coord_max pc_false nmap_false
    for n in $(awk '{ print $1 }' "$rows" | uniq); do
        local pw nw
        pw=$(median_col "$n" 5) nw=$(median_of "$nmap_rows" "$n" 3)
        printf '%-9s %5s %8s %11s %9s %11s %8s %8s %9s %9s %-14s %s\n' \
            "${n}x$PORTS" "$(awk -v n="$n" '$1 == n' "$rows" | wc -l)" "$(f2 "$pw")" "$(range_of "$rows" "$n" 5)" \
            "$(f2 "$nw")" "$(range_of "$nmap_rows" "$n" 3)" \
            "$(fx "$(median_of "$pair_rows" "$n" 6)")" \
            "$(ratio "$pw" "$nw")" "$(kib_mib "$(median_col "$n" 6)")" "$(kib_mib "$(max_col "$n" 6)")" \
            "$(list_of "$rows" "$n" 10)" "$(list_of "$nmap_rows" "$n" 4)"
    done
    echo
    echo "portcall's rounds in detail (medians over the pairs; RSS in MiB; agent idle = median agent before the round, max = largest;"
    echo "agent peak = largest VmHWM after; strays = most processes other than the agents left in the lab's namespaces a second after a round)"
    printf '%-9s %7s %7s %8s %11s %-34s %11s %10s %11s %7s\n' \
        hosts paths floor_s wall_s wall/floor "false kinds (all rounds)" agent_idle idle_max agent_peak strays
    for n in $(awk '{ print $1 }' "$rows" | uniq); do
        local paths floor wall kinds
        paths=$(awk -v n="$n" '$1 == n { print $2; exit }' "$rows")
        floor=$(awk -v n="$n" '$1 == n { print $3; exit }' "$rows")
        wall=$(median_col "$n" 5)
        kinds=$(awk -v n="$n" '$1 == n && $11 != "-" { k = split($11, a, ","); for (i = 1; i <= k; i++) { split(a[i], b, ":"); t[b[1]] += b[2] } }
            END { s = ""; for (x in t) { s = s (s ? "," : "") x ":" t[x] }; print (s ? s : "-") }' "$rows")
        printf '%-9s %7s %7s %8.2f %10.2fx %-34s %11s %10s %11s %7s\n' \
            "${n}x$PORTS" "$paths" "$floor" "$wall" "$(awk -v a="$wall" -v b="$floor" 'BEGIN { print a / b }')" \
            "$kinds" "$(kib_mib "$(median_col "$n" 7)")" \
            "$(kib_mib "$(max_col "$n" 8)")" "$(kib_mib "$(max_col "$n" 9)")" "$(max_col "$n" 13)"
    done
    if [[ -s $nmap_rows ]] && awk '$5 != "-" { f = 1 } END { exit !f }' "$nmap_rows"; then
        echo
        echo "nmap's false results by kind (all pairs; nmap proves a handshake, portcall the planned host's answer)"
        for n in $(awk '{ print $1 }' "$nmap_rows" | uniq); do
            printf '%-9s %s\n' "${n}x$PORTS" "$(awk -v n="$n" '$1 == n && $5 != "-" { printf "%s%s", s, $5; s = " " }' "$nmap_rows")"
        done
    fi
    if [[ -s $floor_rows ]]; then
        echo
        echo "the machine's floor on the same labs: exchange-floor from every host at once (medians; the exchange's packets, nothing else)"
        printf '%-9s %13s %16s %15s %s\n' hosts floor_wall_s portcall_wall_s portcall/floor "answered/round (of)"
        for n in $(awk '{ print $1 }' "$floor_rows" | uniq); do
            local fw pw
            fw=$(median_of "$floor_rows" "$n" 3)
            pw=$(median_col "$n" 5)
            printf '%-9s %13.2f %16.2f %15s %s\n' "${n}x$PORTS" "$fw" "$pw" \
                "$(ratio "$pw" "$fw")" \
                "$(awk -v n="$n" '$1 == n { printf "%s%s", s, $4; s = ","; o = $5 } END { printf " (%s)", o }' "$floor_rows")"
        done
    fi
}

# run_pairs N PATHS FLOOR DIR PLAN DROPS: the PAIRS interleaved pairs of
# one lab, a line each (the sides' details under it).
run_pairs() {
    local n=$1 paths=$2 floor=$3 dir=$4 plan=$5 drops=$6 k first side
    if ((NMAP)); then
        echo "pairs: portcall check from h1 | nmap -sT -T4 --max-retries $RETRIES --max-rtt-timeout ${TIMEOUT_MS}ms from every host at once, against listeners that never accept"
    else
        echo "portcall's rounds alone (no nmap)"
    fi
    printf '%4s %-8s %8s %8s %8s %9s %8s %8s %10s %6s %8s %10s\n' \
        pair first pc_wall nmap_wall pc/nmap coord_MiB idle_MiB idle_max agent_peak strays pc_false nmap_false
    for ((k = 1; k <= PAIRS; k++)); do
        local sides=(portcall nmap) details=$dir/pair-$k.details
        ((k % 2)) || sides=(nmap portcall)
        ((NMAP)) || sides=(portcall)
        first=${sides[0]}
        nm_wall=- nm_false=-
        : >"$details"
        for side in "${sides[@]}"; do
            case $side in
                portcall) portcall_round "$n" "$paths" "$floor" "$k" "$dir" "$plan" "$drops" >>"$details" ;;
                nmap) nmap_round "$n" "$k" "$dir" "$drops" >>"$details" ;;
            esac
        done
        local r
        r=$(ratio "$pc_wall" "$nm_wall")
        [[ $nm_wall == - ]] || echo "$n $k $first $pc_wall $nm_wall $(awk -v a="$pc_wall" -v b="$nm_wall" 'BEGIN { print a / b }')" >>"$pair_rows"
        printf '%4s %-8s %8s %8s %8s %9s %8s %8s %10s %6s %8s %10s\n' "$k" "$first" "$pc_wall" "$nm_wall" "$r" \
            "$(kib_mib "$pc_coord")" "$(kib_mib "$pc_idle_med")" "$(kib_mib "$pc_idle_max")" "$(kib_mib "$pc_hwm")" \
            "$pc_stray" "$pc_false" "$nm_false"
        sed 's/^/       /' "$details"
    done
}

echo "portcall: $BIN ($("$BIN" --version))"
if ((NMAP)); then echo "nmap: $(command -v "$NMAP_BIN") ($("$NMAP_BIN" --version | head -n 1))"; fi
echo "mesh: N = ${ns_list[*]}, $PORTS ports, drop $DROP (seed $SEED), $PAIRS pairs$( ((NMAP)) || echo ' (portcall only)'), $FLOOR_ROUNDS floor rounds; gc_thresh3 = $(cat /proc/sys/net/ipv4/neigh/default/gc_thresh3); load: $(cut -d' ' -f1-3 /proc/loadavg)"
for n in "${ns_list[@]}"; do
    dir=$work/n$n
    mkdir -p "$dir"
    plan=$dir/plan.toml drops=$dir/drops
    scripts/bench/mesh_plan.py "$n" "$PORTS" --timeout-ms "$TIMEOUT_MS" --retries "$RETRIES" \
        --control-port "$CONTROL_PORT" --base-port "$BASE_PORT" >"$plan"
    scripts/bench/mesh_drops.py "$n" "$PORTS" --base-port "$BASE_PORT" --drop "$DROP" --seed "$SEED" >"$drops"
    paths=$((n * (n - 1) * PORTS))
    # The floor from the plan: timeout_ms x (1 + retries) for a dropped path.
    floor=$(awk -F' *= *' '$1 == "timeout_ms" { t = $2 } $1 == "retries" { r = $2 } END { printf "%.1f", t * (1 + r) / 1000 }' "$plan")
    echo
    echo "== $n hosts x $PORTS ports: $paths paths, $(wc -l <"$drops") dropped; floor ${floor} s (timeout_ms $TIMEOUT_MS x (1 + retries $RETRIES)); load: $(cut -d' ' -f1-3 /proc/loadavg)"
    t0=$SECONDS
    "$BIN" pki init --dir "$dir/pki" >"$dir/pki.log" 2>&1 || { cat "$dir/pki.log" >&2; exit 2; }
    "$BIN" pki issue --dir "$dir/pki" --plan "$plan" >"$dir/pki.log" 2>&1 || { cat "$dir/pki.log" >&2; exit 2; }
    lab_up "$n" "$dir"
    firewalls "$n" "$dir" "$drops"
    perm=$(neigh_count "$n" permanent) all=$(neigh_count "$n" all)
    if ((perm != n * (n - 1))); then
        echo "mesh.sh: expected $((n * (n - 1))) permanent neighbours, found $perm" >&2
        exit 2
    fi
    echo "lab up in $((SECONDS - t0)) s: $((n + 1)) namespaces, $perm permanent neighbour entries ($all in all; gc_thresh3 $(cat /proc/sys/net/ipv4/neigh/default/gc_thresh3) does not count permanent ones)"
    run_pairs "$n" "$paths" "$floor" "$dir" "$plan" "$drops"
    if ((FLOOR_ROUNDS)); then
        floor_pass "$n" "$dir" "$(wc -l <"$drops")"
    fi
    lab_down
    if ip netns list | grep -q "^$PREFIX"; then
        echo "mesh.sh: namespaces left behind after teardown" >&2
        exit 2
    fi
done

table
if awk '$10 > 0 { f = 1 } END { exit !f }' "$rows"; then
    echo "false results: some portcall round had one (see above) -> exit 1"
    exit 1
fi
echo "false results: none in portcall's rounds"
