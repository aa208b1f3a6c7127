"""int8 TFLite files from ai-edge-quantizer: smaller, still answering like the model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from builds import with_more_calibration_rows
from tiny_models import make_tiny_bundle, make_tiny_text_bundle

from optimise.errors import ConfigError, PassFailed
from optimise.passes import build_pass
from optimise.passes.base import PassContext
from optimise.profiles import get_profile
from optimise.runtimes.litert_session import LiteRtSession
from optimise.source import ModelBundle
from optimise.types import PassSpec


def _quantise(model: Path, bundle: ModelBundle, workdir: Path, mode: str) -> Path:
    context = PassContext(bundle=bundle, profile=get_profile("edge"), workdir=workdir)
    return build_pass(PassSpec("quantise_litert", {"mode": mode})).apply(model, context)


@pytest.mark.parametrize("mode", ["dynamic", "static"])
def test_int8_files_are_smaller_and_agree_with_the_model(
    tiny_tflite: Path, tmp_path: Path, mode: str
) -> None:
    bundle = with_more_calibration_rows(make_tiny_bundle())
    int8 = _quantise(tiny_tflite, bundle, tmp_path, mode)
    assert int8 == tmp_path / "model.tflite" and int8.with_suffix(".io.json").is_file()
    assert int8.stat().st_size < 0.8 * tiny_tflite.stat().st_size  # a tiny model: mostly file overhead
    session = LiteRtSession(int8)
    answer, expected = session.run(bundle.eval_inputs)[0], bundle.run_torch(bundle.eval_inputs)[0]
    assert answer.dtype == np.float32  # float in and out, int8 inside
    assert 0 < np.max(np.abs(answer - expected)) < 1.0  # int8 steps; the ranking is what must hold
    assert (answer.argmax(1) == expected.argmax(1)).mean() >= 0.9


def test_static_int8_is_refused_for_text_signatures(tiny_text_tflite: Path, tmp_path: Path) -> None:
    with pytest.raises(PassFailed, match="static int8 is for models without a sequence axis"):
        _quantise(tiny_text_tflite, make_tiny_text_bundle(), tmp_path, "static")


def test_too_few_calibration_rows_names_the_minimum(tiny_tflite: Path, tmp_path: Path) -> None:
    bundle = make_tiny_bundle()  # 32 calibration rows
    few = with_more_calibration_rows(bundle, rows=8)
    with pytest.raises(PassFailed, match="at least 32 calibration rows, got 8"):
        _quantise(tiny_tflite, few, tmp_path, "static")


def test_bad_settings_are_a_user_error() -> None:
    for settings in ({"mode": "int4"}, {"calibration_rows": 4}):
        with pytest.raises(ConfigError, match="quantise_litert"):
            build_pass(PassSpec("quantise_litert", settings))
