#!/usr/bin/env python3
"""Writes a full-mesh plan for the scale benchmarks: N hosts, each serving
PORTS TCP ports, and one flow from every host to every other host's ports
(N * (N - 1) * PORTS paths, all expected open).

    scripts/bench/mesh_plan.py N PORTS [--out FILE] [--drop FRACTION --seed S --drops FILE]

Hosts are h1..hN at 198.18.0.0/16 addresses (host i at 198.18.(i >> 8).(i & 255)),
ports 20001..20000+PORTS, timeout_ms 1000 and retries 1 unless told
otherwise. With --drops, a deterministic selection (by --seed) of
round(FRACTION * paths) paths is written to FILE as `FROM TO PORT` lines:
the ground truth of which paths the target hosts' firewalls drop
(scripts/bench/mesh.sh loads them, mesh_score.py scores a report
against them). The plan goes to standard output unless --out names a file.
"""

import argparse
import random
import sys

NET_BITS = 16


def host_name(i):
    return f"h{i}"


def host_address(i):
    return f"198.18.{i >> 8}.{i & 255}"


def plan_text(n, ports, base_port, timeout_ms, retries, control_port):
    out = [
        f'name = "mesh-{n}x{ports}"',
        "",
        "[defaults]",
        f"timeout_ms = {timeout_ms}",
        f"retries = {retries}",
        f"control_port = {control_port}",
        "",
        "[roles.mesh]",
        "ports = [",
    ]
    for p in range(1, ports + 1):
        out.append(f'  {{ name = "p{p}", port = {base_port + p}, offset = false }},')
    out.append("]")
    for i in range(1, n + 1):
        out += [
            "",
            "[[hosts]]",
            f'name = "{host_name(i)}"',
            f'address = "{host_address(i)}"',
            'roles = ["mesh"]',
        ]
    out += [
        "",
        "[[flows]]",
        'name = "full mesh"',
        'from = "all"',
        'to = "all"',
        "ports = [" + ", ".join(f'"p{p}"' for p in range(1, ports + 1)) + "]",
        'expect = "open"',
        "",
    ]
    return "\n".join(out)


def dropped(n, ports, base_port, fraction, seed):
    """The dropped paths as (from, to, port), in a stable order."""
    total = n * (n - 1) * ports
    count = round(fraction * total)
    picks = sorted(random.Random(seed).sample(range(total), count))
    per_source = (n - 1) * ports
    out = []
    for k in picks:
        s, rest = divmod(k, per_source)
        t, p = divmod(rest, ports)
        if t >= s:
            t += 1  # no path from a host to itself
        out.append((host_name(s + 1), host_name(t + 1), base_port + 1 + p))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("n", type=int, help="hosts")
    ap.add_argument("ports", type=int, help="ports per host")
    ap.add_argument("--out", help="write the plan here (default: standard output)")
    ap.add_argument("--base-port", type=int, default=20000)
    ap.add_argument("--timeout-ms", type=int, default=1000)
    ap.add_argument("--retries", type=int, default=1)
    ap.add_argument("--control-port", type=int, default=7400)
    ap.add_argument("--drop", type=float, default=0.05, help="fraction of paths dropped")
    ap.add_argument("--seed", type=int, default=14)
    ap.add_argument("--drops", help="write the dropped paths (FROM TO PORT) here")
    a = ap.parse_args()
    if not 2 <= a.n <= 65000:
        ap.error(f"N must be between 2 and 65000, got {a.n}")
    if not 1 <= a.ports or a.base_port + a.ports > 65535 or a.base_port < 0:
        ap.error(f"ports {a.base_port + 1}..{a.base_port + a.ports} do not fit 1..65535")
    if not 0.0 <= a.drop <= 1.0:
        ap.error(f"--drop must be a fraction between 0 and 1, got {a.drop}")
    text = plan_text(a.n, a.ports, a.base_port, a.timeout_ms, a.retries, a.control_port)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    if a.drops:
        with open(a.drops, "w") as f:
            for s, t, p in dropped(a.n, a.ports, a.base_port, a.drop, a.seed):
                f.write(f"{s} {t} {p}\n")


if __name__ == "__main__":
    main()
