#!/usr/bin/env python3
"""Validates every PromQL query of the Grafana dashboard with promtool.

Each panel's `expr` (dashboard variables replaced as Grafana would with
"All" selected) becomes a recording rule, checked by `promtool check rules`;
then `promtool test rules` evaluates `count(expr) > bool 0` for each against
the series of a real portcall exposition (as `portcall demo --format
prometheus` or a schedule-mode agent's /metrics writes it, scraped as job
"portcall"), so a query that names a metric or label portcall does not
export returns nothing and fails.

  check-queries.py DASHBOARD.json EXPOSITION.prom WORKDIR
"""
import json
import re
import subprocess
import sys
from pathlib import Path

# What Grafana substitutes with the defaults ("All" plans, the portcall job).
VARIABLES = {"$plan": ".*", "$job": "portcall"}
SCRAPE = 'job="portcall",instance="agent:9740"'


def panels(items):
    for p in items:
        yield p
        yield from panels(p.get("panels", []))


def queries(dashboard):
    for p in panels(dashboard["panels"]):
        for t in p.get("targets", []):
            expr = t["expr"]
            for k, v in VARIABLES.items():
                expr = expr.replace(k, v)
            if "$" in expr:
                sys.exit(f"panel {p['id']} ({p['title']}): unsubstituted variable in {expr!r}")
            yield f"panel_{p['id']}_{t['refId']}", p["title"], expr
    # The plan variable lists label_values(portcall_path_ok, plan).
    yield "variable_plan", "plan variable", "count by (plan) (portcall_path_ok)"


def series(exposition):
    """Each sample line of the exposition as a promtool input series, with
    the labels Prometheus adds when it scrapes the agent."""
    out = []
    for line in exposition.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?\s+(\S+)$", line)
        if not m:
            sys.exit(f"not an exposition sample line: {line!r}")
        name, labels, value = m.groups()
        labels = labels[1:-1] + "," + SCRAPE if labels else SCRAPE
        out.append({"series": f"{name}{{{labels}}}", "values": f"{value}x15"})
    out.append({"series": f"up{{{SCRAPE}}}", "values": "1x15"})
    return out


def main():
    dashboard_path, exposition_path, work = (Path(a) for a in sys.argv[1:4])
    dashboard = json.loads(dashboard_path.read_text())
    qs = list(queries(dashboard))
    work.mkdir(parents=True, exist_ok=True)
    rules = {"groups": [{"name": "portcall-dashboard", "rules": [
        {"record": f"portcall_dashboard:{name}", "expr": expr} for name, _, expr in qs]}]}
    # JSON is YAML: no YAML library needed.
    (work / "dashboard-rules.yml").write_text(json.dumps(rules, indent=2))
    test = {
        "rule_files": ["dashboard-rules.yml"],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": series(exposition_path.read_text()),
            "promql_expr_test": [
                {"expr": f"count({expr}) > bool 0", "eval_time": "5m",
                 "exp_samples": [{"labels": "{}", "value": 1}]}
                for _, _, expr in qs],
        }],
    }
    (work / "dashboard-rules.test.yml").write_text(json.dumps(test, indent=2))
    for name, title, expr in qs:
        print(f"  {name} ({title}): {expr}")
    for cmd in (["promtool", "check", "rules", "dashboard-rules.yml"],
                ["promtool", "test", "rules", "dashboard-rules.test.yml"]):
        r = subprocess.run(cmd, cwd=work, capture_output=True, text=True)
        print(f"  $ {' '.join(cmd)}: exit {r.returncode}")
        if r.returncode != 0:
            print(r.stdout + r.stderr)
            sys.exit(1)
    print(f"  {len(qs)} queries parse and return series")


if __name__ == "__main__":
    main()
