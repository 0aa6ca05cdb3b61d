#!/usr/bin/env python3
"""Prints the ground truth of the mesh benchmark: which paths of the
N-host x M-port full mesh of scripts/bench/mesh_plan.py the target hosts'
firewalls drop, as `FROM TO PORT` lines (hosts h1..hN, ports
BASE..BASE+M-1): round(FRACTION x N x (N-1) x M) paths chosen by SEED, the
same ones for the same arguments.

    scripts/bench/mesh_drops.py 100 10 --drop 0.05 --seed 14 > /tmp/drops

scripts/bench/mesh.sh turns them into each target host's nft rules and
scripts/bench/mesh_score.py scores a report against them.
"""

import argparse
import random


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("hosts", type=int, help="N, the number of hosts (>= 2)")
    ap.add_argument("ports", type=int, help="M, planned ports per host (>= 1)")
    ap.add_argument("--base-port", type=int, default=20000)
    ap.add_argument("--drop", type=float, default=0.05, help="fraction of the paths dropped")
    ap.add_argument("--seed", type=int, default=14)
    a = ap.parse_args()
    if a.hosts < 2 or a.ports < 1:
        ap.error("need N >= 2 and M >= 1")
    if not 0.0 <= a.drop <= 1.0:
        ap.error(f"--drop must be a fraction between 0 and 1, got {a.drop}")
    n, m = a.hosts, a.ports
    total = n * (n - 1) * m
    per_source = (n - 1) * m
    for k in sorted(random.Random(a.seed).sample(range(total), round(a.drop * total))):
        s, rest = divmod(k, per_source)
        t, p = divmod(rest, m)
        if t >= s:
            t += 1  # no path from a host to itself
        print(f"h{s + 1} h{t + 1} {a.base_port + p}")


if __name__ == "__main__":
    main()
