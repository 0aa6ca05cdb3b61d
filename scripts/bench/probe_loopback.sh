#!/usr/bin/env bash
# Benchmark (a): a full TCP sweep of 127.0.0.1 ports 1-65535 with 100
# listeners, portcall beside `nmap -sT -T5`, REPS times each (alternating).
# The pairs are interleaved (nmap, then portcall, REPS times). Prints wall,
# CPU (user + sys) and peak RSS for both side by side: medians, min-max and
# the ratios, against the goals of issue 25 (portcall CPU <= 1.0x nmap's,
# RSS <= 1.5x, wall <= 0.6x); fails when the two do not find the same open
# ports or miss one of the 100 listeners.
#
#   cargo build --release -p portcall -p integration --bins
#   scripts/bench/probe_loopback.sh            # REPS=5 by default
#
# Needs nmap (Debian package nmap) and /usr/bin/time (package time). Only
# 127.0.0.1 is probed.
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/bench/lib.sh

REPS=${REPS:-5}
BIN=${PORTCALL:-target/release/portcall}
SERVER=${LAB_SERVER:-target/release/lab-server}
for f in "$BIN" "$SERVER"; do
    [[ -x $f ]] || { echo "build first: cargo build --release -p portcall -p integration --bins ($f missing)" >&2; exit 2; }
done
command -v nmap >/dev/null || { echo "needs nmap" >&2; exit 2; }
[[ -x /usr/bin/time ]] || { echo "needs /usr/bin/time (package time)" >&2; exit 2; }

work=$(mktemp -d)
server_pid=
cleanup() {
    if [[ -n $server_pid ]]; then kill "$server_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

# 100 listeners below the ephemeral port range, 100 apart.
listeners=$(seq 20000 100 29900 | paste -sd,)
"$SERVER" --bind 127.0.0.1 --tcp "$listeners" --lifetime 1800 >"$work/server.out" &
server_pid=$!
for _ in $(seq 100); do grep -q ready "$work/server.out" 2>/dev/null && break; sleep 0.1; done
grep -q ready "$work/server.out" || { echo "lab-server did not start" >&2; exit 1; }
seq 20000 100 29900 | sort >"$work/listeners"

status=0
for rep in $(seq "$REPS"); do
    timed "$work/nmap" - nmap -sT -T5 -n -Pn -p 1-65535 -oG "$work/nmap.gnmap" 127.0.0.1
    timed "$work/portcall" - "$BIN" probe 127.0.0.1:1-65535 --format json
    grep -oE '[0-9]+/open/' "$work/nmap.gnmap" | cut -d/ -f1 | sort >"$work/nmap.open"
    jq -r '.results[] | select(.observed == "open") | .port' "$work/portcall.stdout" | sort >"$work/portcall.open"
    total=$(jq '.results | length' "$work/portcall.stdout")
    if ! diff -q "$work/nmap.open" "$work/portcall.open" >/dev/null; then
        echo "rep $rep: open sets differ (< nmap, > portcall):" >&2
        diff "$work/nmap.open" "$work/portcall.open" >&2 || true
        status=1
    fi
    missing=$(comm -23 "$work/listeners" "$work/portcall.open" | wc -l)
    if [[ $total != 65535 || $missing != 0 ]]; then
        echo "rep $rep: portcall reported $total results and missed $missing listeners" >&2
        status=1
    fi
    echo "pair $rep: nmap $(tail -n 1 "$work/nmap") | portcall $(tail -n 1 "$work/portcall") (wall s, cpu s, RSS KiB); open: nmap $(wc -l <"$work/nmap.open"), portcall $(wc -l <"$work/portcall.open")"
done

# range FILE COLUMN: "min-max" of one column of a `timed` file.
range() {
    awk -v c="$2" '{ print $c }' "$1" | sort -g | sed -n '1p;$p' | paste -sd-
}

echo
echo "(a) loopback 1-65535, 100 listeners, $REPS interleaved pairs, median [min-max]:"
printf '%-10s %22s %22s %26s\n' "" "wall (s)" "cpu user+sys (s)" "peak RSS (KiB)"
for tool in nmap portcall; do
    printf '%-10s %22s %22s %26s\n' "$tool" \
        "$(median "$work/$tool" 1) [$(range "$work/$tool" 1)]" \
        "$(median "$work/$tool" 2) [$(range "$work/$tool" 2)]" \
        "$(median "$work/$tool" 3) [$(range "$work/$tool" 3)]"
done
awk -v pw="$(median "$work/portcall" 1)" -v nw="$(median "$work/nmap" 1)" \
    -v pc="$(median "$work/portcall" 2)" -v nc="$(median "$work/nmap" 2)" \
    -v pr="$(median "$work/portcall" 3)" -v nr="$(median "$work/nmap" 3)" 'BEGIN {
    split("wall cpu rss", name, " ")
    r["wall"] = pw / nw; r["cpu"] = pc / nc; r["rss"] = pr / nr
    goal["wall"] = 0.6; goal["cpu"] = 1.0; goal["rss"] = 1.5
    printf "ratio portcall/nmap (medians):"
    for (k = 1; k <= 3; k++)
        printf " %s %.2fx (goal <= %.1fx: %s)%s", name[k], r[name[k]], goal[name[k]],
            (r[name[k]] <= goal[name[k]] ? "met" : "missed"), (k < 3 ? "," : "\n")
}'
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
exit "$status"
