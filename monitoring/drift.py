"""Data and prediction drift of a window of served traffic against the build's reference sample.

Tensor models (digits): every flattened input value is a feature (`px_0..px_63`), tested one by one;
the prediction is the argmax of the outputs, a categorical column (or the value, for one output).
Text embedding models (minilm): the inputs are texts, so the features are whatever scalars the service
measured (`n_tokens`, `text_chars`); the prediction statistics are the embeddings' norm and their
coordinates on the reference's first principal axes, and the embeddings as a whole are tested by
Evidently's embedding drift method (see `monitoring.drift_embeddings`).

Per-column tests are Evidently's: its default test per column type and sample size (K-S or chi-square
p-values up to 1,000 reference rows, normalised Wasserstein or Jensen-Shannon above), its thresholds and
its dataset rule (drift when share of drifted features >= `drift_share`). The default engine calls those
test objects directly; `engine="report"` runs the same tests through a `Report` of `ValueDrift` metrics,
which draws a plotly figure per column while computing (about 0.08 s a column, 5 s for digits' 64,
holding the GIL) - kept for cross-checks and used by `render_html`. Evidently is imported lazily: the
service imports `monitoring.window` and this module's types without paying Evidently's import time (seconds).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Any, Literal, Self

import numpy as np
import pandas as pd

from monitoring.drift_embeddings import (
    DEFAULT_EMBEDDING_METHOD,
    EmbeddingMethod,
    embedding_drift,
    embedding_statistics,
    principal_axes,
    summary_html,
    text_features,
)

FEATURE_PREFIX = "px_"
OUTPUT_PREFIX = "out_"
PREDICTION = "prediction"
DRIFT_SHARE = 0.5
MAX_FEATURES = 128  # wider inputs are tested on evenly spaced values
Engine = Literal["stattest", "report"]


class ModelKind(StrEnum):
    TENSOR = "tensor"  # tensor inputs; class scores (or one value) out
    EMBEDDING = "embedding"  # text in (not kept), embeddings out


@dataclass(frozen=True)
class ColumnDrift:
    score: float  # a p-value for K-S / chi-square / Z tests (drift when below), else a distance or AUC
    drifted: bool
    method: str
    threshold: float | None


@dataclass(frozen=True)
class DriftReport:
    model: str
    kind: str
    window_size: int
    reference_size: int
    features: dict[str, ColumnDrift]
    share_drifted: float
    dataset_drift: bool
    prediction_drift: ColumnDrift | None
    embedding_drift: ColumnDrift | None
    seconds: float  # the first report in a process includes importing Evidently (seconds)
    drift_share: float = DRIFT_SHARE
    predictions: dict[str, ColumnDrift] = field(default_factory=dict)  # the prediction's columns

    @property
    def drifted(self) -> bool:
        verdicts = (self.prediction_drift, self.embedding_drift)
        return self.dataset_drift or any(v is not None and v.drifted for v in verdicts)

    @property
    def drifted_features(self) -> list[str]:
        return [name for name, drift in self.features.items() if drift.drifted]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "drifted": self.drifted}


@dataclass(frozen=True, kw_only=True, eq=False)
class Window:
    """Rows of traffic: inputs (tensor models), outputs, and per-row scalar features."""

    outputs: np.ndarray | None = None
    inputs: np.ndarray | None = None
    features: Mapping[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        arrays = [a for a in (self.outputs, self.inputs, *self.features.values()) if a is not None]
        if not arrays or len({len(a) for a in arrays}) != 1:
            raise ValueError(f"a window needs arrays of one length, got {[len(a) for a in arrays]}")

    def __len__(self) -> int:
        return len(next(a for a in (self.outputs, self.inputs, *self.features.values()) if a is not None))

    @property
    def kind(self) -> ModelKind:
        return ModelKind.TENSOR if self.inputs is not None else ModelKind.EMBEDDING

    @classmethod
    def text(
        cls, embeddings: np.ndarray, texts: Sequence[str] | None = None, token_counts: Any = None, **kw: Any
    ) -> Self:
        return cls(outputs=embeddings, features=text_features(texts, token_counts), **kw)

    def save_npz(self, path: Path) -> None:
        """In reference.npz's layout, plus `feature__<name>` arrays."""
        arrays: dict[str, Any] = {f"feature__{k}": v for k, v in self.features.items()}
        named = {"input__x": self.inputs, "output": self.outputs}
        arrays |= {k: v for k, v in named.items() if v is not None}
        np.savez_compressed(path, **arrays)


@dataclass(frozen=True, kw_only=True, eq=False)
class ReferenceSample(Window):
    name: str = "model"

    @classmethod
    def from_npz(cls, path: Path, name: str | None = None) -> ReferenceSample:
        """A stored artefact's reference.npz (its model name from manifest.json beside it, if any)."""
        manifest = path.parent / "manifest.json"
        if name is None and manifest.is_file():
            name = str(json.loads(manifest.read_text(encoding="utf-8")).get("name", ""))
        return cls(name=name or path.parent.name or path.stem, **read_npz(path))

    @cached_property
    def axes(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and principal axes of the even reference rows (see `_prediction_columns`)."""
        assert self.outputs is not None
        return principal_axes(self.outputs.reshape(len(self.outputs), -1)[0::2])


def read_npz(path: Path) -> dict[str, Any]:
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    inputs = {k.removeprefix("input__"): v for k, v in arrays.items() if k.startswith("input__")}
    features = {k.removeprefix("feature__"): v for k, v in arrays.items() if k.startswith("feature__")}
    if "input_ids" in inputs:  # a text model: keep the token counts, not the tokens
        if "attention_mask" in inputs:
            features.setdefault("n_tokens", inputs["attention_mask"].sum(axis=1).astype(np.float64))
        inputs = {}
    flat = [inputs[k].reshape(len(inputs[k]), -1) for k in sorted(inputs)]
    return {
        "outputs": arrays.get("output"),
        "inputs": np.concatenate(flat, axis=1) if flat else None,
        "features": features,
    }


def _feature_columns(sample: Window, max_features: int) -> dict[str, np.ndarray]:
    columns: dict[str, np.ndarray] = {}
    if sample.inputs is not None:
        flat = sample.inputs.reshape(len(sample.inputs), -1)
        width = flat.shape[1]
        keep = np.unique(np.linspace(0, width - 1, min(width, max_features)).round().astype(int))
        columns = {f"{FEATURE_PREFIX}{i}": flat[:, i] for i in keep}
    return columns | {k: np.asarray(v).reshape(-1) for k, v in sample.features.items()}


def _prediction_columns(reference: ReferenceSample, sample: Window) -> dict[str, np.ndarray]:
    if sample.outputs is None:
        return {}
    flat = sample.outputs.reshape(len(sample.outputs), -1)
    if reference.kind is ModelKind.EMBEDDING:
        stats = embedding_statistics(flat, *reference.axes)
        if sample is reference:  # axes fitted on rows overfit them: their variance along the axes is
            for values in stats.values():  # inflated; only the odd rows stand for the reference
                values[0::2] = np.nan  # (the drift tests drop NaN)
        return stats
    return {PREDICTION: flat.argmax(axis=1) if flat.shape[1] > 1 else flat[:, 0]}


def _frames(
    reference: ReferenceSample, current: Window, max_features: int
) -> tuple[pd.DataFrame, pd.DataFrame, list[str], list[str]]:
    if len(current) == 0:
        raise ValueError("the current window is empty")
    widths = {s.inputs[0].size for s in (reference, current) if s.inputs is not None}
    if len(widths) > 1:
        raise ValueError(f"the window's and the reference's inputs differ in size: {sorted(widths)}")
    ref_features, cur_features = (_feature_columns(s, max_features) for s in (reference, current))
    ref_pred, cur_pred = (_prediction_columns(reference, s) for s in (reference, current))
    features = [c for c in ref_features if c in cur_features]
    predictions = [c for c in ref_pred if c in cur_pred]
    ref = pd.DataFrame({**{c: ref_features[c] for c in features}, **{c: ref_pred[c] for c in predictions}})
    cur = pd.DataFrame({**{c: cur_features[c] for c in features}, **{c: cur_pred[c] for c in predictions}})
    return ref, cur, features, predictions


def _is_categorical(reference: ReferenceSample, column: str) -> bool:
    flat = 0 if reference.outputs is None else reference.outputs[0].size
    return column == PREDICTION and reference.kind is ModelKind.TENSOR and flat > 1


def _stattest_drift(
    ref: pd.DataFrame, cur: pd.DataFrame, categorical: set[str], method: str | None
) -> dict[str, ColumnDrift]:
    """Evidently's per-column tests as `ValueDrift` runs them, minus its plots."""
    from evidently.legacy.calculations.stattests import get_stattest
    from evidently.legacy.core import ColumnType

    drift: dict[str, ColumnDrift] = {}
    for column in ref.columns:
        kind = ColumnType.Categorical if column in categorical else ColumnType.Numerical
        r, c = (df[column].replace([np.inf, -np.inf], np.nan).dropna() for df in (ref, cur))
        test = get_stattest(r, c, kind, None if column in categorical else method)
        with np.errstate(divide="ignore", invalid="ignore"):  # constant columns (digits' blank corners)
            result = test(r, c, kind, None)
        threshold = float(result.actual_threshold)
        drift[column] = ColumnDrift(
            float(result.drift_score), bool(result.drifted), test.display_name, threshold
        )
    return drift


def _report(ref: pd.DataFrame, cur: pd.DataFrame, categorical: set[str], metrics: list[Any]) -> Any:
    from evidently import DataDefinition, Dataset, Report

    numerical = [c for c in ref.columns if c not in categorical]
    definition = DataDefinition(
        numerical_columns=numerical, categorical_columns=[c for c in ref.columns if c in categorical]
    )
    datasets = (Dataset.from_pandas(df, data_definition=definition) for df in (cur, ref))
    return Report(metrics, include_tests=True).run(*datasets)


def _report_drift(
    ref: pd.DataFrame, cur: pd.DataFrame, categorical: set[str], method: str | None
) -> dict[str, ColumnDrift]:
    from evidently.metrics import ValueDrift

    result = _report(
        ref,
        cur,
        categorical,
        [ValueDrift(column=c, method=None if c in categorical else method) for c in ref.columns],
    ).dict()
    failed = {t["metric_config"]["metric_id"] for t in result["tests"] if t["status"] == "FAIL"}
    return {
        m["config"]["column"]: ColumnDrift(
            float(m["value"]), m["id"] in failed, m["config"]["method"], float(m["config"]["threshold"])
        )
        for m in result["metrics"]
    }


def load_engine() -> float:
    """Import the Evidently modules `compute_drift` uses; returns the seconds it took.

    The first import costs 3-7 s of CPU under the GIL: paid at start-up, before the server
    is ready, rather than in the middle of serving at the first evaluation."""
    start = time.perf_counter()
    import evidently.legacy.calculations.stattests
    import evidently.metrics.embeddings  # noqa: F401

    return time.perf_counter() - start


def compute_drift(
    reference: ReferenceSample,
    current: Window,
    *,
    drift_share: float = DRIFT_SHARE,
    method: str | None = None,
    embedding_method: EmbeddingMethod = DEFAULT_EMBEDDING_METHOD,
    engine: Engine = "stattest",
    max_features: int = MAX_FEATURES,
) -> DriftReport:
    """Drift of `current` against `reference`.

    `method` forces one Evidently test on numerical columns (e.g. "wasserstein"; categorical ones keep
    Evidently's choice), `drift_share` is the dataset rule's share and `max_features` caps the input
    values tested (evenly spaced). The embedding verdict uses `embedding_method`."""
    start = time.perf_counter()
    ref, cur, features, predictions = _frames(reference, current, max_features)
    categorical = {c for c in ref.columns if _is_categorical(reference, c)}
    drift = (_stattest_drift if engine == "stattest" else _report_drift)(ref, cur, categorical, method)
    by_feature = {c: drift[c] for c in features}
    share = sum(d.drifted for d in by_feature.values()) / len(by_feature) if by_feature else 0.0
    by_prediction = {c: drift[c] for c in predictions}
    prediction: ColumnDrift | None = by_prediction.get(PREDICTION)
    if reference.kind is ModelKind.EMBEDDING and by_prediction:
        drifted = sum(d.drifted for d in by_prediction.values()) / len(by_prediction)
        label = f"share of drifted embedding statistics ({', '.join(by_prediction)})"
        prediction = ColumnDrift(drifted, drifted >= drift_share, label, drift_share)
    embedding = None
    if (
        reference.kind is ModelKind.EMBEDDING
        and reference.outputs is not None
        and current.outputs is not None
    ):
        embedding = ColumnDrift(*embedding_drift(reference.outputs, current.outputs, embedding_method))
    return DriftReport(
        model=reference.name,
        kind=reference.kind.value,
        window_size=len(current),
        reference_size=len(reference),
        features=by_feature,
        share_drifted=share,
        dataset_drift=bool(by_feature) and share >= drift_share,
        prediction_drift=prediction,
        embedding_drift=embedding,
        seconds=time.perf_counter() - start,
        drift_share=drift_share,
        predictions=by_prediction,
    )


def render_html(
    reference: ReferenceSample, current: Window, report: DriftReport | None = None, **options: Any
) -> str:
    """Evidently's HTML (DataDriftPreset over the features, ValueDrift per prediction column) under a
    summary of `report` (computed if not given; `options` go to `compute_drift`). No embedding plot."""
    from evidently.metrics import ValueDrift
    from evidently.presets import DataDriftPreset

    report = report or compute_drift(reference, current, **options)
    ref, cur, features, predictions = _frames(reference, current, options.get("max_features", MAX_FEATURES))
    method, share = options.get("method"), options.get("drift_share", DRIFT_SHARE)
    metrics: list[Any] = (
        [DataDriftPreset(columns=list(features), drift_share=share, num_method=method)] if features else []
    )
    categorical = {c for c in ref.columns if _is_categorical(reference, c)}
    metrics += [ValueDrift(column=c, method=None if c in categorical else method) for c in predictions]
    html = (
        str(_report(ref, cur, categorical, metrics).get_html_str(as_iframe=False))
        if metrics
        else "<html><body></body></html>"
    )
    body = html.find(">", html.find("<body")) + 1 if "<body" in html else 0
    return html[:body] + summary_html(report) + html[body:]
