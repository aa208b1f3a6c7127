"""Drift of embedding outputs: Evidently's embedding drift methods called directly, and summary statistics.

Evidently's `EmbeddingsDrift` metric spends nearly all its time (7-43 s) drawing a t-SNE plot, and
`DataDriftPreset(embeddings=...)` ignores embeddings, so the method objects are called on their own
(0.1-1 s for 1,000 x 384 against 500 x 384).

The default method is the model-based one (`ModelDriftMethod`): a classifier learns to tell reference
from current rows and its ROC AUC on held-out rows is the score. 0.5 means indistinguishable whatever the
embedding's scale or dimension, it reacts to a shift confined to a few dimensions, and, without
bootstrap, it does not touch numpy's global random state. Its fixed 0.55 threshold is noisy for small
windows, so the threshold here is the AUC's null spread (Mann-Whitney) times 3 above 0.5, never below
0.55: about 0.57 for 1,000 reference rows against 500. The bootstrapped distance method ("distance")
flags at its null distribution's 95th percentile, i.e. about one window in 20 without any drift, and
reseeds numpy's global generator (saved and restored here).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from monitoring.drift import DriftReport

EmbeddingMethod = Literal["model", "distance"]
DEFAULT_EMBEDDING_METHOD: EmbeddingMethod = "model"
MIN_AUC_THRESHOLD = 0.55  # Evidently's own threshold for the model method
NULL_SPREADS = 3.0
STAT_COMPONENTS = 3  # principal components of the reference tracked as "prediction" statistics


def auc_threshold(n_reference: int, n_current: int) -> float:
    """ROC AUC above which the model method flags drift: 3 null standard deviations over 0.5."""
    # Evidently's method scores on a random half of the pooled rows.
    a, b = max(n_reference // 2, 1), max(n_current // 2, 1)
    spread = math.sqrt((a + b + 1) / (12 * a * b))
    return max(MIN_AUC_THRESHOLD, 0.5 + NULL_SPREADS * spread)


def embedding_drift(
    reference: np.ndarray, current: np.ndarray, method: EmbeddingMethod = DEFAULT_EMBEDDING_METHOD
) -> tuple[float, bool, str, float | None]:
    """(score, drifted, method description, threshold or None when the method derives its own)."""
    from evidently.metrics.embeddings import DistanceDriftMethod, ModelDriftMethod

    columns = [f"e{i}" for i in range(reference.shape[1])]
    # The methods write a "target" column into their arguments: give them throwaway frames.
    ref = pd.DataFrame(np.asarray(reference, dtype=np.float64), columns=columns)
    cur = pd.DataFrame(np.asarray(current, dtype=np.float64), columns=columns)
    threshold: float | None
    if method == "model":
        threshold = auc_threshold(len(ref), len(cur))
        drift_method: ModelDriftMethod | DistanceDriftMethod = ModelDriftMethod(threshold=threshold)
        name = "model-based (ROC AUC of a reference-vs-current classifier)"
    elif method == "distance":
        threshold = None
        drift_method = DistanceDriftMethod(dist="euclidean", bootstrap=True, quantile_probability=0.95)
        name = "euclidean distance of means, bootstrapped (95th percentile)"
    else:
        raise ValueError(f"unknown embedding drift method {method!r}; expected 'model' or 'distance'")
    state = np.random.get_state()
    try:
        score, drifted, _ = drift_method(cur, ref)
    finally:
        np.random.set_state(state)
    return float(score), bool(drifted), name, threshold


def principal_axes(reference: np.ndarray, count: int = STAT_COMPONENTS) -> tuple[np.ndarray, np.ndarray]:
    """The reference's mean and its first `count` principal directions (rows)."""
    data = np.asarray(reference, dtype=np.float64)
    mean = data.mean(axis=0)
    _, _, directions = np.linalg.svd(data - mean, full_matrices=False)
    return mean, directions[:count]


def embedding_statistics(embeddings: np.ndarray, mean: np.ndarray, axes: np.ndarray) -> dict[str, np.ndarray]:
    """Per-row scalars of an embedding batch: its norm and its coordinates on the reference's axes."""
    data = np.asarray(embeddings, dtype=np.float64)
    columns = {"emb_norm": np.linalg.norm(data, axis=1)}
    projected = (data - mean) @ axes.T
    columns.update({f"emb_pc_{i}": projected[:, i] for i in range(projected.shape[1])})
    return columns


def text_features(
    texts: Sequence[str] | None = None, token_counts: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """Scalar features of texts: `text_chars` (length) and `n_tokens` (tokens, special ones included)."""
    features: dict[str, np.ndarray] = {}
    if texts is not None:
        features["text_chars"] = np.array([len(t) for t in texts], dtype=np.float64)
    if token_counts is not None:
        features["n_tokens"] = np.asarray(token_counts, dtype=np.float64).reshape(-1)
    return features


def summary_html(report: DriftReport) -> str:
    """A small HTML section with the dataset, prediction and embedding verdicts (no plots), or the reason
    the window was not judged, and the columns left out."""
    rows = [("dataset drift: share of drifted features", report.share_drifted, report.dataset_drift, False)]
    for label, drift in (
        ("prediction drift", report.prediction_drift),
        ("embedding drift", report.embedding_drift),
    ):
        if drift is not None:
            rows.append((f"{label}: {drift.method}", drift.score, drift.drifted, False))
    if len(report.predictions) > 1:
        rows += [(f"{name}: {d.method}", d.score, d.drifted, True) for name, d in report.predictions.items()]
    cells = "".join(
        f"<tr><td style='padding-left:{2 if indent else 0.3}em'>{escape(label)}</td><td>{score:.4g}</td>"
        f"<td style='color:{'#c0392b' if flag else '#27ae60'}'>{'DRIFT' if flag else 'ok'}</td></tr>"
        for label, score, flag, indent in rows
    )
    verdicts = (
        f"<table border='1' cellpadding='4' style='border-collapse:collapse'>{cells}</table>"
        if report.not_judged is None
        else f"<p><b>not judged</b>: {escape(report.not_judged)}</p>"
    )
    skipped = "".join(f"<li>{escape(k)}: {escape(why)}</li>" for k, why in report.skipped.items())
    distinct = "" if report.distinct_inputs is None else f" ({report.distinct_inputs} distinct inputs)"
    return (
        "<section id='leanserve-drift-summary' style='font-family:sans-serif;margin:1em'>"
        f"<h2>Drift summary: {escape(report.model)}</h2>"
        f"<p>window {report.window_size} rows{distinct}, reference {report.reference_size} rows, "
        f"computed in {report.seconds:.2f} s</p>{verdicts}"
        + (f"<p>left out:</p><ul>{skipped}</ul>" if skipped else "")
        + "</section>"
    )
