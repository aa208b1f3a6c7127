from pathlib import Path

import numpy as np
import pytest
import torch

from optimise.errors import ConfigError, PassFailed
from optimise.passes import build_pass
from optimise.passes.base import PassContext
from optimise.passes.export_torchscript import ExportTorchScript, ExportTorchScriptConfig
from optimise.types import PassSpec


def _export(module: torch.nn.Module, ctx: PassContext, **settings: object) -> Path:
    return ExportTorchScript(ExportTorchScriptConfig(**settings)).apply(module, ctx)  # type: ignore[arg-type]


@pytest.mark.parametrize("method", ["trace", "script"])
@pytest.mark.parametrize("optimize", [True, False])
def test_saved_torchscript_matches_pytorch(method: str, optimize: bool, tiny_context: PassContext) -> None:
    bundle = tiny_context.bundle
    saved = _export(bundle.module, tiny_context, method=method, optimize_for_inference=optimize)
    assert saved == tiny_context.workdir / "model.ts"
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
    assert not (tiny_context.workdir / "model.ts").exists()
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
    for settings in ({"method": "compile"}, {"atol": 0.0}, {"optimise": True}):
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
    assert set(tmp_path.rglob("*")) - before == {tiny_context.workdir / "model.ts"}
