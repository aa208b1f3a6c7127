"""Every rendered workload (serving Deployments and optimisation Jobs) runs restricted: non-root with
a numeric uid, read-only root filesystem, no privilege escalation, no capabilities, the runtime's
seccomp profile, and requests and limits on every container."""

from __future__ import annotations

from typing import Any

import pytest
from k8s_helpers import JOBS, KUBECTL, SERVING_OVERLAYS, Doc, needs_kubectl, render

pytestmark = needs_kubectl
WORKLOAD_KINDS = {"Deployment", "Job", "StatefulSet", "DaemonSet"}


def workloads() -> list[tuple[str, Doc]]:
    if KUBECTL is None:  # collected anyway; every test here skips
        return []
    return [
        (f"{directory}:{doc['kind']}/{doc['metadata']['name']}", doc)
        for directory in SERVING_OVERLAYS + JOBS
        for doc in render(directory)
        if doc["kind"] in WORKLOAD_KINDS
    ]


def containers(workload: Doc) -> list[Doc]:
    spec = workload["spec"]["template"]["spec"]
    found: list[Doc] = spec["containers"] + spec.get("initContainers", [])
    return found


def effective(workload: Doc, container: Doc, key: str) -> Any:
    """A security setting as the kubelet applies it: the container's, else the pod's."""
    pod = workload["spec"]["template"]["spec"].get("securityContext", {})
    return container.get("securityContext", {}).get(key, pod.get(key))


def test_every_overlay_and_job_has_workloads() -> None:
    names = [name for name, _ in workloads()]
    for directory in SERVING_OVERLAYS:
        assert any(n.startswith(f"{directory}:Deployment/") for n in names), directory
    for directory in JOBS:
        assert any(n.startswith(f"{directory}:Job/") for n in names), directory


@pytest.mark.parametrize("name, workload", workloads(), ids=[n for n, _ in workloads()])
def test_runs_as_a_numeric_non_root_user(name: str, workload: Doc) -> None:
    for c in containers(workload):
        assert effective(workload, c, "runAsNonRoot") is True, name
        uid = effective(workload, c, "runAsUser")
        assert isinstance(uid, int) and uid > 0, name  # runAsNonRoot alone fails on a named USER


@pytest.mark.parametrize("name, workload", workloads(), ids=[n for n, _ in workloads()])
def test_container_security_context_is_restricted(name: str, workload: Doc) -> None:
    for c in containers(workload):
        context = c.get("securityContext", {})
        assert context.get("readOnlyRootFilesystem") is True, name
        assert context.get("allowPrivilegeEscalation") is False, name
        assert context.get("capabilities", {}).get("drop") == ["ALL"], name
        assert not context.get("capabilities", {}).get("add"), name
        assert not context.get("privileged"), name
        assert effective(workload, c, "seccompProfile") == {"type": "RuntimeDefault"}, name


@pytest.mark.parametrize("name, workload", workloads(), ids=[n for n, _ in workloads()])
def test_every_container_has_requests_and_limits(name: str, workload: Doc) -> None:
    for c in containers(workload):
        resources = c.get("resources", {})
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(resources.get(kind, {})), f"{name}: {kind}"


@pytest.mark.parametrize("name, workload", workloads(), ids=[n for n, _ in workloads()])
def test_writable_paths_are_volumes(name: str, workload: Doc) -> None:
    spec = workload["spec"]["template"]["spec"]
    assert spec.get("automountServiceAccountToken") is False, name
    for c in containers(workload):
        mounts = {m["mountPath"] for m in c.get("volumeMounts", []) if not m.get("readOnly")}
        assert "/tmp" in mounts, name  # the only writable place besides what the env points at
        home = {e["name"]: e.get("value") for e in c.get("env", [])}.get("BENTOML_HOME")
        assert home in mounts, f"{name}: BENTOML_HOME {home} is not a writable volume"


def test_gpu_overlay_requests_nvidia_gpu() -> None:
    (deployment,) = [d for d in render("overlays/gpu") if d["kind"] == "Deployment"]
    (c,) = containers(deployment)
    assert c["resources"]["limits"].get("nvidia.com/gpu") == "1"
