"""Quick real builds for tests: a small, enumerated search into the session's model store."""

from __future__ import annotations

import tempfile
from pathlib import Path

from optimise import store
from optimise.build import optimise
from optimise.profiles import get_profile
from optimise.search import SearchSettings
from optimise.source import ModelBundle
from optimise.space import SearchSpace
from optimise.types import Constraints, Precision

FP32_AND_INT8 = SearchSpace(
    graph_optimise=(False,), precisions=(Precision.FP32, Precision.INT8_DYNAMIC), per_channel=(True,)
)
FP32_ONLY = SearchSpace(graph_optimise=(False,), precisions=(Precision.FP32,))


def build_and_save(bundle: ModelBundle, space: SearchSpace, source: str) -> str:
    """Enumerate `space` for `bundle` on the cpu profile, store the winner, return its tag."""
    with tempfile.TemporaryDirectory() as scratch:
        settings = SearchSettings(sampler="grid")
        result = optimise(bundle, get_profile("cpu"), Constraints(), settings, Path(scratch), space, rounds=1)
        return store.save(result, source)
