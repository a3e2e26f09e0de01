"""The chart's values: values.schema.json and the templates' guards refuse bad ones, and the
chart's README documents every one."""

from __future__ import annotations

from typing import Any

import helm_python as helm
import pytest

import chart

REFUSED_BY_SCHEMA = {
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
    'config namespace access "everyone"': {"config": {"namespaces": {"chat": {"access": "everyone"}}}},
    "config namespace without access": {"config": {"namespaces": {"chat": {"history_size": 10}}}},
}

REFUSED_BY_TEMPLATES = {
    "terminationGracePeriodSeconds within the drain": {"terminationGracePeriodSeconds": 12},
    "replicaCount 3 standalone": {"replicaCount": 3},
    "autoscaling standalone": {"autoscaling": {"enabled": True}},
    "config.max_connections (set by env)": {"config": {"max_connections": 5}},
    "cluster URLs without cluster.enabled": {"cluster": {"natsUrl": "nats://n:4222", "redisUrl": "redis://r:6379"}},
    "tls.enabled without tls.secretName": {"tls": {"enabled": True}},
    "tls.grpc without tls.enabled": {"tls": {"grpc": True}},
    "config.tls_cert (set by env)": {"config": {"tls_cert": "/x.pem"}},
}


@pytest.mark.parametrize("values", REFUSED_BY_SCHEMA.values(), ids=REFUSED_BY_SCHEMA.keys())
def test_the_schema_refuses(values: dict[str, Any]) -> None:
    with pytest.raises(helm.HelmValuesError):
        chart.render(values)


@pytest.mark.parametrize("values", REFUSED_BY_TEMPLATES.values(), ids=REFUSED_BY_TEMPLATES.keys())
def test_the_templates_refuse(values: dict[str, Any]) -> None:
    with pytest.raises(helm.HelmRenderError):
        chart.render(values)


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


def test_the_readme_documents_every_value(defaults: dict[str, Any]) -> None:
    readme = (chart.CHART / "README.md").read_text()
    assert [k for k in leaf_keys(defaults) if f"`{k}`" not in readme] == []


def test_the_readme_lists_the_deliberate_differences() -> None:
    deliberate = (chart.CHART / "README.md").read_text().split("Deliberate", 1)[-1]
    assert [path for path in chart.DELIBERATE if path not in deliberate] == []
