"""The chart against the gateway binary: which value sets which HERALD_* variable comes from the
binary's declaration of its settings (`herald config --settings json`), the defaults from what it
runs with (`herald config --print-env`), and the binary must accept what the chart renders."""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml

import chart


def test_both_listings_name_the_same_variables(settings: list[dict[str, Any]],
                                               binary_defaults: dict[str, str]) -> None:
    assert {s["env"] for s in settings} == set(binary_defaults)


def test_the_deployment_sets_every_declared_variable(settings: list[dict[str, Any]]) -> None:
    template = (chart.CHART / "templates" / "deployment.yaml").read_text()
    assert [s["env"] for s in settings if f"name: {s['env']}\n" not in template] == []


def test_values_yaml_has_every_declared_helm_value(settings: list[dict[str, Any]],
                                                   defaults: dict[str, Any]) -> None:
    missing = []
    for path in chart.chart_mapping(settings):
        try:
            chart.dig(defaults, path)
        except (KeyError, TypeError):
            missing.append(path)
    assert missing == []


@pytest.mark.parametrize("label", ["default", "production", "tls"])
def test_rendered_variables_are_declared(label: str, renders: dict[str, list[dict[str, Any]]],
                                         settings: list[dict[str, Any]]) -> None:
    names = set(re.findall(r"\bHERALD_[A-Z0-9_]+", yaml.safe_dump_all(renders[label])))
    assert names - {s["env"] for s in settings} == set()


def test_value_defaults_are_the_binarys(settings: list[dict[str, Any]], defaults: dict[str, Any],
                                        binary_defaults: dict[str, str]) -> None:
    mapping = chart.chart_mapping(settings)
    assert set(chart.DELIBERATE) <= set(mapping), "a deliberate difference names an undeclared value"
    differ = {path: (fmt(chart.dig(defaults, path)), binary_defaults[var])
              for path, (var, fmt) in mapping.items()
              if path not in chart.DELIBERATE and fmt(chart.dig(defaults, path)) != binary_defaults[var]}
    assert differ == {}, "values.yaml default vs the binary's (path: (chart, binary))"


def test_the_default_render_carries_each_value_into_its_variable(
        settings: list[dict[str, Any]], defaults: dict[str, Any],
        renders: dict[str, list[dict[str, Any]]]) -> None:
    env = chart.literal_env(renders["default"])
    wrong = {var: (env[var], path) for path, (var, fmt) in chart.chart_mapping(settings).items()
             if env.get(var) is not None and env[var] != fmt(chart.dig(defaults, path))}
    assert wrong == {}


def test_the_production_render_carries_herald_values_into_the_env(
        renders: dict[str, list[dict[str, Any]]]) -> None:
    env = chart.literal_env(renders["production"])
    assert (env.get("HERALD_DRAIN_SECONDS"), env.get("HERALD_MAX_CONNECTIONS"),
            env.get("HERALD_ALLOWED_ORIGINS")) == ("20", "50000", "https://app.example.com")


# Samples for the variables the chart takes from its Secret.
SECRET_SAMPLES = {
    "HERALD_JWT_SECRET": "s" * 40,
    "HERALD_API_KEYS": "sample-api-key-0123456789",
    "HERALD_NATS_URL": "nats://nats.nats.svc:4222",
    "HERALD_REDIS_URL": "redis://redis-master.redis.svc:6379",
    # HERALD_JWT_PUBLIC_KEY is optional and would need a PEM: left out.
}


@pytest.mark.parametrize("label", ["default", "production", "tls"])
def test_the_binary_accepts_the_rendered_configuration(
        label: str, renders: dict[str, list[dict[str, Any]]],
        given_values: dict[str, dict[str, Any]]) -> None:
    """`herald config` with the rendered env (Secret values filled with samples) and herald.toml."""
    docs = renders[label]
    env: dict[str, str] = {}
    expected: dict[str, str] = {}
    for item in container_env_herald(docs):
        name = item["name"]
        if "value" in item:
            env[name] = expected[name] = item["value"]
        elif "fieldRef" in item.get("valueFrom", {}):
            env[name] = "herald-7d9c-abcde"
        elif name in SECRET_SAMPLES:
            env[name] = SECRET_SAMPLES[name]
    with tempfile.TemporaryDirectory() as tmp:
        toml = Path(tmp) / "herald.toml"
        toml.write_text(chart.find(docs, "ConfigMap")[0]["data"]["herald.toml"])
        env["HERALD_CONFIG"] = str(toml)
        expected["HERALD_CONFIG"] = str(toml)
        effective = chart.print_env(env)
        shown = chart.herald("config", env=env).stdout
    assert {k: (v, effective.get(k)) for k, v in expected.items() if effective.get(k) != v} == {}, \
        "rendered value vs the binary's effective value"
    for ns in (given_values[label].get("config") or {}).get("namespaces", {}):
        key = ns if re.fullmatch(r"[A-Za-z0-9_-]+", ns) else json.dumps(ns)
        assert f"[namespaces.{key}]" in shown, f"namespace {ns} missing from the effective config"


def container_env_herald(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in chart.container_env(docs) if e["name"].startswith("HERALD_")]
