import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import bentoml
import pytest
import torch
from typer.testing import CliRunner

from optimise import store
from optimise.cli import app

MakeVersion = Callable[..., Path]  # the `make_version` fixture (tests/unit/optimise/conftest.py)

runner = CliRunner()
QUICK_SERVING = ("--serve-concurrency", "4", "--serve-seconds", "0.1")
"""A serving stage short enough for a test (its choice is tested in test_serving_search)."""


def invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def quick_build(*extra: str, promote: bool = False) -> tuple[int, str]:
    """`leanserve optimise` on the tiny factory model: 2 trials, 1 round, a short serving stage."""
    flags = [] if promote else ["--no-promote"]
    return invoke(
        "optimise",
        "--model",
        "tiny_models:build",
        "--trials",
        "2",
        "--rounds",
        "1",
        *flags,
        *QUICK_SERVING,
        *extra,
    )


def _store_tags() -> set[str]:
    return {str(m.tag) for m in bentoml.models.list()}


def test_optimise_a_factory_model_stores_it_and_prints_the_summary(tmp_path: Path) -> None:
    code, output = invoke(
        "optimise", "--model", "tiny_models:build", "--trials", "6", "--rounds", "1", *QUICK_SERVING
    )
    assert code == 0, output
    assert "selected" in output and "stored tiny:" in output
    assert "serving settings at concurrency 4" in output and "serving settings: " in output
    tag = output.split("stored ")[1].split()[0]
    code, output = invoke("models", "show", tag)
    assert code == 0 and "files intact" in output
    # The measurements read as units, not as the manifest's Python dict with 17 digits per float.
    assert "latency: p50 " in output and " ms over 1 rounds" not in output and "{" not in output
    assert "throughput: " in output and "size: " in output and "quality: " in output
    assert "serving settings: " in output and "most requests/s at concurrency 4" in " ".join(output.split())
    code, output = invoke("models", "list", "tiny")
    assert code == 0 and tag.split(":")[1][:8] in output
    code, output = invoke("models", "export", tag, str(tmp_path / "out"))
    assert code == 0
    assert (tmp_path / "out" / "model.onnx").is_file()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "no/such/path.pt"], "does not exist"),
        (["--model", "nonsense"], "cannot read model"),
        (["--model", "tiny_models:raising"], "weights file is missing"),
        (["--model", "tiny_models:unexportable"], "export_onnx"),
        (["--model", "tiny_models:build", "--profile", "tpu"], "unknown profile 'tpu'"),
        (["--model", "tiny_models:build", "--profile", "gpu"], "CUDAExecutionProvider"),
        (["--model", "tiny_models:build", "--max-size-mb", "0.000001"], "no variant meets the constraints"),
        (["--model", "tiny_models:build", "--min-cosine", "2"], "min_cosine"),
        (["--model", "tiny_models:build", "--sampler", "random"], "unknown sampler"),
        (["--model", "tiny_models:build", "--distil"], "needs unlabelled inputs: pass --distil-data FILE"),
        (
            ["--model", "tiny_models:build", "--distil-data", "no/such.npz"],
            "--distil-data: distillation data no/such.npz does not exist",
        ),
        (
            ["--model", "tiny_models:build", "--distil-data", "pyproject.toml"],
            "--distil-data: distillation data pyproject.toml is not a",
        ),
        (
            ["--model", "tiny_models:build", "--distil-live", "pyproject.toml"],
            "--distil-live: distillation data pyproject.toml is not",
        ),
        (["--model", "tiny_models:build", "--student", "depth=2"], "unknown student 'depth=2'"),
        (["--model", "tiny_models:build", "--student", "width=1.5"], "0 < width < 1"),
        (["--model", "tiny_models:build", "--student", "layers=2"], "student 'layers=2': a classifier"),
        (["--model", "tiny_models:build", "--student", "width=0.5", "--no-distil"], "--no-distil refuses"),
        (["--model", "tiny_models:build", "--distil-time", "inf"], "--distil-time must be a finite number"),
        (["--model", "tiny_models:build", "--distil-time", "nan"], "--distil-time must be a finite number"),
        (["--model", "tiny_models:build", "--distil-time", "0.5"], "at least 1, got 0.5"),
        (["--model", "tiny_models:build", "--distil-steps", "0"], "--distil-steps must be at least 1, got 0"),
        (
            ["--model", "tiny_models:build", "--max-size-mb", "1e400"],
            "--max-size-mb must be a positive, finite",
        ),
        (
            ["--model", "tiny_models:build", "--max-size-mb", "nan"],
            "--max-size-mb must be a positive, finite",
        ),
        (["--model", "tiny_models:build", "--max-size-mb", "0"], "--max-size-mb must be a positive, finite"),
        (["--model", "tiny_models:build", "--student", "width=1e400"], "width takes a number, got '1e400'"),
        (["--model", "tiny_models:build", "--student", "width=0.001"], "width 0.001 is too narrow for tiny"),
        (["--model", "tiny_models:build", "--distil-live", "README.md"], "(a NumPy zip archive, np.savez)"),
        (
            ["--model", "tiny_models:build", "--select-by", "throughput", "--serve-concurrency", "0"],
            "--select-by throughput needs the serving stage",
        ),
    ],
)
def test_bad_input_is_one_clear_line_and_leaves_the_store_unchanged(args: list[str], message: str) -> None:
    before = _store_tags()
    code, output = invoke("optimise", *args, "--trials", "3", "--rounds", "1")
    assert code == 2
    error_lines = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and message in " ".join(output.split()), output
    assert _store_tags() == before


def test_corrupt_torchscript_file_is_reported(tmp_path: Path) -> None:
    model = tmp_path / "model.pt"
    model.write_bytes(b"not torchscript")
    code, output = invoke("optimise", "--model", str(model), "--example-inputs", str(tmp_path / "x.npz"))
    assert code == 2 and "cannot load TorchScript file" in output


def test_torchscript_model_with_examples_is_optimised(tmp_path: Path) -> None:
    import numpy as np
    from tiny_models import make_tiny_bundle

    bundle = make_tiny_bundle()
    scripted = torch.jit.trace(bundle.module, torch.from_numpy(bundle.latency_inputs["features"]))
    scripted.save(str(tmp_path / "tiny.pt"))
    np.savez(tmp_path / "examples.npz", features=bundle.eval_inputs["features"])
    code, output = invoke(
        "optimise", "--model", str(tmp_path / "tiny.pt"), "--example-inputs", str(tmp_path / "examples.npz"),
        "--trials", "4", "--rounds", "1",
    )  # fmt: skip
    assert code == 0, output
    assert "cosine" in output or "min" in output  # no labels: quality is fidelity


def test_unknown_model_tag_is_an_error() -> None:
    code, output = invoke("models", "show", "missing:v1")
    assert code == 2 and "no model 'missing:v1'" in output


def test_profiles_lists_every_profile_and_whether_it_runs_here() -> None:
    code, output = invoke("profiles")
    assert code == 0
    for name in ("cpu", "gpu", "edge"):
        assert name in output
    assert "onnxruntime" in output and "openvino" in output  # this x86 machine has AVX-512


def test_console_script_is_installed() -> None:
    exe = Path(sys.executable).parent / "leanserve"
    result = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0 and "optimise" in result.stdout and "drift" in result.stdout


def test_the_build_records_its_version_as_live_unless_told_not_to(
    private_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the build's scratch folder goes here
    code, output = quick_build(promote=True)
    assert code == 0, output
    tag = output.split("stored ")[1].split()[0]
    assert store.live_version("tiny") == tag.split(":")[1] and f"live version of tiny: {tag}" in output
    code, output = quick_build()
    assert code == 0, output
    assert store.live_version("tiny") == tag.split(":")[1]  # the second build is stored, not live
    assert "not promoted (--no-promote): `leanserve models promote tiny:" in " ".join(output.split())
    assert len(store.versions("tiny")) == 2 and store.resolve("tiny") == tag
    assert list(tmp_path.glob("leanserve-build-*")) == []


def test_a_broken_version_is_listed_with_the_reason_and_cannot_be_shown_exported_or_promoted(
    make_version: MakeVersion, tmp_path: Path
) -> None:
    good, bad = make_version("digits"), make_version("digits")
    (bad / "model.yaml").write_text("name: [unclosed\n")
    code, output = invoke("models", "list")
    assert code == 0, output
    rows = {line.split()[1]: line for line in output.splitlines() if "digits:" in line and "│" in line}
    assert "broken" in rows[f"digits:{bad.name}"] and "live (newest)" in rows[f"digits:{good.name}"]
    assert f"broken digits:{bad.name}: invalid YAML in model.yaml at line" in " ".join(output.split())
    for args in (["show"], ["export"], ["promote"]):
        extra = [str(tmp_path / "out")] if args == ["export"] else []
        code, output = invoke("models", *args, f"digits:{bad.name}", *extra)
        assert code == 2 and "is broken" in output, (args, output)


def test_promote_records_a_usable_version_and_refuses_anything_else(make_version: MakeVersion) -> None:
    older, newer = make_version("digits"), make_version("digits")
    code, output = invoke("models", "promote", f"digits:{older.name}")
    assert code == 0, output
    assert store.live_version("digits") == older.name and store.resolve("digits") == f"digits:{older.name}"
    assert store.previous_live_version("digits") == newer.name  # what `digits` served until then
    code, output = invoke("models", "list", "digits")
    rows = {line.split()[1]: line for line in output.splitlines() if "digits:" in line and "│" in line}
    assert " live " in rows[f"digits:{older.name}"] and " ok " in rows[f"digits:{newer.name}"]
    for tag, message in (
        ("digits", "give the version"),
        ("digits:nosuch", "no model"),
        ("bad tag:x", "invalid"),
    ):
        code, output = invoke("models", "promote", tag)
        assert code == 2 and message in output, (tag, output)
    assert store.live_version("digits") == older.name


def test_listing_an_invalid_name_is_an_error(private_store: Path) -> None:
    code, output = invoke("models", "list", "bad name")
    assert code == 2 and "invalid model name" in output


def test_listing_a_name_never_stored_says_so(private_store: Path) -> None:
    code, output = invoke("models", "list", "nosuchmodel")
    assert code == 2 and "no versions of 'nosuchmodel'" in output


@pytest.mark.parametrize("rounds", ["0", "-3"])
def test_measurement_rounds_below_one_are_refused_before_any_work(rounds: str) -> None:
    code, output = invoke("optimise", "--model", "tiny_models:build", "--rounds", rounds)
    assert code == 2 and "--rounds" in output and "greater than or equal to 1" in " ".join(output.split()), (
        output
    )


def test_a_distilled_student_competes_in_the_search(tmp_path: Path) -> None:
    import numpy as np

    data = tmp_path / "traffic.npz"
    np.savez(data, features=np.random.default_rng(0).normal(size=(512, 16)).astype(np.float32))
    args = ["--model", "tiny_models:build", "--distil-data", str(data), "--distil-steps", "20"]
    code, output = invoke(
        "optimise", *args, "--trials", "10", "--rounds", "1", "--no-promote", *QUICK_SERVING
    )  # data implies --distil
    assert code == 0, output
    assert "distil tiny (width 0.5) done: step 20/20" in output  # progress at the default verbosity
    assert "distil(" in output and "skipped distillation" not in output
    tag = output.split("stored ")[1].split()[0]
    report = store.artefact(store.get_model(tag)).report_path.read_text(encoding="utf-8")
    assert "{trained 20 steps in" in report  # what the student had, not only the budget it was given


def test_recorded_inputs_alone_can_train_a_student(tmp_path: Path) -> None:
    import numpy as np

    live = tmp_path / "window.npz"
    np.savez(live, features=np.random.default_rng(7).normal(size=(300, 16)).astype(np.float32))
    args = ["--model", "tiny_models:build", "--distil-live", str(live), "--student", "width=0.25"]
    code, output = invoke(
        "optimise",
        *args,
        "--distil-steps",
        "5",
        "--trials",
        "6",
        "--rounds",
        "1",
        "--no-promote",
        *QUICK_SERVING,
    )  # recorded inputs imply --distil; the named student replaces the default width 0.5
    assert code == 0, output
    assert "distil tiny (width 0.25) done: step 5/5" in output and "width 0.5)" not in output


def test_a_build_that_does_not_distil_says_how_to_ask(tmp_path: Path) -> None:
    code, output = quick_build()
    assert code == 0, output
    assert "skipped distillation:" in " ".join(output.split()) and "--distil-data" in output


def test_a_build_without_the_serving_stage_says_so() -> None:
    code, output = quick_build("--serve-concurrency", "0")  # the last value given wins
    assert code == 0, output
    assert "skipped the serving stage (--serve-concurrency 0)" in " ".join(output.split())
    assert "serving settings at concurrency" not in output


def test_training_options_without_students_are_said_to_be_ignored() -> None:
    code, output = quick_build("--no-distil", "--distil-time", "60")
    assert code == 0, output
    assert "ignored --distil-time / --distil-steps: no students were trained" in " ".join(output.split())


def test_a_version_the_closed_loop_refused_is_listed_as_refused_with_its_reason(
    make_version: MakeVersion,
) -> None:
    older, newer = make_version("digits"), make_version("digits")
    store.mark_refused("digits", newer.name, "refused by the closed loop: shadow agreement 0.5000 < 0.98")
    code, output = invoke("models", "list", "digits")
    assert code == 0, output
    rows = {line.split()[1]: line for line in output.splitlines() if "digits:" in line and "│" in line}
    assert " refused " in rows[f"digits:{newer.name}"] and "live (newest)" in rows[f"digits:{older.name}"]
    assert f"refused digits:{newer.name}: refused by the closed loop: shadow agreement" in " ".join(
        output.split()
    )
    code, output = invoke("models", "show", f"digits:{newer.name}")
    assert code == 0 and "refused: refused by the closed loop: shadow agreement" in " ".join(output.split())
