"""Rendering the Herald chart and asking the gateway binary about its settings: the helpers the
tests in this folder share. Helm's own Go library (helm-python-sdk) renders and lints; no helm
binary or cluster is needed.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any, Callable

import helm_python as helm
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "herald"
PRODUCTION = ROOT / "helm" / "checks" / "production-values.yaml"
HERALD = Path(os.environ.get("HERALD_BIN", ROOT / "target" / "debug" / "herald"))
RELEASE, NAMESPACE = "herald", "realtime"
# `herald config` in a clean environment, so the caller's HERALD_* variables do not leak in.
CLEAN_ENV = {"PATH": "/usr/bin:/bin", "HOSTNAME": "check-helm"}

# Defaults that differ from the binary's on purpose (also listed in helm/herald/README.md).
DELIBERATE = {
    "herald.logFormat": "json: one JSON object a line for log collectors (binary default: pretty, for terminals)",
    "auth.jwtSecret": "empty means generated into the chart's Secret when jwtPublicKey is empty too "
    "(the binary refuses to start without a key)",
    "auth.apiKeys": "empty means one key generated into the chart's Secret "
    "(the binary refuses to start without one)",
}


def render(values: dict[str, Any]) -> list[dict[str, Any]]:
    """The chart's objects rendered with `values` (NOTES.txt left out)."""
    with helm.Chart.load(CHART) as chart:
        rendered = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    docs = []
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt"):
            continue
        docs.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return docs


def find(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def pod_spec(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return find(docs, "Deployment")[0]["spec"]["template"]["spec"]


def container_env(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return pod_spec(docs)["containers"][0].get("env", [])


def literal_env(docs: list[dict[str, Any]]) -> dict[str, str | None]:
    """Variable -> its literal value (None when it comes from a Secret or the downward API)."""
    return {e["name"]: e.get("value") for e in container_env(docs)}


def dig(values: dict[str, Any], dotted: str) -> Any:
    node: Any = values
    for part in dotted.split("."):
        node = node[part]
    return node


def herald(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(HERALD), *args], env={**CLEAN_ENV, **(env or {})},
                          capture_output=True, text=True, check=False)


def print_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """`herald config --print-env`: variable -> effective value; raises with the binary's error."""
    out = herald("config", "--print-env", env=env)
    if out.returncode != 0:
        lines = out.stderr.strip().splitlines()
        raise RuntimeError(lines[0] if lines else "failed")
    result = {}
    for line in out.stdout.splitlines():
        name, _flag, *value = line.split(" ", 2)
        result[name] = value[0] if value else ""
    return result


def declared_settings() -> list[dict[str, Any]]:
    """`herald config --settings json`: every setting the binary declares, with its Helm value."""
    out = herald("config", "--settings", "json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def chart_text(how: str, value: Any) -> str:
    """The variable's text the chart renders from a value; `how` is the declaration's Helm kind."""
    if how == "listen_port":
        return f"0.0.0.0:{int(value)}"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return ",".join(value)
    if isinstance(value, int):
        return str(value)
    return str(value)


def chart_mapping(settings: list[dict[str, Any]]) -> dict[str, tuple[str, Callable[[Any], str]]]:
    """values.yaml path -> (variable, value -> the variable's text), from the declarations."""
    mapping: dict[str, tuple[str, Callable[[Any], str]]] = {}
    for setting in settings:
        (how, path), = setting["helm"].items()
        if how != "not_a_value":
            mapping[path] = (setting["env"], lambda v, how=how: chart_text(how, v))
    return mapping
