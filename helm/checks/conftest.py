"""Fixtures for the chart checks: the values files, the renders, the binary's settings."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

import chart

TLS_VALUES = {"tls": {"enabled": True, "secretName": "herald-tls", "grpc": True}}


def pytest_report_header() -> list[str]:
    import helm_python
    import kubernetes_validate
    return [f"helm SDK {helm_python.helm_sdk_version()}, kubernetes-validate {kubernetes_validate.__version__}, "
            f"binary {chart.HERALD}"]


@pytest.fixture(scope="session")
def defaults() -> dict[str, Any]:
    return yaml.safe_load((chart.CHART / "values.yaml").read_text())


@pytest.fixture(scope="session")
def production() -> dict[str, Any]:
    return yaml.safe_load(chart.PRODUCTION.read_text())


@pytest.fixture(scope="session")
def given_values(production: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The values files the chart is rendered with, by name."""
    return {"default": {}, "production": production, "tls": TLS_VALUES}


@pytest.fixture(scope="session")
def renders(given_values: dict[str, dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    return {label: chart.render(values) for label, values in given_values.items()}


@pytest.fixture(scope="session")
def settings() -> list[dict[str, Any]]:
    assert chart.HERALD.exists(), f"{chart.HERALD} missing: scripts/check-helm builds it"
    return chart.declared_settings()


@pytest.fixture(scope="session")
def binary_defaults() -> dict[str, str]:
    """The binary's effective values with nothing set."""
    return chart.print_env()
