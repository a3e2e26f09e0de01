#!/usr/bin/env python3
"""Offline checks of the Herald Helm chart, run by scripts/check-helm from the repository root.

Renders and lints the chart with Helm's own Go library (helm-python-sdk, no helm binary),
validates every rendered object against the Kubernetes OpenAPI schemas (kubernetes-validate),
and holds the chart to the gateway binary: which value sets which HERALD_* variable comes from
the binary's own declaration of its settings (`herald config --settings json`), every variable
the chart sets must be one the binary declares, value defaults must equal the binary's defaults
unless listed in DELIBERATE below, and the binary itself must accept the rendered configuration.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import helm_python as helm
import jsonschema
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "herald"
PRODUCTION = ROOT / "helm" / "checks" / "production-values.yaml"
HERALD = Path(os.environ.get("HERALD_BIN", ROOT / "target" / "debug" / "herald"))
RELEASE, NAMESPACE = "herald", "realtime"

def chart_text(how: str, value: Any) -> str:
    """The variable's text the chart renders from a value: `how` is the declaration's Helm kind."""
    if how == "listen_port":
        return f"0.0.0.0:{int(value)}"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return ",".join(value)
    if isinstance(value, int):
        return str(value)
    return str(value)


def declared_settings() -> list[dict[str, Any]]:
    """`herald config --settings json`: every setting the binary declares, with its Helm value."""
    out = subprocess.run([str(HERALD), "config", "--settings", "json"],
                         env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def chart_mapping(settings: list[dict[str, Any]]) -> tuple[dict[str, tuple[str, Callable[[Any], str]]], dict[str, str]]:
    """values.yaml path -> (variable, value -> text), and variable -> why no value sets it."""
    mapping: dict[str, tuple[str, Callable[[Any], str]]] = {}
    not_a_value: dict[str, str] = {}
    for setting in settings:
        (how, detail), = setting["helm"].items()
        if how == "not_a_value":
            not_a_value[setting["env"]] = detail
        else:
            mapping[detail] = (setting["env"], lambda v, how=how: chart_text(how, v))
    return mapping, not_a_value


# Defaults that differ from the binary's on purpose (also listed in helm/herald/README.md).
DELIBERATE = {
    "herald.logFormat": "json: one JSON object a line for log collectors (binary default: pretty, for terminals)",
    "auth.jwtSecret": "empty means generated into the chart's Secret when jwtPublicKey is empty too "
    "(the binary refuses to start without a key)",
    "auth.apiKeys": "empty means one key generated into the chart's Secret "
    "(the binary refuses to start without one)",
}

failures: list[str] = []


def check(condition: bool, message: str) -> bool:
    if not condition:
        failures.append(message)
        print(f"  FAIL {message}")
    return condition


def step(title: str) -> None:
    print(f"\n--- {title}")


def dig(values: dict[str, Any], dotted: str) -> Any:
    node: Any = values
    for part in dotted.split("."):
        node = node[part]
    return node


def print_env(env: dict[str, str] | None = None, *args: str) -> dict[str, str]:
    """`herald config --print-env` in a clean environment: variable -> effective value."""
    clean = {"PATH": "/usr/bin:/bin", "HOSTNAME": "check-helm", **(env or {})}
    out = subprocess.run(
        [str(HERALD), "config", *args, "--print-env"],
        env=clean, capture_output=True, text=True, check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(out.stderr.strip().splitlines()[0] if out.stderr.strip() else "failed")
    result = {}
    for line in out.stdout.splitlines():
        name, _flag, *value = line.split(" ", 2)
        result[name] = value[0] if value else ""
    return result


def render(values: dict[str, Any]) -> dict[str, str]:
    with helm.Chart.load(CHART) as chart:
        return chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)


def objects(rendered: dict[str, str]) -> list[dict[str, Any]]:
    docs = []
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                docs.append(doc)
    return docs


def find(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def container_env(deployment: dict[str, Any]) -> list[dict[str, Any]]:
    return deployment["spec"]["template"]["spec"]["containers"][0].get("env", [])


# Structural schemas for the Prometheus Operator objects (kubernetes-validate ships core kinds only).
CRD_SCHEMAS = {
    "ServiceMonitor": {
        "type": "object",
        "required": ["apiVersion", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "metadata": {"type": "object", "required": ["name"]},
            "spec": {
                "type": "object",
                "required": ["selector", "endpoints"],
                "properties": {
                    "selector": {"type": "object", "required": ["matchLabels"]},
                    "endpoints": {
                        "type": "array", "minItems": 1,
                        "items": {
                            "type": "object", "required": ["port"],
                            "properties": {
                                "port": {"type": "string"}, "path": {"type": "string"},
                                "interval": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                                "scrapeTimeout": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                            },
                        },
                    },
                },
            },
        },
    },
    "PrometheusRule": {
        "type": "object",
        "required": ["apiVersion", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "metadata": {"type": "object", "required": ["name"]},
            "spec": {
                "type": "object", "required": ["groups"],
                "properties": {"groups": {"type": "array", "minItems": 1, "items": {
                    "type": "object", "required": ["name", "rules"],
                    "properties": {"rules": {"type": "array", "minItems": 1, "items": {
                        "type": "object", "required": ["expr"],
                        "oneOf": [{"required": ["alert"]}, {"required": ["record"]}],
                        "properties": {
                            "alert": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
                            "expr": {"type": "string", "minLength": 1},
                            "for": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                            "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
                        },
                    }}},
                }}},
            },
        },
    },
}


def validate_objects(label: str, docs: list[dict[str, Any]]) -> None:
    version = kubernetes_validate.latest_version()
    for doc in docs:
        name = f"{doc['kind']}/{doc['metadata']['name']}"
        if doc["kind"] in CRD_SCHEMAS:
            try:
                jsonschema.validate(doc, CRD_SCHEMAS[doc["kind"]])
                print(f"  ok   {label}: {name} (structural check; CRD schema not shipped)")
            except jsonschema.ValidationError as e:
                check(False, f"{label}: {name}: {e.message} at {list(e.absolute_path)}")
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
            print(f"  ok   {label}: {name} against Kubernetes {version} (strict)")
        except kubernetes_validate.ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            check(False, f"{label}: {name} does not validate against Kubernetes {version}: {path}: {e.message}")
        except kubernetes_validate.SchemaNotFoundError as e:
            check(False, f"{label}: {name}: {e.message}")


def check_binary_accepts(label: str, docs: list[dict[str, Any]], values: dict[str, Any]) -> None:
    """Runs `herald config` with the rendered env (secrets filled with samples) and herald.toml."""
    deployment = find(docs, "Deployment")[0]
    config = find(docs, "ConfigMap")[0]["data"]["herald.toml"]
    samples = {
        "HERALD_JWT_SECRET": "s" * 40,
        "HERALD_JWT_PUBLIC_KEY": None,  # optional: a PEM would be needed; left out
        "HERALD_API_KEYS": "sample-api-key-0123456789",
        "HERALD_NATS_URL": "nats://nats.nats.svc:4222",
        "HERALD_REDIS_URL": "redis://redis-master.redis.svc:6379",
    }
    env: dict[str, str] = {}
    expected: dict[str, str] = {}
    for item in container_env(deployment):
        name = item["name"]
        if not name.startswith("HERALD_"):
            continue
        if "value" in item:
            env[name] = item["value"]
            expected[name] = item["value"]
        elif "fieldRef" in item.get("valueFrom", {}):
            env[name] = "herald-7d9c-abcde"
        elif samples.get(name):
            env[name] = samples[name]  # secretKeyRef
    with tempfile.TemporaryDirectory() as tmp:
        toml = Path(tmp) / "herald.toml"
        toml.write_text(config)
        # `--print-env` shows HERALD_CONFIG empty even when it is set, so the file is checked
        # through `herald config` below (its namespaces appear in the effective config).
        env["HERALD_CONFIG"] = str(toml)
        expected.pop("HERALD_CONFIG", None)
        try:
            effective = print_env(env)
        except RuntimeError as e:
            check(False, f"{label}: the binary refuses the rendered configuration: {e}")
            return
        toml_out = subprocess.run(
            [str(HERALD), "config"], env={"PATH": "/usr/bin:/bin", **env},
            capture_output=True, text=True, check=False,
        ).stdout
    mismatched = {k: (v, effective.get(k)) for k, v in expected.items() if effective.get(k) != v}
    if check(not mismatched, f"{label}: binary's effective values differ from the rendered env: {mismatched}"):
        print(f"  ok   {label}: `herald config` accepts the rendered env and herald.toml; "
              f"{len(expected)} literal HERALD_* values are effective as rendered")
    for ns in (values.get("config") or {}).get("namespaces", {}):
        key = ns if re.fullmatch(r"[A-Za-z0-9_-]+", ns) else json.dumps(ns)
        check(f"[namespaces.{key}]" in toml_out, f"{label}: namespace {ns} missing from the effective config")


def main() -> int:
    started = time.monotonic()
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    production = yaml.safe_load(PRODUCTION.read_text())
    binary = print_env()
    settings = declared_settings()
    mapping, not_a_value = chart_mapping(settings)
    print(f"helm SDK {helm.helm_sdk_version()}, kubernetes-validate {kubernetes_validate.__version__}, "
          f"{len(binary)} HERALD_* variables from {HERALD.relative_to(ROOT) if HERALD.is_relative_to(ROOT) else HERALD}")

    step("lint (helm lint --strict, through Helm's Go library)")
    for label, values in (("default values", {}), ("production values", production)):
        report = helm.lint(str(CHART), values, strict=True, namespace=NAMESPACE)
        problems = [m for m in report["messages"] if m["severity"] >= 2]
        for m in problems:
            print(f"    {m['path']}: {m['error'].strip()}")
        if check(not problems and not report["errors"], f"lint with {label}: {len(problems)} problems"):
            infos = "; ".join(m["error"] for m in report["messages"])
            print(f"  ok   lint with {label}" + (f" (info: {infos})" if infos else ""))

    step("render and validate against the Kubernetes schemas")
    rendered = {}
    for label, values in (("default", {}), ("production", production)):
        try:
            docs = objects(render(values))
        except helm.HelmError as e:
            check(False, f"{label} values do not render: {e}")
            continue
        rendered[label] = docs
        kinds = sorted(d["kind"] for d in docs)
        print(f"  ok   {label} values render: {', '.join(kinds)}")
        validate_objects(label, docs)
    if len(rendered) < 2:
        return finish(started)
    expected_kinds = {"Deployment", "Service", "ConfigMap", "Secret", "Ingress", "HorizontalPodAutoscaler",
                      "PodDisruptionBudget", "ServiceMonitor", "PrometheusRule", "ServiceAccount"}
    prod_kinds = {d["kind"] for d in rendered["production"]}
    check(expected_kinds - {"Secret"} <= prod_kinds, f"production render lacks {expected_kinds - prod_kinds - {'Secret'}}")
    check("Secret" not in prod_kinds, "production render (existingSecret) must not create a Secret")
    check(len(find(rendered["production"], "Service")) == 3, "expected 3 Services (http, grpc, metrics)")

    step("values.schema.json and template guards reject bad values")
    bad_schema = {
        'herald.logFormat "xml"': {"herald": {"logFormat": "xml"}},
        'replicaCount "three"': {"replicaCount": "three"},
        "herald.drainSeconds -1": {"herald": {"drainSeconds": -1}},
        "auth.jwtSecret shorter than 32": {"auth": {"jwtSecret": "short"}},
        "auth.apiKeys entry shorter than 16": {"auth": {"apiKeys": ["short"]}},
        "cluster.redisUrl http://": {"cluster": {"enabled": True, "natsUrl": "nats://n:4222", "redisUrl": "http://r"}},
        "cluster.enabled without URLs": {"cluster": {"enabled": True}},
        "ingress.enabled without hosts": {"ingress": {"enabled": True, "hosts": []}},
        "unknown top-level key": {"replicas": 3},
        "unknown tls key": {"tls": {"enabled": True, "secretName": "herald-tls", "cert": "x"}},
        "config namespace access \"everyone\"": {"config": {"namespaces": {"chat": {"access": "everyone"}}}},
        "config namespace without access": {"config": {"namespaces": {"chat": {"history_size": 10}}}},
    }
    bad_template = {
        "terminationGracePeriodSeconds within the drain": {"terminationGracePeriodSeconds": 12},
        "replicaCount 3 standalone": {"replicaCount": 3},
        "autoscaling standalone": {"autoscaling": {"enabled": True}},
        "config.max_connections (set by env)": {"config": {"max_connections": 5}},
        "cluster URLs without cluster.enabled": {"cluster": {"natsUrl": "nats://n:4222", "redisUrl": "redis://r:6379"}},
        "tls.enabled without tls.secretName": {"tls": {"enabled": True}},
        "tls.grpc without tls.enabled": {"tls": {"grpc": True}},
        "config.tls_cert (set by env)": {"config": {"tls_cert": "/x.pem"}},
    }
    for cases, error in ((bad_schema, helm.HelmValuesError), (bad_template, helm.HelmRenderError)):
        for label, values in cases.items():
            try:
                render(values)
                check(False, f"rendering accepted bad values: {label}")
            except error as e:
                first = str(e).strip().splitlines()[-1].strip()
                print(f"  ok   {label}: refused ({error.__name__}: {first[:110]})")
            except helm.HelmError as e:
                check(False, f"{label}: refused with {type(e).__name__}, expected {error.__name__}: {e}")

    step("HERALD_* variables against the binary's declared settings")
    declared = {s["env"] for s in settings}
    check(declared == set(binary), f"--settings json and --print-env list different variables: "
          f"{sorted(declared ^ set(binary))}")
    template = (CHART / "templates" / "deployment.yaml").read_text()
    unset = sorted(v for v in declared if f"name: {v}\n" not in template)
    if check(not unset, f"templates/deployment.yaml sets no env for declared settings {unset}"):
        print(f"  ok   the Deployment sets every one of the binary's {len(declared)} variables")
    missing_paths = []
    for path in mapping:
        try:
            dig(defaults, path)
        except (KeyError, TypeError):
            missing_paths.append(path)
    if check(not missing_paths, f"values.yaml lacks the declared Helm values {missing_paths}"):
        print(f"  ok   values.yaml has all {len(mapping)} declared Helm values; "
              f"{len(not_a_value)} variables set otherwise: {', '.join(sorted(not_a_value))}")
    if missing_paths:
        return finish(started)
    for label, docs in rendered.items():
        names = set(re.findall(r"\bHERALD_[A-Z0-9_]+", yaml.safe_dump_all(docs)))
        unknown = names - set(binary)
        if check(not unknown, f"{label}: rendered manifests name variables the binary does not accept: {sorted(unknown)}"):
            print(f"  ok   {label}: all {len(names)} HERALD_* names in the manifests are accepted by the binary")
    mismatches = 0
    for path, (var, fmt) in mapping.items():
        chart_default = fmt(dig(defaults, path))
        if path in DELIBERATE:
            print(f"  --   {path} = {dig(defaults, path)!r} vs {var}={binary[var]!r}: deliberate, {DELIBERATE[path]}")
            continue
        if not check(chart_default == binary[var],
                     f"values.yaml {path} = {chart_default!r} but the binary's {var} default is {binary[var]!r}"):
            mismatches += 1
    if not mismatches:
        print(f"  ok   {len(mapping) - len(DELIBERATE)} value defaults equal the binary's defaults")
    # The rendered env carries each value into the right variable.
    env = {e["name"]: e.get("value") for e in container_env(find(rendered["default"], "Deployment")[0])}
    for path, (var, fmt) in mapping.items():
        if var in env and env[var] is not None:
            check(env[var] == fmt(dig(defaults, path)), f"default render: {var}={env[var]!r}, expected from {path}")
    prod_env = {e["name"]: e.get("value") for e in container_env(find(rendered["production"], "Deployment")[0])}
    check(prod_env.get("HERALD_DRAIN_SECONDS") == "20" and prod_env.get("HERALD_MAX_CONNECTIONS") == "50000"
          and prod_env.get("HERALD_ALLOWED_ORIGINS") == "https://app.example.com",
          "production render does not carry herald.* values into the env")
    for label, docs in rendered.items():
        check_binary_accepts(label, docs, {} if label == "default" else production)

    step("drain: terminationGracePeriodSeconds outlasts preStop + drain + the binary's 2 s grace")
    for label, docs in rendered.items():
        pod = find(docs, "Deployment")[0]["spec"]["template"]["spec"]
        container = pod["containers"][0]
        drain = int({e["name"]: e.get("value") for e in container["env"]}["HERALD_DRAIN_SECONDS"])
        pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
        grace = pod["terminationGracePeriodSeconds"]
        if check(grace > pre_stop + drain + 2,
                 f"{label}: terminationGracePeriodSeconds {grace} <= preStop {pre_stop} + drain {drain} + 2"):
            print(f"  ok   {label}: terminationGracePeriodSeconds {grace} > preStop {pre_stop} + drain {drain} + 2")

    step("pod hardening and probes")
    before = len(failures)
    for label, docs in rendered.items():
        pod = find(docs, "Deployment")[0]["spec"]["template"]["spec"]
        c = pod["containers"][0]
        sc = c["securityContext"]
        check(pod["securityContext"].get("runAsNonRoot") is True, f"{label}: pod runAsNonRoot")
        check(sc.get("readOnlyRootFilesystem") is True, f"{label}: readOnlyRootFilesystem")
        check(sc.get("allowPrivilegeEscalation") is False, f"{label}: allowPrivilegeEscalation false")
        check(sc.get("capabilities", {}).get("drop") == ["ALL"], f"{label}: capabilities drop ALL")
        check(sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", f"{label}: seccomp RuntimeDefault")
        check(c["livenessProbe"]["httpGet"]["path"] == "/healthz", f"{label}: liveness /healthz")
        check(c["readinessProbe"]["httpGet"]["path"] == "/readyz", f"{label}: readiness /readyz")
        check(pod.get("topologySpreadConstraints") or pod.get("affinity"), f"{label}: spread or anti-affinity")
        grpc = [s for s in find(docs, "Service") if s["metadata"]["name"].endswith("-grpc")]
        check(len(grpc) == 1 and grpc[0]["spec"]["type"] == "ClusterIP", f"{label}: gRPC Service is ClusterIP")
    if len(failures) == before:
        print("  ok   non-root, read-only root, no privilege escalation, drop ALL, seccomp RuntimeDefault,"
              " /healthz and /readyz probes, topology spread, ClusterIP gRPC Service")

    step("tls: the Secret mounted, the files named, probes over HTTPS, accepted by the binary")
    tls_values = {"tls": {"enabled": True, "secretName": "herald-tls", "grpc": True}}
    try:
        tls_docs = objects(render(tls_values))
    except helm.HelmError as e:
        check(False, f"tls values do not render: {e}")
        tls_docs = []
    if tls_docs:
        before = len(failures)
        validate_objects("tls", tls_docs)
        pod = find(tls_docs, "Deployment")[0]["spec"]["template"]["spec"]
        c = pod["containers"][0]
        env = {e["name"]: e.get("value") for e in c["env"]}
        check(env.get("HERALD_TLS_CERT") == "/etc/herald-tls/tls.crt"
              and env.get("HERALD_TLS_KEY") == "/etc/herald-tls/tls.key"
              and env.get("HERALD_GRPC_TLS") == "true", f"tls: env {env}")
        mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        check(mounts.get("tls") == "/etc/herald-tls"
              and volumes.get("tls", {}).get("secret", {}).get("secretName") == "herald-tls",
              f"tls: Secret herald-tls not mounted at /etc/herald-tls: {mounts}")
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            check(c[probe]["httpGet"].get("scheme") == "HTTPS", f"tls: {probe} not over HTTPS")
        default_pod = find(rendered["default"], "Deployment")[0]["spec"]["template"]["spec"]
        check("scheme" not in default_pod["containers"][0]["livenessProbe"]["httpGet"],
              "default: probes must stay plain HTTP without tls")
        check_binary_accepts("tls", tls_docs, tls_values)
        if len(failures) == before:
            print("  ok   Secret mounted at /etc/herald-tls, HERALD_TLS_* set, probes over HTTPS")

    step("chart README documents every value")
    readme = (CHART / "README.md").read_text()
    missing = [k for k in leaf_keys(defaults) if f"`{k}`" not in readme]
    if check(not missing, f"helm/herald/README.md lacks values: {missing}"):
        print(f"  ok   all {len(leaf_keys(defaults))} values are in the README table")
    for path in DELIBERATE:
        check(path in readme.split("Deliberate", 1)[-1], f"README does not list deliberate default {path}")

    return finish(started)


# Maps whose keys are free-form (annotations, labels, Kubernetes objects) count as one value.
OPAQUE = {"config", "resources", "podSecurityContext", "securityContext", "livenessProbe", "readinessProbe",
          "startupProbe", "affinity", "nodeSelector", "podAnnotations", "podLabels", "autoscaling.behavior",
          "ingress.annotations", "service.annotations", "grpcService.annotations", "metricsService.annotations",
          "serviceAccount.annotations", "serviceMonitor.labels", "prometheusRule.labels"}


def leaf_keys(values: dict[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for k, v in values.items():
        path = f"{prefix}{k}"
        if isinstance(v, dict) and v and path not in OPAQUE:
            keys.extend(leaf_keys(v, path + "."))
        else:
            keys.append(path)
    return keys


def finish(started: float) -> int:
    print(f"\n{len(failures)} failure(s) in {time.monotonic() - started:.1f} s")
    for f in failures:
        print(f"  - {f}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
