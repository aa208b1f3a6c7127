"""Turn what the user names (`--model`) into a `ModelBundle`."""

from __future__ import annotations

from pathlib import Path

from optimise.errors import SourceError
from optimise.source import ModelBundle
from optimise.sources.factory import is_factory_spec, load_factory
from optimise.sources.hf import load_hf_folder
from optimise.sources.torchscript import load_torchscript

DEMOS: dict[str, str] = {
    "minilm": "optimise.demos.minilm:build",
    "digits": "optimise.demos.digits:build",
}
TORCHSCRIPT_SUFFIXES = {".pt", ".pth", ".ts", ".torchscript"}


def _read_texts(path: Path) -> list[str]:
    if not path.is_file():
        raise SourceError(f"text file {path} does not exist")
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def load_source(
    spec: str,
    example_inputs: Path | None = None,
    eval_data: Path | None = None,
    calibration_data: Path | None = None,
) -> ModelBundle:
    """Resolve a demo name, a factory reference, a transformer folder or a TorchScript file."""
    if spec in DEMOS:
        return load_factory(DEMOS[spec])
    path = Path(spec)
    if path.is_dir():
        from optimise.demos.minilm import DATA_DIR

        # A transformer folder is judged on the user's texts, or on the bundled varied text set.
        texts = _read_texts(eval_data or DATA_DIR / "minilm_fidelity.txt")
        calibration = _read_texts(calibration_data or DATA_DIR / "minilm_calibration.txt")
        return load_hf_folder(path, texts, calibration)
    if path.suffix in TORCHSCRIPT_SUFFIXES:
        if not path.is_file():
            raise SourceError(f"model file {path} does not exist")
        return load_torchscript(path, example_inputs, eval_data)
    if is_factory_spec(spec):
        return load_factory(spec)
    raise SourceError(
        f"cannot read model {spec!r}: not a demo ({', '.join(DEMOS)}), an existing folder, "
        f"a TorchScript file ({', '.join(sorted(TORCHSCRIPT_SUFFIXES))}) or package.module:function"
    )


def replace_calibration(bundle: ModelBundle, path: Path) -> None:
    """Calibrate on these inputs (e.g. recent live traffic) instead of the bundle's own set."""
    from optimise.sources.torchscript import read_npz

    arrays = read_npz(path, "calibration inputs")
    missing = set(bundle.input_names) - set(arrays)
    if missing:
        raise SourceError(
            f"calibration inputs {path} lack {sorted(missing)} (the model takes {list(bundle.input_names)})"
        )
    bundle.calibration_inputs = {
        name: arrays[name].astype(bundle.latency_inputs[name].dtype, copy=False)
        for name in bundle.input_names
    }
