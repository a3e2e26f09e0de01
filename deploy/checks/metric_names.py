#!/usr/bin/env python3
"""Metric names used by deploy/prometheus/alerts.yml and the Grafana dashboard.

    metric_names.py             one name per line
    metric_names.py --check F   F: JSON of Prometheus /api/v1/label/__name__/values;
                                prints each name with whether Prometheus has it; exit 1 if any is missing
"""
import json
import re
import sys

import yaml

NAME = re.compile(r"\b(herald_[a-z0-9_]+|up)\b(?!\s*\()")


def used():
    names = {}
    for group in yaml.safe_load(open("deploy/prometheus/alerts.yml"))["groups"]:
        for rule in group["rules"]:
            for n in NAME.findall(rule["expr"]):
                names.setdefault(n, set()).add(f"alert {rule['alert']}")
    dash = json.load(open("deploy/grafana/dashboards/herald.json"))
    exprs = [(p["title"], t["expr"]) for p in dash["panels"] for t in p.get("targets", [])]
    exprs += [("variable " + v["name"], v.get("definition", ""))
              for v in dash.get("templating", {}).get("list", [])]
    for title, expr in exprs:
        for n in NAME.findall(expr):
            names.setdefault(n, set()).add(f"panel {title}")
    return names


if __name__ == "__main__":
    names = used()
    if len(sys.argv) == 3 and sys.argv[1] == "--check":
        have = set(json.load(open(sys.argv[2]))["data"])
        missing = sorted(n for n in names if n not in have)
        for n in sorted(names):
            print(f"  {'ok  ' if n in have else 'MISSING'}  {n}")
        for n in missing:
            print(f"  {n} is used by {', '.join(sorted(names[n]))} but no node exports it")
        sys.exit(1 if missing else 0)
    for n in sorted(names):
        print(n)
