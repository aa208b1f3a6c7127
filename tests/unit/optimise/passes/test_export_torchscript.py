from pathlib import Path

import numpy as np
import pytest
import torch

from optimise.errors import ConfigError, PassFailed
from optimise.passes import build_pass
from optimise.passes.base import PassContext
from optimise.passes.export_torchscript import ExportTorchScript, ExportTorchScriptConfig
from optimise.runtimes.torchscript_session import TorchScriptSession
from optimise.types import PassSpec


def _export(module: torch.nn.Module, ctx: PassContext, **settings: object) -> Path:
    return ExportTorchScript(ExportTorchScriptConfig(**settings)).apply(module, ctx)  # type: ignore[arg-type]


@pytest.mark.parametrize("method", ["trace", "script"])
@pytest.mark.parametrize("freeze", [True, False])
def test_saved_torchscript_matches_pytorch(method: str, freeze: bool, tiny_context: PassContext) -> None:
    bundle = tiny_context.bundle
    saved = _export(bundle.module, tiny_context, method=method, freeze=freeze)
    assert saved == tiny_context.workdir / "model.pt"
    loaded = torch.jit.load(str(saved))
    for n in (1, 7, 64):
        batch = {"features": bundle.eval_inputs["features"][:n]}
        with torch.inference_mode():
            actual = loaded(torch.from_numpy(batch["features"])).numpy()
        expected = bundle.run_torch(batch)[0]
        assert actual.shape == expected.shape
        np.testing.assert_allclose(actual, expected, atol=1e-5)


class _PerRow(torch.nn.Module):
    """Loops over the rows in Python: a trace at batch 1 keeps one row for any batch."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(16, 4)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.linear(features[i]) for i in range(features.shape[0])])


def test_trace_specialised_to_batch_one_is_rejected(tiny_context: PassContext) -> None:
    module = _PerRow().eval()
    with pytest.raises(PassFailed, match=r"export_torchscript: .* at batch 7"):
        _export(module, tiny_context)
    assert not (tiny_context.workdir / "model.pt").exists()
    # Scripting keeps the loop, so the same module exports correctly that way.
    saved = _export(module, tiny_context, method="script")
    assert torch.jit.load(str(saved))(torch.zeros(7, 16)).shape == (7, 4)


class _Unscriptable(torch.nn.Module):
    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(features.numpy() * 2)


def test_unscriptable_module_drops_the_candidate(tiny_context: PassContext) -> None:
    with pytest.raises(PassFailed, match="script failed"):
        _export(_Unscriptable(), tiny_context, method="script")


def test_parity_uses_the_module_handed_in(tiny_context: PassContext) -> None:
    # A changed (e.g. pruned) module is compared with itself, not with the bundle's original.
    bundle = tiny_context.bundle
    assert bundle.forward is not None
    torch.manual_seed(1)
    changed = type(bundle.module)().eval()
    expected = bundle.forward(changed, bundle.latency_inputs)[0]
    assert not np.allclose(expected, bundle.run_torch(bundle.latency_inputs)[0], atol=1e-3)
    saved = _export(changed, tiny_context)
    with torch.inference_mode():
        out = torch.jit.load(str(saved))(torch.from_numpy(bundle.latency_inputs["features"])).numpy()
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_bad_settings_are_a_user_error() -> None:
    for settings in (
        {"method": "compile"},
        {"atol": 0.0},
        {"optimise": True},
        {"optimize_for_inference": True},
    ):
        with pytest.raises(ConfigError, match="export_torchscript"):
            build_pass(PassSpec("export_torchscript", settings))


def test_writes_only_inside_its_workdir(
    tiny_context: PassContext, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    before = set(tmp_path.rglob("*"))
    _export(tiny_context.bundle.module, tiny_context)
    assert set(tmp_path.rglob("*")) - before == {tiny_context.workdir / "model.pt"}


def test_the_file_names_its_inputs_and_outputs_for_the_runtime(tiny_context: PassContext) -> None:
    bundle = tiny_context.bundle
    session = TorchScriptSession(_export(bundle.module, tiny_context), threads=1)
    assert session.input_names == bundle.input_names and session.output_names == bundle.output_names
    assert session.inputs[0].dtype is np.float32 and session.inputs[0].shape == ("batch", 16)
    assert session.outputs[0].shape == ("batch", 4)  # the sample axis is dynamic in every output
    np.testing.assert_allclose(
        session.run(bundle.eval_inputs)[0], bundle.run_torch(bundle.eval_inputs)[0], atol=1e-5
    )


def test_dynamic_int8_quantises_the_linear_layers(tiny_context: PassContext) -> None:
    bundle = tiny_context.bundle
    fp32 = _export(bundle.module, tiny_context)
    int8_dir = tiny_context.workdir / "int8"
    int8_dir.mkdir()
    int8 = _export(bundle.module, PassContext(bundle, tiny_context.profile, int8_dir), int8_dynamic=True)
    graph = str(torch.jit.load(str(int8)).graph)
    assert "quantized::linear_dynamic" in graph and "quantized::linear_dynamic" not in str(
        torch.jit.load(str(fp32)).graph
    )
    # Close to FP32 (int8 weights per channel), and not the same numbers.
    answer = TorchScriptSession(int8).run(bundle.eval_inputs)[0]
    expected = bundle.run_torch(bundle.eval_inputs)[0]
    assert 0 < np.max(np.abs(answer - expected)) < 0.05
    assert (answer.argmax(1) == expected.argmax(1)).mean() > 0.95


def test_a_file_without_the_signature_is_refused(tmp_path: Path) -> None:
    plain = tmp_path / "plain.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(plain))
    with pytest.raises(ValueError, match=r"no leanserve_signature\.json"):
        TorchScriptSession(plain)
