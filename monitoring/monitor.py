"""The drift monitor: sampled windows per model, evaluated in the background, published as gauges.

The request path only calls `record` (a sampled copy into a bounded buffer).
A daemon thread evaluates each model's window against the reference sample
stored with its live version, every `interval_s` seconds once `min_samples`
rows are there, publishes the gauges, keeps the latest report for the HTTP
route, and hands a `WindowState` to whoever listens (the re-optimisation
trigger). An evaluation that raises is logged and counted
(`leanserve_drift_evaluation_failures_total`); serving goes on.

A window with fewer than `min_distinct` distinct inputs is not judged
(`monitoring.policy.distinct_rule`): no drift test runs, the report and the
`WindowState` say why, the drift gauges keep the last judged window's values,
and `leanserve_drift_window_distinct_inputs` shows the count.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from monitoring import metrics
from monitoring.config import MonitorConfig
from monitoring.drift import (
    DriftReport,
    ReferenceSample,
    Window,
    compute_drift,
    load_engine,
    render_html,
)
from monitoring.policy import WindowState, distinct_rule
from monitoring.window import SampleWindow
from optimise.artefact import ModelKind

logger = logging.getLogger(__name__)
WindowListener = Callable[[str, WindowState, DriftReport], object]


@dataclass
class _Watched:
    kind: ModelKind
    reference_file: Path
    window: SampleWindow
    reference: ReferenceSample | None = None
    latest: DriftReport | None = None
    evaluated_at_seen: int = 0
    not_judged: str | None = None  # why the latest window was not judged (logged when it changes)
    latencies: collections.deque[float] = dataclasses.field(
        default_factory=lambda: collections.deque(maxlen=2000)
    )


class DriftMonitor:
    def __init__(self, config: MonitorConfig) -> None:
        self.config = config
        self._models: dict[str, _Watched] = {}
        self._listeners: list[WindowListener] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def watch(self, model: str, reference_file: Path, kind: ModelKind) -> None:
        """(Re)point a model at the reference of its live version; the window starts empty."""
        window = SampleWindow(self.config.window_size, self.config.sample_rate, seed=len(self._models))
        self._models[model] = _Watched(kind, reference_file, window)
        metrics.DRIFT_EVALUATION_FAILURES.labels(model)  # exported at 0 before any failure (for increase())

    def subscribe(self, listener: WindowListener) -> None:
        self._listeners.append(listener)

    def record(
        self,
        model: str,
        inputs: np.ndarray | None,
        outputs: np.ndarray,
        features: dict[str, Any] | None = None,
    ) -> None:
        """Sample a request's rows; `inputs` of a text model (its texts) are digested, not kept."""
        watched = self._models.get(model)
        if watched is not None:
            kept = inputs if watched.kind is ModelKind.TENSOR else None
            watched.window.add(kept, outputs, features, keys=inputs)

    def samples(self, model: str) -> int:
        watched = self._models.get(model)
        return len(watched.window) if watched else 0

    def record_latency(self, model: str, seconds: float) -> None:
        watched = self._models.get(model)
        if watched is not None:
            watched.latencies.append(seconds)

    def snapshot(self, model: str) -> Window | None:
        """The rows now in the model's window, oldest first (None when there are none)."""
        watched = self._models.get(model)
        if watched is None or not len(watched.window):
            return None
        return watched.window.snapshot()

    def recent_inputs(self, model: str) -> np.ndarray | None:
        """The sampled inputs now in the window (tensor models), e.g. to recalibrate on."""
        window = self.snapshot(model)
        return window.inputs if window is not None else None

    def latest(self, model: str) -> DriftReport | None:
        watched = self._models.get(model)
        return watched.latest if watched else None

    def html(self, model: str) -> str | None:
        watched = self._models.get(model)
        if watched is None or watched.latest is None or watched.reference is None:
            return None
        return render_html(watched.reference, watched.window.snapshot(), watched.latest)

    def evaluate(self, model: str) -> DriftReport | None:
        """Judge the model's window now (if it holds enough rows) and publish the result.

        A window of too few distinct inputs gets a report without verdicts (`not_judged`)."""
        watched = self._models[model]
        if len(watched.window) < self.config.min_samples:
            return None
        if watched.reference is None:
            watched.reference = ReferenceSample.from_npz(watched.reference_file, name=model)
        # What was seen when the snapshot was taken: rows recorded while this evaluation runs must
        # make the next round evaluate again (reading `seen` afterwards lost them until new traffic).
        seen = watched.window.seen
        window = watched.window.snapshot()
        distinct = window.distinct_rows()
        reason = distinct_rule(distinct, min(self.config.min_distinct, self.config.window_size))
        if reason is None:
            report = compute_drift(watched.reference, window)
        else:
            report = DriftReport.withheld(watched.reference, window, reason, distinct)
        self._log_judgement(model, watched, reason)
        watched.latest, watched.evaluated_at_seen = report, seen
        _publish(model, report)
        latencies = list(watched.latencies)
        watched.latencies.clear()
        state = WindowState(
            latency_p95_ms=float(np.percentile(latencies, 95) * 1e3) if latencies else None,
            share_drifted=report.share_drifted,
            embedding_drift=bool(report.embedding_drift and report.embedding_drift.drifted),
            prediction_drift=bool(report.prediction_drift and report.prediction_drift.drifted),
            distinct_inputs=distinct,
            not_judged=reason,
        )
        for listener in self._listeners:
            listener(model, state, report)
        return report

    @staticmethod
    def _log_judgement(model: str, watched: _Watched, reason: str | None) -> None:
        """Log when a model's windows stop or start being judged (not at every evaluation)."""
        if reason is not None and watched.not_judged is None:
            logger.warning("drift of %s not judged: %s (one client replaying requests?)", model, reason)
        elif reason is None and watched.not_judged is not None:
            logger.info("drift of %s judged again (was: %s)", model, watched.not_judged)
        watched.not_judged = reason

    def evaluate_all(self) -> None:
        for model, watched in list(self._models.items()):
            if watched.window.seen == watched.evaluated_at_seen:
                continue  # no new traffic since the last report
            try:
                self.evaluate(model)
            except Exception:
                metrics.DRIFT_EVALUATION_FAILURES.labels(model).inc()
                logger.exception("drift evaluation of %s failed; serving is unaffected", model)

    def start(self) -> None:
        """Load the drift engine (blocking: the caller is still starting up), then evaluate in the background."""
        if self._thread is None:
            logger.info("drift engine loaded in %.1f s", load_engine())
            self._thread = threading.Thread(target=self._run, name="leanserve-drift", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self.config.interval_s):
            self.evaluate_all()


def _publish(model: str, report: DriftReport) -> None:
    """Window gauges always; the drift gauges only for a judged window (they keep the last verdict)."""
    metrics.DRIFT_WINDOW_SAMPLES.labels(model).set(report.window_size)
    if report.distinct_inputs is not None:
        metrics.DRIFT_WINDOW_DISTINCT.labels(model).set(report.distinct_inputs)
    metrics.DRIFT_EVALUATION_SECONDS.labels(model).observe(report.seconds)
    if not report.judged:
        return
    metrics.SHARE_DRIFTED.labels(model).set(report.share_drifted)
    metrics.DATASET_DRIFT.labels(model).set(1.0 if report.dataset_drift else 0.0)
    if report.prediction_drift is not None:
        metrics.PREDICTION_DRIFT.labels(model).set(report.prediction_drift.score)
    if report.embedding_drift is not None:
        metrics.EMBEDDING_DRIFT.labels(model).set(report.embedding_drift.score)
    if len(report.features) <= 64:  # per-feature series only for models with few features
        for name, drift in report.features.items():
            metrics.FEATURE_DRIFT.labels(model, name).set(drift.score)
