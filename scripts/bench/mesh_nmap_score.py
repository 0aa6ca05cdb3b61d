#!/usr/bin/env python3
"""Scores one nmap round of scripts/bench/mesh.sh against the ground truth
(the dropped paths of mesh_drops.py): DIR holds nmap-hI.gnmap, the grepable
output of `nmap -sT` run from host hI; every dropped (source, target, port)
must be `filtered`, every other planned path `open`, and every planned path
must be there.

    scripts/bench/mesh_nmap_score.py DIR DROPS N PORTS

Prints one line, `FALSE KINDS`: the number of false results and their kinds
(`STATE-on-dropped`, `STATE-on-open`, `missing`), `KIND:COUNT,...` or `-`.
"""

import collections
import glob
import re
import sys


def name(addr):
    """The mesh host (hK) of an address mesh_plan.py gave."""
    a = [int(x) for x in addr.split(".")]
    return f"h{((a[1] - 18) * 256 + a[2]) * 250 + a[3]}"


def main():
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    d, drops_file, n, ports = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    drops = {tuple(l.split()) for l in open(drops_file) if l.strip()}
    kinds = collections.Counter()
    seen = set()
    for f in glob.glob(f"{d}/nmap-h*.gnmap"):
        src = re.search(r"nmap-(h\d+)\.gnmap$", f).group(1)
        for line in open(f):
            m = re.match(r"Host: (\S+) .*Ports: (.*)", line)
            if not m:
                continue
            dst = name(m.group(1))
            for entry in m.group(2).split(","):
                port, state = entry.strip().split("/")[:2]
                seen.add((src, dst, port))
                want = "filtered" if (src, dst, port) in drops else "open"
                if state != want:
                    kinds[f"{state}-on-{'dropped' if want == 'filtered' else 'open'}"] += 1
    missing = n * (n - 1) * ports - len(seen)
    if missing > 0:
        kinds["missing"] += missing
    print(sum(kinds.values()), ",".join(f"{k}:{v}" for k, v in sorted(kinds.items())) or "-")


if __name__ == "__main__":
    main()
