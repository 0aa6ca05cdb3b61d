#!/usr/bin/env bash
# Shared helpers of the probe benchmarks (sourced, not run): timing one
# command with /usr/bin/time, medians, and the summary table.

# timed OUT NETNS CMD...: runs CMD (inside network namespace NETNS, or
# here when NETNS is "-"), its stdout to OUT.stdout, and appends
# "wall_s cpu_s rss_kib" to OUT. CMD's exit status is ignored: portcall
# exits 1 whenever some port is not open, which is the point of a sweep.
timed() {
    local out=$1 ns=$2
    shift 2
    local pre=() t
    if [[ $ns != - ]]; then pre=(ip netns exec "$ns"); fi
    t=$(mktemp)
    "${pre[@]}" /usr/bin/time -f '%e %U %S %M' -o "$t" "$@" >"$out.stdout" || true
    tail -n 1 "$t" | awk '{ printf "%.3f %.3f %d\n", $1, $2 + $3, $4 }' >>"$out"
    rm -f "$t"
}

# median FILE COLUMN: the median of one column of a `timed` file.
median() {
    awk -v c="$2" '{ print $c }' "$1" | sort -g | awk '
        { v[NR] = $1 }
        END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# summary NMAP_FILE PORTCALL_FILE GOAL: prints medians, the wall ratio, and
# whether the goal (portcall wall <= GOAL x nmap wall) is met.
summary() {
    local n=$1 p=$2 goal=$3
    local nw nc nr pw pc pr
    nw=$(median "$n" 1) nc=$(median "$n" 2) nr=$(median "$n" 3)
    pw=$(median "$p" 1) pc=$(median "$p" 2) pr=$(median "$p" 3)
    printf '%-10s %10s %10s %14s\n' "" "wall (s)" "cpu (s)" "peak RSS (KiB)"
    printf '%-10s %10s %10s %14s\n' nmap "$nw" "$nc" "$nr"
    printf '%-10s %10s %10s %14s\n' portcall "$pw" "$pc" "$pr"
    awk -v pw="$pw" -v nw="$nw" -v pc="$pc" -v nc="$nc" -v pr="$pr" -v nr="$nr" -v goal="$goal" 'BEGIN {
        r = pw / nw
        printf "ratio portcall/nmap: wall %.2fx, cpu %.2fx, rss %.2fx (goal: wall <= %sx: %s)\n",
            r, pc / nc, pr / nr, goal, (r <= goal ? "met" : "missed")
    }'
}

# lab_binaries: BIN and SERVER, the release portcall and lab-server (or
# $PORTCALL and $LAB_SERVER); exits 2 when one is missing.
lab_binaries() {
    local f
    BIN=$(realpath "${PORTCALL:-target/release/portcall}")
    SERVER=$(realpath "${LAB_SERVER:-target/release/lab-server}")
    for f in "$BIN" "$SERVER"; do
        [[ -x $f ]] || { echo "build first: cargo build --release -p portcall -p integration --bins ($f missing)" >&2; exit 2; }
    done
}

# two_host_lab PREFIX: namespaces $client (198.18.0.10) and $target
# ($target_ip, 198.18.0.11) on a bridge in a namespace of its own ($br),
# all named PREFIX<pid>-*, nothing in the root namespace; a scratch
# directory $work. On exit the lab-server $server_pid (when set), the
# namespaces and $work are removed.
two_host_lab() {
    local ns="$1$$" i=0 host
    br="$ns-br" client="$ns-client" target="$ns-target"
    target_ip=198.18.0.11
    work=$(mktemp -d)
    server_pid=
    trap two_host_lab_down EXIT
    ip netns add "$br"
    ip -n "$br" link set lo up
    ip -n "$br" link add br0 type bridge
    ip -n "$br" link set br0 up
    for host in "$client" "$target"; do
        ip netns add "$host"
        # Created in the bridge namespace, one end moved straight into the host.
        ip -n "$br" link add "p$i" type veth peer name eth0 netns "$host"
        ip -n "$br" link set "p$i" master br0 up
        ip -n "$host" link set lo up
        ip -n "$host" addr add "198.18.0.$((10 + i))/24" dev eth0
        ip -n "$host" link set eth0 up
        i=$((i + 1))
    done
}

two_host_lab_down() {
    local n
    if [[ -n ${server_pid:-} ]]; then kill "$server_pid" 2>/dev/null || true; fi
    for n in "$client" "$target" "$br"; do ip netns del "$n" 2>/dev/null || true; done
    rm -rf "$work"
}
