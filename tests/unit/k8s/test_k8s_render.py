"""Every kustomization under k8s/ renders with `kubectl kustomize`, and every rendered core object
passes kubernetes-validate in strict mode (unknown fields are errors) for several Kubernetes
versions. The Prometheus Operator's CRDs (ServiceMonitor, PrometheusRule) have no schema there:
they are checked by test_k8s_consistency.py instead."""

from __future__ import annotations

import os
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from k8s_helpers import COMPONENTS, JOBS, K8S, KUSTOMIZATIONS, SERVING_OVERLAYS, Doc, needs_kubectl, render

# The oldest and a recent release with schemas in kubernetes-validate 1.37 (1.25-1.37), plus its newest.
K8S_VERSIONS = ("1.30.0", "1.33.0", kubernetes_validate.latest_version())
CRDS = {("monitoring.coreos.com/v1", "ServiceMonitor"), ("monitoring.coreos.com/v1", "PrometheusRule")}

pytestmark = needs_kubectl


def core(docs: list[Doc]) -> list[Doc]:
    return [d for d in docs if (d["apiVersion"], d["kind"]) not in CRDS]


def test_the_expected_kustomizations_exist() -> None:
    assert {"base", "overlays/cpu", "overlays/gpu", "storage", "jobs/optimise", "jobs/search"} <= set(
        KUSTOMIZATIONS
    )
    assert {"hpa-requests", "model-store-pvc"} <= set(COMPONENTS)
    assert SERVING_OVERLAYS and JOBS


@pytest.mark.parametrize("directory", KUSTOMIZATIONS)
def test_renders(directory: str) -> None:
    docs = render(directory)
    assert docs, f"{directory} rendered nothing"
    for doc in docs:
        assert doc.get("apiVersion") and doc.get("kind") and doc["metadata"].get("name")
    assert {d["kind"] for d in docs} - {k for _, k in CRDS}, directory


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("directory", KUSTOMIZATIONS)
def test_core_objects_pass_strict_schema_validation(directory: str, version: str) -> None:
    for doc in core(render(directory)):
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = "/".join(str(p) for p in exc.path)
            pytest.fail(f"{directory}: {doc['kind']}/{doc['metadata']['name']} at {path}: {exc.message}")


def test_only_the_operator_crds_skip_schema_validation() -> None:
    for directory in KUSTOMIZATIONS:
        for doc in render(directory):
            if (doc["apiVersion"], doc["kind"]) in CRDS:
                continue
            kubernetes_validate.validate(doc, K8S_VERSIONS[0], strict=True)  # a schema exists


def with_components(tmp_path: Path, *components: str) -> list[Doc]:
    """The cpu overlay plus components, through a throwaway kustomization."""
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        # kustomize wants relative paths (it refuses absolute roots).
        "resources": [os.path.relpath(K8S / "overlays" / "cpu", tmp_path)],
        "components": [os.path.relpath(K8S / "components" / name, tmp_path) for name in components],
    }
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(kustomization), encoding="utf-8")
    return render(tmp_path)


@pytest.mark.parametrize("component", COMPONENTS)
def test_every_component_renders_and_validates(tmp_path: Path, component: str) -> None:
    docs = with_components(tmp_path, component)
    for version in K8S_VERSIONS:
        for doc in core(docs):
            kubernetes_validate.validate(doc, version, strict=True)


def test_all_components_together(tmp_path: Path) -> None:
    docs = with_components(tmp_path, *COMPONENTS)
    hpa = next(d for d in docs if d["kind"] == "HorizontalPodAutoscaler")
    assert [m["type"] for m in hpa["spec"]["metrics"]] == ["Resource", "Pods"]
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    assert any(v["name"] == "model-store" for v in deployment["spec"]["template"]["spec"]["volumes"])
