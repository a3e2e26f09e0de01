"""Standard chart checks: `helm lint --strict` (Helm's Go library), every rendered object against
the Kubernetes OpenAPI schemas (kubernetes-validate), and the Prometheus Operator's objects
against models generated from its CRDs (cloudcoil)."""

from __future__ import annotations

from typing import Any, Iterator

import helm_python as helm
import kubernetes_validate
import pydantic
import pytest
from cloudcoil.models.prometheus_operator.v1 import PrometheusRule, ServiceMonitor

import chart

# kubernetes-validate ships the core kinds only; the Prometheus Operator's are checked with
# models generated from its CRDs.
CRD_MODELS = {"ServiceMonitor": ServiceMonitor, "PrometheusRule": PrometheusRule}


def unknown_fields(doc: Any, known: Any, path: str = "") -> Iterator[str]:
    """Fields of `doc` that its model dropped (`known` is the model dumped back): strict mode."""
    if isinstance(doc, dict):
        for key, value in doc.items():
            if not isinstance(known, dict) or key not in known:
                yield f"{path}{key}"
            else:
                yield from unknown_fields(value, known[key], f"{path}{key}.")
    elif isinstance(doc, list):
        for i, (item, known_item) in enumerate(zip(doc, known)):
            yield from unknown_fields(item, known_item, f"{path}{i}.")


def crd_errors(doc: dict[str, Any]) -> list[str]:
    try:
        model = CRD_MODELS[doc["kind"]].model_validate(doc)
    except pydantic.ValidationError as e:
        return [str(e)]
    known = model.model_dump(by_alias=True, exclude_none=True, mode="json")
    return [f"unknown field {field}" for field in unknown_fields(doc, known)]


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
        if doc["kind"] in CRD_MODELS:
            errors.extend(f"{name}: {error}" for error in crd_errors(doc))
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            errors.append(f"{name} against Kubernetes {version}: {'.'.join(map(str, e.path))}: {e.message}")
        except kubernetes_validate.SchemaNotFoundError as e:
            errors.append(f"{name}: {e.message}")
    assert not errors, "\n".join(errors)
