"""Quick real builds for tests: a small, enumerated search into the session's model store."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from optimise import store
from optimise.build import optimise
from optimise.profiles import get_profile
from optimise.search import SearchSettings
from optimise.source import ModelBundle
from optimise.space import SearchSpace
from optimise.types import Constraints, Precision
from service.served_model import ServedModel

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


def served_answer(model: ServedModel, feeds: dict[str, np.ndarray]) -> np.ndarray:
    """The first output a served tensor model owes, straight from its session: the whole batch
    in one run, or, for dynamic int8 (activation scales are computed per call), every row in
    a run of its own. Which precision wins a small test build depends on timing."""
    if model.batch_invariant:
        return model.session.run(feeds)[0]
    rows = len(next(iter(feeds.values())))
    runs = model.session.run_many([{k: v[i : i + 1] for k, v in feeds.items()} for i in range(rows)])
    return np.concatenate([outputs[0] for outputs in runs])
