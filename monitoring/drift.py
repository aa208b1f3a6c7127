"""Data and prediction drift of a window of served traffic against the build's reference sample.

Tensor models (digits): every flattened input value is a feature (`px_0..px_63`), tested one by one;
the prediction is the argmax of the outputs, a categorical column (or the value, for one output).
Text embedding models (minilm): the inputs are texts, so the features are whatever scalars the service
measured (`n_tokens`, `text_chars`); the prediction statistics are the embeddings' norm and their
coordinates on the reference's first principal axes, and the embeddings as a whole are tested by
Evidently's embedding drift method (see `monitoring.drift_embeddings`).

Per-column tests are Evidently's: its default test per column type and sample size (K-S or chi-square
p-values up to 1,000 reference rows, normalised Wasserstein or Jensen-Shannon above), its thresholds and
its dataset rule (drift when the share of drifted features >= `DATASET_DRIFT_THRESHOLD`). The default
engine calls those test objects directly; `engine="report"` runs the same tests through a `Report` of
`ValueDrift` metrics, which draws a plotly figure per column while computing (about 0.08 s a column,
5 s for digits' 64, holding the GIL) - kept for cross-checks and used by `render_html`. Evidently is
imported lazily: the service imports `monitoring.window` and this module's types without paying
Evidently's import time (seconds).

Bad input is an error, never a quiet "no drift": an empty side, a missing (NaN) or infinite value (named
by column and row), inputs or outputs of another size, no column in common, or a test that returns no
score (NaN) raise ValueError. Columns only one side has (a feature the reference lacks, a window without
outputs) are left out of the verdict and listed in the report's `skipped`. A window the monitor does not
judge (too few distinct inputs: `monitoring.policy.distinct_rule`) gets a report without verdicts whose
`not_judged` says why.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from monitoring.drift_embeddings import (
    DEFAULT_EMBEDDING_METHOD,
    EmbeddingMethod,
    embedding_drift,
    embedding_statistics,
    summary_html,
)
from monitoring.sample import (
    FEATURE_PREFIX,
    OUTPUT_PREFIX,
    ReferenceSample,
    Window,
    check_finite,
    read_npz,
)
from optimise.artefact import ModelKind

# The window types live in monitoring.sample; importing them from here keeps working.
__all__ = [
    "DATASET_DRIFT_THRESHOLD",
    "FEATURE_PREFIX",
    "OUTPUT_PREFIX",
    "ColumnDrift",
    "DriftReport",
    "ReferenceSample",
    "Window",
    "compute_drift",
    "load_engine",
    "read_npz",
    "render_html",
]

PREDICTION = "prediction"
# Evidently's dataset rule (its `drift_share`): the dataset drifted when at least this share of the
# input features did. The closed loop's policy has its own threshold (PolicyConfig.input_drift_threshold).
DATASET_DRIFT_THRESHOLD = 0.5
MAX_FEATURES = 128  # wider inputs are tested on evenly spaced values
Engine = Literal["stattest", "report"]


@dataclass(frozen=True)
class ColumnDrift:
    score: float  # a p-value for K-S / chi-square / Z tests (drift when below), else a distance or AUC
    drifted: bool
    method: str
    threshold: float | None


# Attributes whose JSON name (HTTP route, `drift --json`) predates the attribute's name.
_JSON_NAMES = {"dataset_drift_threshold": "drift_share"}


@dataclass(frozen=True)
class DriftReport:
    """One window judged against the reference.

    `not_judged` says why the window got no verdict at all (then every verdict is empty and `judged` is
    False: e.g. too few distinct inputs); `skipped` names the columns or groups ("inputs", "outputs")
    that only one side has, left out of the verdict. `distinct_inputs` counts the window's distinct
    inputs (see `monitoring.sample`). `share_drifted` is the measured share of drifted input features;
    `dataset_drift_threshold` the dataset rule's threshold on it (`drift_share` in the JSON)."""

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
    dataset_drift_threshold: float = DATASET_DRIFT_THRESHOLD
    predictions: dict[str, ColumnDrift] = field(default_factory=dict)  # the prediction's columns
    distinct_inputs: int | None = None
    not_judged: str | None = None
    skipped: dict[str, str] = field(default_factory=dict)

    @classmethod
    def withheld(cls, reference: ReferenceSample, current: Window, reason: str, distinct: int) -> DriftReport:
        """A report without a verdict, saying why (nothing is computed)."""
        return cls(
            model=reference.name,
            kind=reference.kind.value,
            window_size=len(current),
            reference_size=len(reference),
            features={},
            share_drifted=0.0,
            dataset_drift=False,
            prediction_drift=None,
            embedding_drift=None,
            seconds=0.0,
            distinct_inputs=distinct,
            not_judged=reason,
        )

    @property
    def judged(self) -> bool:
        return self.not_judged is None

    @property
    def drifted(self) -> bool:
        """Any drift verdict; False for a window that was not judged (see `judged`)."""
        verdicts = (self.prediction_drift, self.embedding_drift)
        return self.dataset_drift or any(v is not None and v.drifted for v in verdicts)

    @property
    def drifted_features(self) -> list[str]:
        return [name for name, drift in self.features.items() if drift.drifted]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (the public field names: `_JSON_NAMES`); `drifted` is null for a window that was not
        judged."""
        fields = {_JSON_NAMES.get(name, name): value for name, value in asdict(self).items()}
        return {**fields, "judged": self.judged, "drifted": self.drifted if self.judged else None}


def _feature_columns(
    sample: Window, max_features: int, names: tuple[str, ...] | None = None
) -> dict[str, np.ndarray]:
    """Input values (`names[i]`, else `px_<i>`; at most `max_features`, evenly spaced) and scalar features."""
    columns: dict[str, np.ndarray] = {}
    if sample.inputs is not None:
        flat = sample.inputs.reshape(len(sample.inputs), -1)
        width = flat.shape[1]
        keep = np.unique(np.linspace(0, width - 1, min(width, max_features)).round().astype(int))
        labels = (
            names
            if names is not None and len(names) == width
            else [f"{FEATURE_PREFIX}{i}" for i in range(width)]
        )
        columns = {labels[i]: flat[:, i] for i in keep}
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


def _one_sided(reference: Window, current: Window) -> dict[str, str]:
    """Groups and features that only one side has: left out of the verdict, with the reason."""
    skipped: dict[str, str] = {}
    for group in ("inputs", "outputs"):
        ref, cur = getattr(reference, group) is not None, getattr(current, group) is not None
        if ref != cur:
            skipped[group] = "not in the window" if ref else "not in the reference"
    skipped |= {k: "not in the window" for k in reference.features if k not in current.features}
    return skipped | {k: "not in the reference" for k in current.features if k not in reference.features}


def _check_shapes(reference: Window, current: Window) -> None:
    for group in ("inputs", "outputs"):
        arrays = [getattr(s, group) for s in (reference, current)]
        widths = {math.prod(a.shape[1:]) for a in arrays if a is not None}
        if len(widths) > 1:
            raise ValueError(f"the window's and the reference's {group} differ in size: {sorted(widths)}")


def _frames(
    reference: ReferenceSample, current: Window, max_features: int
) -> tuple[pd.DataFrame, pd.DataFrame, list[str], list[str], dict[str, str]]:
    """Reference and window frames with the columns both have, the feature and prediction column names,
    and the skipped groups. Raises ValueError for an empty window, missing or infinite values, sizes
    that differ, or nothing in common."""
    if len(current) == 0 or len(reference) == 0:
        raise ValueError(f"the {'window' if len(current) == 0 else 'reference'} is empty")
    _check_shapes(reference, current)
    check_finite(reference, "the reference")
    check_finite(current, "the window")
    skipped = _one_sided(reference, current)
    names = _input_names(reference)
    ref_features, cur_features = (_feature_columns(s, max_features, names) for s in (reference, current))
    ref_pred, cur_pred = (_prediction_columns(reference, s) for s in (reference, current))
    features = [c for c in ref_features if c in cur_features]
    predictions = [c for c in ref_pred if c in cur_pred]
    if not features and not predictions:
        raise ValueError(f"nothing to compare: the window and the reference share no column ({skipped})")
    ref = pd.DataFrame({**{c: ref_features[c] for c in features}, **{c: ref_pred[c] for c in predictions}})
    cur = pd.DataFrame({**{c: cur_features[c] for c in features}, **{c: cur_pred[c] for c in predictions}})
    return ref, cur, features, predictions, skipped


def _input_names(reference: ReferenceSample) -> tuple[str, ...] | None:
    """The reference file's own input column names; one that is also a feature's or the prediction's
    name gets " (input)" after it, so that no column hides another."""
    if reference.input_names is None:
        return None
    taken = {PREDICTION, *reference.features}
    return tuple(f"{name} (input)" if name in taken else name for name in reference.input_names)


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
    dataset_drift_threshold: float = DATASET_DRIFT_THRESHOLD,
    method: str | None = None,
    embedding_method: EmbeddingMethod = DEFAULT_EMBEDDING_METHOD,
    engine: Engine = "stattest",
    max_features: int = MAX_FEATURES,
) -> DriftReport:
    """Drift of `current` against `reference`.

    `method` forces one Evidently test on numerical columns (e.g. "wasserstein"; categorical ones keep
    Evidently's choice), `dataset_drift_threshold` is the dataset rule's share of drifted features and
    `max_features` caps the input values tested (evenly spaced). The embedding verdict uses
    `embedding_method`. Columns only one side has are left out and listed in `skipped`. Raises ValueError for an empty side, a missing (NaN) or
    infinite value, sizes that differ, no column in common, or a test that gives no score (NaN), so no
    column is ever reported as "not drifted" without a score."""
    start = time.perf_counter()
    ref, cur, features, predictions, skipped = _frames(reference, current, max_features)
    categorical = {c for c in ref.columns if _is_categorical(reference, c)}
    drift = (_stattest_drift if engine == "stattest" else _report_drift)(ref, cur, categorical, method)
    _check_scores(drift)
    by_feature = {c: drift[c] for c in features}
    share = sum(d.drifted for d in by_feature.values()) / len(by_feature) if by_feature else 0.0
    by_prediction = {c: drift[c] for c in predictions}
    prediction: ColumnDrift | None = by_prediction.get(PREDICTION)
    if reference.kind is ModelKind.EMBEDDING and by_prediction:
        drifted = sum(d.drifted for d in by_prediction.values()) / len(by_prediction)
        label = f"share of drifted embedding statistics ({', '.join(by_prediction)})"
        prediction = ColumnDrift(drifted, drifted >= dataset_drift_threshold, label, dataset_drift_threshold)
    embedding = None
    if (
        reference.kind is ModelKind.EMBEDDING
        and reference.outputs is not None
        and current.outputs is not None
    ):
        embedding = ColumnDrift(*embedding_drift(reference.outputs, current.outputs, embedding_method))
        _check_scores({"embeddings": embedding})
    return DriftReport(
        model=reference.name,
        kind=reference.kind.value,
        window_size=len(current),
        reference_size=len(reference),
        features=by_feature,
        share_drifted=share,
        dataset_drift=bool(by_feature) and share >= dataset_drift_threshold,
        prediction_drift=prediction,
        embedding_drift=embedding,
        seconds=time.perf_counter() - start,
        dataset_drift_threshold=dataset_drift_threshold,
        predictions=by_prediction,
        distinct_inputs=current.distinct_rows(),
        skipped=skipped,
    )


def _check_scores(drift: dict[str, ColumnDrift]) -> None:
    """A test without a score (NaN: e.g. no values left to compare) is an error, never "not drifted"."""
    unscored = [name for name, d in drift.items() if math.isnan(d.score)]
    if unscored:
        raise ValueError(f"no drift score (NaN) for column(s) {', '.join(unscored)}: too few values to test")


def render_html(
    reference: ReferenceSample, current: Window, report: DriftReport | None = None, **options: Any
) -> str:
    """Evidently's HTML (DataDriftPreset over the features, ValueDrift per prediction column) under a
    summary of `report` (computed if not given; `options` go to `compute_drift`). No embedding plot."""
    from evidently.metrics import ValueDrift
    from evidently.presets import DataDriftPreset

    report = report or compute_drift(reference, current, **options)
    if not report.judged:
        return f"<html><body>{summary_html(report)}</body></html>"
    ref, cur, features, predictions, _ = _frames(
        reference, current, options.get("max_features", MAX_FEATURES)
    )
    method = options.get("method")
    threshold = options.get("dataset_drift_threshold", DATASET_DRIFT_THRESHOLD)
    metrics: list[Any] = (
        [DataDriftPreset(columns=list(features), drift_share=threshold, num_method=method)]
        if features
        else []
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
