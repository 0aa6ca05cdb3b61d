#!/usr/bin/env python3
"""Prints the plan TOML of an N-host x M-port full mesh (the scale
benchmarks' plan): hosts h1..hN on 198.18.0.0/15 (h1 = 198.18.0.1, 250
hosts per /24: h251 = 198.18.1.1), each serving one role `svc` of M ports
(BASE..BASE+M-1, TCP, no offset), and one flow from every host to every
other on all M ports: N*(N-1)*M paths.

    scripts/bench/mesh_plan.py 200 20 > /tmp/mesh.toml
    scripts/bench/mesh_plan.py 100 10 --timeout-ms 1000 --retries 1 \
        --control-port 7400 --base-port 20000

Addresses only: nothing here probes anything.
"""

import argparse
import sys


def address(i):
    """The address of host h<i> (1-based): 250 hosts per /24 of 198.18.0.0/15."""
    k = i - 1
    third, last = divmod(k, 250)
    if third > 511:
        raise SystemExit("too many hosts for 198.18.0.0/15")
    return "198.{}.{}.{}".format(18 + third // 256, third % 256, last + 1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("hosts", type=int, help="N, the number of hosts (>= 2)")
    ap.add_argument("ports", type=int, help="M, planned ports per host (>= 1)")
    ap.add_argument("--name", default=None, help="the plan's name (default mesh-NxM)")
    ap.add_argument("--base-port", type=int, default=20000)
    ap.add_argument("--timeout-ms", type=int, default=1000)
    ap.add_argument("--retries", type=int, default=1)
    ap.add_argument("--control-port", type=int, default=7400)
    a = ap.parse_args()
    if a.hosts < 2 or a.ports < 1 or a.base_port < 1 or a.base_port + a.ports - 1 > 65535:
        ap.error("need N >= 2, M >= 1 and BASE+M-1 <= 65535")
    out = sys.stdout
    out.write('name = "{}"\n'.format(a.name or "mesh-{}x{}".format(a.hosts, a.ports)))
    out.write("[defaults]\ntimeout_ms = {}\nretries = {}\ncontrol_port = {}\n".format(
        a.timeout_ms, a.retries, a.control_port))
    for i in range(1, a.hosts + 1):
        out.write('[[hosts]]\nname = "h{}"\naddress = "{}"\nroles = ["svc"]\n'.format(i, address(i)))
    out.write("[roles.svc]\nports = [\n")
    for j in range(a.ports):
        out.write('  {{ name = "p{}", port = {}, offset = false }},\n'.format(j, a.base_port + j))
    out.write("]\n[[flows]]\nfrom = \"all\"\nto = \"role:svc\"\nports = [{}]\n".format(
        ", ".join('"p{}"'.format(j) for j in range(a.ports))))


if __name__ == "__main__":
    main()
