#!/usr/bin/env python3
"""Scores one `portcall check --format json` report of a mesh plan against
the ground truth (the dropped paths of mesh_drops.py): every dropped path
must be `timeout` with verdict `violation`, every other path `open` with
verdict `ok`, and every planned path must be in the report.

    scripts/bench/mesh_score.py REPORT DROPS N PORTS [BASE_PORT]

Prints one line, `false=K kinds=KIND:COUNT,... paths=M`, then up to three
example mismatches (`  example: ...`). Kinds: `open-on-dropped`,
`OBSERVED-on-dropped` (anything else on a dropped path), `timeout-on-open`,
`wrong-host`, `tls-error`, `refused`, `unreachable`, `local-error`,
`error` (verdict error or nothing observed), `missing` (planned path not in
the report), `extra` (a report path the plan does not have). A report that
cannot be read counts every planned path as `no-report`.
"""

import collections
import json
import sys


def main():
    if len(sys.argv) not in (5, 6):
        sys.exit(__doc__)
    report_file, drops_file = sys.argv[1], sys.argv[2]
    n, ports = int(sys.argv[3]), int(sys.argv[4])
    base = int(sys.argv[5]) if len(sys.argv) == 6 else 20000
    planned = n * (n - 1) * ports
    drops = set()
    with open(drops_file) as f:
        for line in f:
            if line.strip():
                s, t, p = line.split()
                drops.add((s, t, int(p)))
    try:
        with open(report_file) as f:
            paths = json.load(f)["paths"]
    except (OSError, ValueError, KeyError) as e:
        print(f"false={planned} kinds=no-report:{planned} paths=0")
        print(f"  example: no report: {e}")
        return
    kinds = collections.Counter()
    examples = []
    seen = set()
    for p in paths:
        key = (p["from"], p["to"], p["port"])
        seen.add(key)
        observed, verdict = p.get("observed"), p.get("verdict")
        s, t = int(p["from"][1:]), int(p["to"][1:])
        if not (1 <= s <= n and 1 <= t <= n and s != t and base <= p["port"] < base + ports):
            kind = "extra"
        elif key in drops:
            if observed == "timeout" and verdict == "violation":
                continue
            kind = f"{observed or 'error'}-on-dropped"
        else:
            if observed == "open" and verdict == "ok":
                continue
            if observed is None or (verdict == "error" and observed == "open"):
                kind = "error"
            elif observed == "timeout":
                kind = "timeout-on-open"
            else:
                kind = observed
        kinds[kind] += 1
        if len(examples) < 3:
            examples.append(
                f"{kind}: {p['from']} -> {p['to']}:{p['port']} observed={observed} "
                f"verdict={verdict} attempts={p.get('attempts')} detail={p.get('detail')!r}"
            )
    # Every planned path is (h_s, h_t, port) with s != t; count those seen.
    in_plan = sum(
        1
        for (s, t, p) in seen
        if s != t and 1 <= int(s[1:]) <= n and 1 <= int(t[1:]) <= n and base <= p < base + ports
    )
    if in_plan < planned:
        kinds["missing"] += planned - in_plan
    total = sum(kinds.values())
    kind_text = ",".join(f"{k}:{v}" for k, v in sorted(kinds.items())) or "-"
    print(f"false={total} kinds={kind_text} paths={len(paths)}")
    for e in examples:
        print(f"  example: {e}")


if __name__ == "__main__":
    main()
