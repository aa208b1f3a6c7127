"""Real models in a real (session-temporary) model store, and data planes serving them."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from tiny_models import make_tiny_bundle

from optimise import store
from optimise.build import optimise
from optimise.profiles import get_profile
from optimise.search import SearchSettings
from optimise.sources import load_source
from optimise.space import SearchSpace
from optimise.types import Constraints, Precision
from service.dataplane import DataPlane
from service.settings import ServiceSettings

FP32_AND_INT8 = SearchSpace(
    graph_optimise=(False,), precisions=(Precision.FP32, Precision.INT8_DYNAMIC), per_channel=(True,)
)


def _build_and_save(bundle_name: str, source: str, space: SearchSpace) -> str:
    bundle = make_tiny_bundle() if source == "tiny" else load_source(source)
    bundle.name = bundle_name
    with tempfile.TemporaryDirectory() as scratch:
        result = optimise(
            bundle,
            get_profile("cpu"),
            Constraints(),
            SearchSettings(sampler="grid"),
            Path(scratch),
            space,
            rounds=1,
        )
        return store.save(result, source)


@pytest.fixture(scope="session")
def tiny_tags() -> list[str]:
    """Two stored versions of the tiny classifier, model name 'tiny-served'."""
    return [_build_and_save("tiny-served", "tiny", FP32_AND_INT8) for _ in range(2)]


@pytest.fixture(scope="session")
def text_tag() -> str:
    """MiniLM as its FP32 ONNX export (one candidate: quick), model name 'minilm-served'."""
    return _build_and_save(
        "minilm-served", "minilm", SearchSpace(graph_optimise=(False,), precisions=(Precision.FP32,))
    )


@pytest.fixture
def dataplane(tiny_tags: list[str], text_tag: str) -> Iterator[DataPlane]:
    """A ready data plane serving the first tiny version and MiniLM."""
    plane = DataPlane(ServiceSettings(models=[tiny_tags[0], text_tag], grpc_port=0))
    plane.load_configured()
    assert plane.is_ready()
    yield plane
