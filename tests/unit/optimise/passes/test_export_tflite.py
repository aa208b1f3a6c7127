"""The TFLite export: torch.export programs, converted in the converter environment, checked by LiteRT."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_models import make_tiny_bundle, make_tiny_text_bundle

from optimise.errors import ConfigError, PassFailed
from optimise.passes import build_pass
from optimise.passes.base import PassContext
from optimise.passes.export_tflite import has_sequence_axis
from optimise.profiles import get_profile
from optimise.types import PassSpec


def test_the_file_and_its_tensor_names_are_written(tiny_tflite: Path) -> None:
    assert sorted(p.name for p in tiny_tflite.parent.iterdir()) == ["model.io.json", "model.tflite"]
    io = json.loads(tiny_tflite.with_suffix(".io.json").read_text())
    assert [i["name"] for i in io["inputs"]] == ["features"] and [o["name"] for o in io["outputs"]] == [
        "logits"
    ]
    assert list(io["signatures"]) == ["serving_default"]
    assert io["signatures"]["serving_default"]["inputs"] == {"features": "args_0"}
    # A plain LiteRT script runs it by the file's own names.
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=str(tiny_tflite)).get_signature_runner("serving_default")
    bundle = make_tiny_bundle()
    answer = runner(args_0=bundle.latency_inputs["features"])["output_0"]
    np.testing.assert_allclose(answer, bundle.run_torch(bundle.latency_inputs)[0], atol=1e-5)


def test_text_models_get_one_signature_per_length(tiny_text_tflite: Path) -> None:
    io = json.loads(tiny_text_tflite.with_suffix(".io.json").read_text())
    assert {name: s["length"] for name, s in io["signatures"].items()} == {"s4": 4, "s8": 8, "s12": 12}
    assert has_sequence_axis(make_tiny_text_bundle()) and not has_sequence_axis(make_tiny_bundle())


def test_default_lengths_are_powers_of_two_up_to_the_max_length(tmp_path: Path) -> None:
    from optimise.passes.export_tflite import ExportTflite, ExportTfliteConfig

    bundle = make_tiny_text_bundle()
    bundle.extra["max_length"] = "40"
    assert ExportTflite(ExportTfliteConfig())._lengths(bundle) == [16, 32, 40]


class _DataDependent(torch.nn.Module):
    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features[features > 0]  # a shape that depends on the values: no fixed-shape program


def test_a_model_the_exporter_cannot_take_drops_the_candidate(tmp_path: Path) -> None:
    bundle = make_tiny_bundle()
    context = PassContext(bundle=bundle, profile=get_profile("edge"), workdir=tmp_path)
    with pytest.raises(PassFailed, match=r"export_tflite: (torch\.export failed|LiteRT conversion failed)"):
        build_pass(PassSpec("export_tflite")).apply(_DataDependent(), context)
    assert not (tmp_path / "model.tflite").exists()


def test_bad_settings_are_a_user_error() -> None:
    for settings in ({"lengths": "16,x"}, {"lengths": "1"}, {"atol": 0}, {"signatures": 2}):
        with pytest.raises(ConfigError, match="export_tflite"):
            build_pass(PassSpec("export_tflite", settings))
