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
