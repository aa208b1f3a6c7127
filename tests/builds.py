"""Quick real builds for tests: a small, enumerated search into the session's model store."""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from optimise import store
from optimise.build import BuildResult, optimise
from optimise.profiles import get_profile
from optimise.runtimes import ONNX_RUNTIME, OPENVINO
from optimise.search import SearchSettings
from optimise.serving_search import ServingTarget
from optimise.source import ModelBundle
from optimise.space import SearchSpace
from optimise.types import Constraints, Precision
from service.served_model import ServedModel

FP32_AND_INT8 = SearchSpace(
    graph_optimise=(False,),
    precisions=(Precision.FP32, Precision.INT8_DYNAMIC),
    per_channel=(True,),
    runtimes=(ONNX_RUNTIME,),
)
FP32_ONLY = SearchSpace(graph_optimise=(False,), precisions=(Precision.FP32,), runtimes=(ONNX_RUNTIME,))
OPENVINO_INT8 = SearchSpace(
    runtimes=(OPENVINO,),
    openvino_precisions=(Precision.INT8_STATIC,),
    precision_hints=("f32",),
)
"""Only an NNCF int8 OpenVINO variant (next to the FP32 ONNX reference every search builds)."""


def build(
    bundle: ModelBundle,
    space: SearchSpace,
    scratch: Path,
    runtime: str | None = None,
    profile: str = "cpu",
    serving: ServingTarget | None = None,
    constraints: Constraints | None = None,
) -> BuildResult:
    """Enumerate `space` for `bundle` on `profile` (one measuring round; the serving stage only with
    `serving`; the default constraints unless given); with `runtime`, the winner is the fastest
    variant on that runtime (which a tiny model may not pick by itself)."""
    settings = SearchSettings(sampler="grid")
    result = optimise(
        bundle, get_profile(profile), constraints or Constraints(), settings, scratch, space, rounds=1,
        serving=serving,
    )  # fmt: skip
    if runtime is not None:
        on_runtime = [v for v in result.variants if v.runtime == runtime and v.metrics]
        fastest = min(on_runtime, key=lambda v: v.metrics.latency_p50_ms if v.metrics else 0.0)
        result.selection = replace(result.selection, winner=fastest)
    return result


def build_and_save(
    bundle: ModelBundle, space: SearchSpace, source: str, runtime: str | None = None, profile: str = "cpu"
) -> str:
    """`build` in a scratch folder of its own, the winner stored; returns its tag."""
    with tempfile.TemporaryDirectory() as scratch:
        return store.save(build(bundle, space, Path(scratch), runtime, profile), source)


def served_answer(model: ServedModel, feeds: dict[str, np.ndarray]) -> np.ndarray:
    """The first output a served tensor model owes, straight from its session: the whole batch
    in one run, or, for dynamic int8 (activation scales are computed per call), every row in
    a run of its own. Which precision wins a small test build depends on timing."""
    if model.batch_invariant:
        return model.session.run(feeds)[0]
    rows = len(next(iter(feeds.values())))
    runs = model.session.run_many([{k: v[i : i + 1] for k, v in feeds.items()} for i in range(rows)])
    return np.concatenate([outputs[0] for outputs in runs])


def with_more_calibration_rows(bundle: ModelBundle, rows: int = 80) -> ModelBundle:
    """`bundle` (the tiny classifier's) with enough calibration rows for NNCF's minimum."""
    features = np.random.default_rng(1).normal(size=(rows, 16)).astype(np.float32)
    return replace(bundle, calibration_inputs={"features": features})


def openvino_int8_build(bundle: ModelBundle, scratch: Path) -> BuildResult:
    """A real build of `OPENVINO_INT8` whose winner is the NNCF int8 OpenVINO IR (the FP32 ONNX
    reference, the only other candidate, may be faster on a tiny model: it is passed over)."""
    return build(bundle, OPENVINO_INT8, scratch, OPENVINO)
