#!/usr/bin/env python3
"""Prints a plan of N hosts on 198.18.0.0/15 for the plan-parsing benchmark
(scripts/bench/plan_parse.sh): every host serves role `svc` (one TCP
port) and sits in one of 16 zones; one flow from zone z0 to role svc.
The host count grows, the path count stays linear in it.

    scripts/bench/plan_scale.py 20000 > /tmp/plan-20k.toml

Addresses only: nothing here probes anything.
"""
import sys


def address(i):
    k = i - 1
    third, last = divmod(k, 250)
    return "198.{}.{}.{}".format(18 + third // 256, third % 256, last + 1)


def main():
    n = int(sys.argv[1])
    out = ['name = "scale-{}"'.format(n), "[roles.svc]",
           'ports = [{ name = "svc", port = 18080, offset = false }]']
    for i in range(1, n + 1):
        out += ["[[hosts]]", 'name = "h{}"'.format(i),
                'address = "{}"'.format(address(i)), 'zone = "z{}"'.format(i % 16),
                'roles = ["svc"]']
    out += ["[[flows]]", 'from = "zone:z0"', 'to = "host:h1"', 'ports = ["svc"]']
    print("\n".join(out))


if __name__ == "__main__":
    main()
