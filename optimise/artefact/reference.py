"""The reference sample stored with every artefact (`reference.npz`): the drift monitor's baseline.

Evaluation inputs by input name, the selected model's outputs for them, the labels when the source
had some, and per-row scalar features (a served window saved in the same layout carries those).
In the file: `input__<name>`, `output`, `labels`, `feature__<name>` arrays, rows on the first axis.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from optimise.artefact.files import ArtefactError
from optimise.errors import one_line

INPUT_PREFIX = "input__"
FEATURE_PREFIX = "feature__"
OUTPUT = "output"
LABELS = "labels"


@dataclass(frozen=True, eq=False)
class ReferenceData:
    """Rows of inputs (by input name), outputs [N, ...], labels [N] and features (by name, [N])."""

    inputs: Mapping[str, np.ndarray] = field(default_factory=dict)
    outputs: np.ndarray | None = None
    labels: np.ndarray | None = None
    features: Mapping[str, np.ndarray] = field(default_factory=dict)

    def save(self, path: Path) -> None:
        """Write as a compressed .npz in the layout above. Raises OSError."""
        arrays: dict[str, Any] = {f"{INPUT_PREFIX}{k}": v for k, v in self.inputs.items()}
        arrays |= {f"{FEATURE_PREFIX}{k}": v for k, v in self.features.items()}
        if self.outputs is not None:
            arrays[OUTPUT] = self.outputs
        if self.labels is not None:
            arrays[LABELS] = self.labels
        np.savez_compressed(path, **arrays)

    def head(self, rows: int) -> ReferenceData:
        """The first `rows` rows of every array."""
        return ReferenceData(
            {k: v[:rows] for k, v in self.inputs.items()},
            None if self.outputs is None else self.outputs[:rows],
            None if self.labels is None else self.labels[:rows],
            {k: v[:rows] for k, v in self.features.items()},
        )

    @classmethod
    def load(cls, path: Path, allow_other: bool = True) -> ReferenceData:
        """Read an .npz in this layout. Arrays of other names are ignored, or with `allow_other=False`
        refused. Raises ArtefactError naming the file when it cannot be read, has none of these arrays,
        has unexpected ones, or its arrays differ in rows."""
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        except (OSError, ValueError) as exc:
            raise ArtefactError(f"{path}: cannot read it as .npz: {one_line(exc)}") from None
        known = {k: v for k, v in arrays.items() if is_reference_array(k)}
        other = sorted(set(arrays) - set(known))
        if other and not allow_other:
            raise ArtefactError(
                f"{path}: unexpected arrays {', '.join(map(repr, other))} "
                f"(expected {INPUT_PREFIX}<name>, {OUTPUT}, {LABELS}, {FEATURE_PREFIX}<name>)"
            )
        if not known:
            found = ", ".join(sorted(arrays)) or "nothing"
            raise ArtefactError(
                f"{path}: no {INPUT_PREFIX}<name>, {OUTPUT} or {FEATURE_PREFIX}<name> arrays (it has {found})"
            )
        rows = {k: len(v) for k, v in known.items()}
        if len(set(rows.values())) > 1:
            listed = ", ".join(f"{k} {n}" for k, n in sorted(rows.items()))
            raise ArtefactError(f"{path}: arrays differ in rows: {listed}")
        return cls(
            inputs={k.removeprefix(INPUT_PREFIX): v for k, v in known.items() if k.startswith(INPUT_PREFIX)},
            outputs=known.get(OUTPUT),
            labels=known.get(LABELS),
            features={
                k.removeprefix(FEATURE_PREFIX): v for k, v in known.items() if k.startswith(FEATURE_PREFIX)
            },
        )


def is_reference_array(name: str) -> bool:
    return name in (OUTPUT, LABELS) or name.startswith((INPUT_PREFIX, FEATURE_PREFIX))
