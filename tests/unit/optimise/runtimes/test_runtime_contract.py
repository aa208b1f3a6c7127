"""Every runtime behind one session contract: same names and dtypes, same answers, thread-safe runs."""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tiny_models import normed_int8_torchscript

from optimise.passes.base import PassContext
from optimise.passes.export_torchscript import ExportTorchScript, ExportTorchScriptConfig
from optimise.runtimes import (
    LITERT,
    RUNTIMES,
    TORCHSCRIPT,
    NonFiniteActivations,
    RuntimeUnavailable,
    open_session,
)
from optimise.runtimes.ort_session import OnnxSession
from optimise.source import ModelBundle


@pytest.fixture
def model_for(tiny_onnx: Path, tiny_context: PassContext, tiny_tflite: Path) -> Any:
    """The tiny model in the file format `runtime` reads (ONNX Runtime and OpenVINO read ONNX; the
    TFLite file is converted once per session)."""

    def model(runtime: str) -> Path:
        if runtime == TORCHSCRIPT:
            return ExportTorchScript(ExportTorchScriptConfig()).apply(
                tiny_context.bundle.module, tiny_context
            )
        if runtime == LITERT:
            return tiny_tflite
        return tiny_onnx

    return model


def _rows(session: Any, count: int = 8) -> list[dict[str, np.ndarray]]:
    generator = np.random.default_rng(3)
    info = session.inputs[0]
    return [{info.name: generator.normal(size=(1 + i % 3, 16)).astype(np.float32)} for i in range(count)]


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_every_runtime_answers_as_onnx_runtime_does(tiny_onnx: Path, model_for: Any, runtime: str) -> None:
    reference = OnnxSession(tiny_onnx)
    session = open_session(runtime, model_for(runtime), threads=2)
    assert session.runtime == runtime and session.threads == 2 and session.on_cpu_only
    assert session.input_names == reference.input_names and session.output_names == reference.output_names
    assert [i.dtype for i in session.inputs] == [i.dtype for i in reference.inputs]
    for row in _rows(reference):
        answer, expected = session.run({**row, "unused": np.zeros(1)})[0], reference.run(row)[0]
        assert answer.shape == expected.shape and answer.dtype == expected.dtype
        np.testing.assert_allclose(answer, expected, rtol=1e-4, atol=1e-5)  # FP32 stays FP32


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_runs_from_several_threads_each_get_their_own_answer(model_for: Any, runtime: str) -> None:
    session = open_session(runtime, model_for(runtime), threads=1)
    rows = _rows(session) * 10
    alone = [session.run(row)[0] for row in rows]
    with ThreadPoolExecutor(4) as callers:
        together = list(callers.map(lambda row: session.run(row)[0], rows))
    for one, other in zip(alone, together, strict=True):
        np.testing.assert_array_equal(one, other)


def test_an_unknown_runtime_is_refused_naming_the_known_ones(tiny_onnx: Path) -> None:
    with pytest.raises(
        RuntimeUnavailable, match="unknown runtime 'tvm'; known: onnxruntime, openvino, torchscript, litert"
    ):
        open_session("tvm", tiny_onnx)


def test_a_missing_runtime_package_is_named(tiny_onnx: Path, without_openvino: None) -> None:
    with pytest.raises(RuntimeUnavailable, match="the openvino package is not installed"):
        open_session("openvino", tiny_onnx)


def test_a_missing_torch_is_named(tiny_context: PassContext, monkeypatch: pytest.MonkeyPatch) -> None:
    model = ExportTorchScript(ExportTorchScriptConfig()).apply(tiny_context.bundle.module, tiny_context)
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` fails, as in the default Bento
    with pytest.raises(RuntimeUnavailable, match="the torch package is not installed"):
        open_session(TORCHSCRIPT, model)


def test_pytorch_sets_one_thread_count_per_process(
    tiny_context: PassContext, tiny_bundle: ModelBundle
) -> None:
    import torch

    model = ExportTorchScript(ExportTorchScriptConfig()).apply(tiny_bundle.module, tiny_context)
    before = torch.get_num_threads()
    try:
        session = open_session(TORCHSCRIPT, model, threads=1)
        assert not session.threads_per_session
        torch.set_num_threads(2)  # something else in the process changed it
        session.run(tiny_bundle.latency_inputs)
        assert torch.get_num_threads() == 1  # the session runs with its own count again
    finally:
        torch.set_num_threads(before)


def test_nan_inside_a_dynamic_int8_layer_is_non_finite_activations_and_the_session_runs_on(
    tiny_context: PassContext,
) -> None:
    session = open_session(TORCHSCRIPT, normed_int8_torchscript(tiny_context))
    name = session.input_names[0]
    with pytest.raises(NonFiniteActivations, match="NaN or infinity"):
        session.run({name: np.full((2, 16), 3.4e38, np.float32)})  # finite FP32, out of the model's range
    assert np.isfinite(session.run({name: np.ones((2, 16), np.float32)})[0]).all()
