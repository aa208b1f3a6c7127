"""What the manifests rely on in the code and in the files beside them, without rendering (no
kubectl needed): the health and metrics routes, the builder image, the prometheus-adapter rule."""

from __future__ import annotations

import re

import yaml
from bentoml._internal.configuration.containers import BentoMLContainer
from k8s_helpers import K8S, defined_metrics, metrics_in, system_routes

ADAPTER_VALUES = K8S / "components" / "hpa-requests" / "prometheus-adapter-values.yaml"
HPA_COMPONENT = K8S / "components" / "hpa-requests" / "kustomization.yaml"


def test_readyz_reports_the_data_plane() -> None:
    # BentoML's /readyz calls the service's __is_ready__ (the models are loaded and smoke-tested).
    from service.app import LeanServe

    assert callable(getattr(LeanServe.inner, "__is_ready__", None))  # type: ignore[attr-defined]


def test_metrics_endpoint_is_served_on_the_http_port() -> None:
    assert "/metrics" in system_routes()
    assert BentoMLContainer.api_server_config.metrics.enabled.get()


def test_builder_image_installs_the_project() -> None:
    dockerfile = (K8S / "builder" / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"^RUN pip install \. ", dockerfile, re.MULTILINE)
    assert "psycopg2-binary" in dockerfile  # SQLAlchemy's driver for postgresql:// URLs
    for package in ("optimise", "monitoring", "service"):
        assert f"COPY {package} ./{package}" in dockerfile
    ignore = (K8S / "builder" / "Dockerfile.dockerignore").read_text(encoding="utf-8")
    assert "!pyproject.toml" in ignore and "!README.md" in ignore


def test_request_rate_metric_comes_from_the_adapter_rule() -> None:
    values = yaml.safe_load(ADAPTER_VALUES.read_text(encoding="utf-8"))
    (rule,) = values["rules"]["custom"]
    patch = yaml.safe_load(yaml.safe_load(HPA_COMPONENT.read_text(encoding="utf-8"))["patches"][0]["patch"])
    metric = patch[0]["value"]["pods"]["metric"]["name"]
    assert rule["name"]["as"] == metric == "leanserve_requests_per_second"
    assert metrics_in(rule["seriesQuery"]) <= defined_metrics() and metrics_in(rule["seriesQuery"])
    assert "rate(" in rule["metricsQuery"] and rule["seriesQuery"].startswith("leanserve_requests_total")


def test_health_routes_are_bentomls() -> None:
    assert {"/readyz", "/livez", "/metrics"} <= system_routes()
    assert BentoMLContainer.http.port.get() == 3000
