#!/usr/bin/env python3
"""Static checks of the deployment files for scripts/check-compose.

    static_checks.py print-env-file

Checks: the Grafana dashboard and provisioning; every HERALD_* variable named in
docker-compose.yml, deploy/Dockerfile and README's `## Deploy` section is one
`herald config --print-env` lists (read from print-env-file); the compose topology (services,
distinct node ids, the LB_* variables deploy/haproxy.cfg expands, Prometheus targets).
Prints one line per check; exits 1 on any failure.
"""
import json
import re
import sys

import yaml

failures = []


def check(ok, message):
    print(("  ok    " if ok else "  FAIL  ") + message)
    if not ok:
        failures.append(message)


known = set()
for line in open(sys.argv[1]):
    if line.startswith("HERALD_"):
        known.add(line.split()[0])
check(len(known) > 10, f"`herald config --print-env` lists {len(known)} variables")

# --- HERALD_* variables -------------------------------------------------------------------
readme = open("README.md").read()
deploy = re.search(r"^## Deploy\n(.*?)(?=^## )", readme, re.S | re.M)
check(deploy is not None, "README.md has a `## Deploy` section")
ops = readme.find("\n## Operations")
check(deploy is not None and ops != -1 and readme.find("\n## Deploy") < ops
      and readme[readme.find("\n## Deploy"):ops].count("\n## ") == 1,
      "`## Deploy` comes right before `## Operations`")
sources = {
    "docker-compose.yml": open("docker-compose.yml").read(),
    "deploy/Dockerfile": open("deploy/Dockerfile").read(),
    "README.md ## Deploy": deploy.group(1) if deploy else "",
}
for name, text in sources.items():
    used = set(re.findall(r"\bHERALD_[A-Z0-9_]+", text))
    unknown = sorted(used - known)
    check(not unknown and used,
          f"{name}: {len(used)} HERALD_* variables, "
          + (f"not in `herald config --print-env`: {', '.join(unknown)}" if unknown
             else "all listed by `herald config --print-env`"))

# --- compose topology -------------------------------------------------------------------------
compose = yaml.safe_load(sources["docker-compose.yml"])
services = compose.get("services", {})
want = {"nats", "redis", "herald-1", "herald-2", "herald-3", "lb", "prometheus", "grafana"}
check(want <= set(services), f"compose services: {', '.join(sorted(services))}")
node_ids = []
for name in ("herald-1", "herald-2", "herald-3"):
    env = services.get(name, {}).get("environment", {})
    node_ids.append(env.get("HERALD_NODE_ID"))
    check(all(k in env for k in ("HERALD_NATS_URL", "HERALD_REDIS_URL", "HERALD_JWT_SECRET",
                                 "HERALD_API_KEYS")),
          f"{name}: cluster mode with credentials")
    check(services.get(name, {}).get("build", {}).get("dockerfile") == "deploy/Dockerfile",
          f"{name}: built from deploy/Dockerfile")
check(len(set(node_ids)) == 3 and None not in node_ids, f"distinct HERALD_NODE_IDs {node_ids}")
haproxy_cfg = "".join(l for l in open("deploy/haproxy.cfg") if not l.lstrip().startswith("#"))
haproxy_vars = set(re.findall(r"\$\{(\w+)\}", haproxy_cfg))
lb_env = set(services.get("lb", {}).get("environment", {}))
check(haproxy_vars == lb_env, f"lb sets exactly the variables deploy/haproxy.cfg expands ({len(haproxy_vars)})")
lc = open("scripts/local-cluster").read()
missing_lc = sorted(v for v in haproxy_vars if v not in lc)
check(not missing_lc, "scripts/local-cluster sets every variable deploy/haproxy.cfg expands"
      + (f"; missing {missing_lc}" if missing_lc else ""))
prom = yaml.safe_load(open("deploy/prometheus/prometheus.yml"))
targets = {t for job in prom["scrape_configs"] if job["job_name"] == "herald"
           for sc in job["static_configs"] for t in sc["targets"]}
check(targets == {"herald-1:9090", "herald-2:9090", "herald-3:9090"},
      f"prometheus job herald scrapes the three compose nodes: {sorted(targets)}")

# --- Grafana ----------------------------------------------------------------------------------
try:
    dash = json.load(open("deploy/grafana/dashboards/herald.json"))
    check(True, "deploy/grafana/dashboards/herald.json is valid JSON")
except ValueError as e:
    dash = {}
    check(False, f"deploy/grafana/dashboards/herald.json is not valid JSON: {e}")
ds = yaml.safe_load(open("deploy/grafana/provisioning/datasources/prometheus.yml"))
uids = {d.get("uid") for d in ds.get("datasources", [])}
panels = [p for p in dash.get("panels", []) if p.get("type") != "row"]
bad = [p.get("title") for p in panels
       if p.get("datasource", {}).get("uid") not in uids or not p.get("targets")]
check(panels and not bad, f"{len(panels)} dashboard panels, each with targets on a provisioned datasource"
      + (f"; bad: {bad}" if bad else ""))
variables = [v.get("name") for v in dash.get("templating", {}).get("list", [])]
check("instance" in variables, "dashboard has the `instance` variable")
unfiltered = [p["title"] for p in panels for t in p["targets"]
              if "herald_" in t["expr"] and "$instance" not in t["expr"]]
check(not unfiltered, "every dashboard query is filtered by $instance"
      + (f"; not: {unfiltered}" if unfiltered else ""))
prov = yaml.safe_load(open("deploy/grafana/provisioning/dashboards/herald.yml"))
check(prov.get("providers", [{}])[0].get("options", {}).get("path") == "/var/lib/grafana/dashboards"
      and any("deploy/grafana/dashboards:/var/lib/grafana/dashboards" in v
              for v in services.get("grafana", {}).get("volumes", [])),
      "grafana provisioning path matches the compose volume")

sys.exit(1 if failures else 0)
