"""Real models in a real (session-temporary) model store, and data planes serving them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from builds import FP32_AND_INT8, FP32_ONLY, build_and_save
from tiny_models import make_tiny_bundle

from optimise.sources import load_source
from optimise.space import SearchSpace
from service.dataplane import DataPlane
from service.settings import ServiceSettings


def _build_and_save(bundle_name: str, source: str, space: SearchSpace) -> str:
    bundle = make_tiny_bundle() if source == "tiny" else load_source(source)
    bundle.name = bundle_name
    return build_and_save(bundle, space, source)


@pytest.fixture(scope="session")
def tiny_tags() -> list[str]:
    """Two stored versions of the tiny classifier, model name 'tiny-served'."""
    return [_build_and_save("tiny-served", "tiny", FP32_AND_INT8) for _ in range(2)]


@pytest.fixture(scope="session")
def text_tag() -> str:
    """MiniLM as its FP32 ONNX export (one candidate: quick), model name 'minilm-served'."""
    return _build_and_save("minilm-served", "minilm", FP32_ONLY)


@pytest.fixture
def dataplane(tiny_tags: list[str], text_tag: str) -> Iterator[DataPlane]:
    """A ready data plane serving the first tiny version and MiniLM."""
    plane = DataPlane(ServiceSettings(models=[tiny_tags[0], text_tag], grpc_port=0))
    plane.load_configured()
    assert plane.is_ready()
    yield plane
