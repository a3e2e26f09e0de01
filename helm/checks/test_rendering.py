"""What the chart renders with given values: the objects, the drain window, pod hardening, TLS."""

from __future__ import annotations

from typing import Any

import pytest

import chart


def test_production_renders_every_kind_but_the_secret(renders: dict[str, list[dict[str, Any]]]) -> None:
    kinds = {d["kind"] for d in renders["production"]}
    assert kinds >= {"Deployment", "Service", "ConfigMap", "Ingress", "HorizontalPodAutoscaler",
                     "PodDisruptionBudget", "ServiceMonitor", "PrometheusRule", "ServiceAccount"}
    assert "Secret" not in kinds, "existingSecret: the chart must not create a Secret"
    assert len(chart.find(renders["production"], "Service")) == 3, "http, grpc and metrics Services"


@pytest.mark.parametrize("label", ["default", "production"])
def test_the_grace_period_outlasts_pre_stop_drain_and_the_binarys_2_s(
        label: str, renders: dict[str, list[dict[str, Any]]]) -> None:
    pod = chart.pod_spec(renders[label])
    drain = int(chart.literal_env(renders[label])["HERALD_DRAIN_SECONDS"])
    pre_stop = pod["containers"][0].get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    assert pod["terminationGracePeriodSeconds"] > pre_stop + drain + 2


@pytest.mark.parametrize("label", ["default", "production"])
def test_pods_are_hardened_and_probed(label: str, renders: dict[str, list[dict[str, Any]]]) -> None:
    pod = chart.pod_spec(renders[label])
    c = pod["containers"][0]
    sc = c["securityContext"]
    assert pod["securityContext"].get("runAsNonRoot") is True
    assert sc.get("readOnlyRootFilesystem") is True
    assert sc.get("allowPrivilegeEscalation") is False
    assert sc.get("capabilities", {}).get("drop") == ["ALL"]
    assert sc.get("seccompProfile", {}).get("type") == "RuntimeDefault"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert "scheme" not in c["livenessProbe"]["httpGet"], "probes stay plain HTTP without tls"
    assert pod.get("topologySpreadConstraints") or pod.get("affinity"), "spread or anti-affinity"
    grpc = [s for s in chart.find(renders[label], "Service") if s["metadata"]["name"].endswith("-grpc")]
    assert len(grpc) == 1 and grpc[0]["spec"]["type"] == "ClusterIP"


def test_tls_mounts_the_secret_names_the_files_and_probes_over_https(
        renders: dict[str, list[dict[str, Any]]]) -> None:
    pod = chart.pod_spec(renders["tls"])
    c = pod["containers"][0]
    env = chart.literal_env(renders["tls"])
    assert (env.get("HERALD_TLS_CERT"), env.get("HERALD_TLS_KEY"), env.get("HERALD_GRPC_TLS")) == (
        "/etc/herald-tls/tls.crt", "/etc/herald-tls/tls.key", "true")
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert mounts.get("tls") == "/etc/herald-tls"
    assert volumes.get("tls", {}).get("secret", {}).get("secretName") == "herald-tls"
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"].get("scheme") == "HTTPS", probe
