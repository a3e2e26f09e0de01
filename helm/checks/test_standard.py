"""Standard chart checks: `helm lint --strict` (Helm's Go library) and every rendered object
against the Kubernetes OpenAPI schemas (kubernetes-validate)."""

from __future__ import annotations

from typing import Any

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest

import chart

# Structural schemas for the Prometheus Operator objects (kubernetes-validate ships core kinds only).
_DURATION = {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"}
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
                                "interval": _DURATION, "scrapeTimeout": _DURATION,
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
                            "for": _DURATION,
                            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                            "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
                        },
                    }}},
                }}},
            },
        },
    },
}


@pytest.mark.parametrize("label", ["default", "production"])
def test_lint_strict(label: str, given_values: dict[str, dict[str, Any]]) -> None:
    report = helm.lint(str(chart.CHART), given_values[label], strict=True, namespace=chart.NAMESPACE)
    problems = [f"{m['path']}: {m['error'].strip()}" for m in report["messages"] if m["severity"] >= 2]
    assert not problems and not report["errors"], problems or report["errors"]


@pytest.mark.parametrize("label", ["default", "production", "tls"])
def test_objects_validate_against_kubernetes(label: str, renders: dict[str, list[dict[str, Any]]]) -> None:
    version = kubernetes_validate.latest_version()
    errors = []
    for doc in renders[label]:
        name = f"{doc['kind']}/{doc['metadata']['name']}"
        if doc["kind"] in CRD_SCHEMAS:
            try:
                jsonschema.validate(doc, CRD_SCHEMAS[doc["kind"]])
            except jsonschema.ValidationError as e:
                errors.append(f"{name}: {e.message} at {list(e.absolute_path)}")
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            errors.append(f"{name} against Kubernetes {version}: {'.'.join(map(str, e.path))}: {e.message}")
        except kubernetes_validate.SchemaNotFoundError as e:
            errors.append(f"{name}: {e.message}")
    assert not errors, "\n".join(errors)
