"""Prometheus metrics of the service, defined once at module level.

Names carry the `leanserve_` prefix and their unit; counters end in `_total`;
labels stay low-cardinality (model names are the configured ones, unknown
names are folded into one label value). Under BentoML several worker processes
write to a multiprocess directory: counters and histograms add up across
workers, gauges declare how they combine.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import astuple, dataclass
from typing import Any, TypeVar, cast

from prometheus_client import Counter, Gauge, Histogram

UNKNOWN_MODEL = "_unknown"
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.025,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)

REQUEST_SECONDS = Histogram(
    "leanserve_request_duration_seconds",
    "Time from request received to response ready, per model, version and protocol.",
    ["model", "version", "protocol"],
    buckets=LATENCY_BUCKETS,
)
INFERENCE_SECONDS = Histogram(
    "leanserve_inference_duration_seconds",
    "Time spent in ONNX Runtime (and tokenisation) for one call.",
    ["model", "version"],
    buckets=LATENCY_BUCKETS,
)
BATCH_SIZE = Histogram("leanserve_batch_size", "Rows per inference call.", ["model"], buckets=BATCH_BUCKETS)
MERGED_ROWS = Histogram(
    "leanserve_runtime_batch_size",
    "Rows per call of the runtime after concurrent requests were merged (batch-invariant variants).",
    ["model"],
    buckets=BATCH_BUCKETS,
)
REQUESTS = Counter(
    "leanserve_requests_total", "Requests by outcome (HTTP status code).", ["model", "protocol", "code"]
)
IN_FLIGHT = Gauge(
    "leanserve_requests_in_flight", "Requests being handled now.", ["protocol"], multiprocess_mode="livesum"
)
MODEL_INFO = Gauge(
    "leanserve_model_info",
    "1 for the live version of each model, 0 for versions that were live before.",
    ["model", "version", "variant", "precision", "profile"],
    multiprocess_mode="liveall",
)
MODEL_READY = Gauge(
    "leanserve_model_ready",
    "1 when the model has a live version that passed its checks, 0 while it loads or after it failed to.",
    ["model"],
    multiprocess_mode="livemin",  # ready only when every worker serves it
)
LAST_SWAP = Gauge(
    "leanserve_last_swap_timestamp_seconds",
    "Unix time the live version last changed.",
    ["model"],
    multiprocess_mode="max",
)
SHARE_DRIFTED = Gauge(
    "leanserve_drift_share_drifted_features",
    "Share of input features drifted in the last window.",
    ["model"],
    multiprocess_mode="max",
)
DATASET_DRIFT = Gauge(
    "leanserve_dataset_drift",
    "1 when the last window's share of drifted features crossed the threshold.",
    ["model"],
    multiprocess_mode="max",
)
FEATURE_DRIFT = Gauge(
    "leanserve_feature_drift_score",
    "Drift score of one input feature (models with few features).",
    ["model", "feature"],
    multiprocess_mode="max",
)
PREDICTION_DRIFT = Gauge(
    "leanserve_prediction_drift_score",
    "Drift score of the model's outputs in the last window.",
    ["model"],
    multiprocess_mode="max",
)
EMBEDDING_DRIFT = Gauge(
    "leanserve_embedding_drift_score",
    "Embedding drift score of the last window (text models).",
    ["model"],
    multiprocess_mode="max",
)
DRIFT_WINDOW_SAMPLES = Gauge(
    "leanserve_drift_window_samples",
    "Samples in the drift window when it was last evaluated.",
    ["model"],
    multiprocess_mode="max",
)
DRIFT_WINDOW_DISTINCT = Gauge(
    "leanserve_drift_window_distinct_inputs",
    "Distinct inputs among the drift window's samples when it was last evaluated (too few: not judged).",
    ["model"],
    multiprocess_mode="max",
)
DRIFT_EVALUATION_SECONDS = Histogram(
    "leanserve_drift_evaluation_duration_seconds", "Time to evaluate one drift window.", ["model"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)  # fmt: skip
DRIFT_EVALUATION_FAILURES = Counter(
    "leanserve_drift_evaluation_failures_total",
    "Drift evaluations that raised (the window was not judged; serving goes on).",
    ["model"],
)
REOPTIMISATIONS = Counter(
    "leanserve_reoptimisations_total",
    "Re-optimisation runs by trigger reason and outcome.",
    ["model", "reason", "outcome"],
)


@dataclass(frozen=True)
class VersionLabels:
    """What `leanserve_model_info` says about one version of a model."""

    version: str
    variant: str
    precision: str
    profile: str


@dataclass
class RequestRecord:
    """Filled in by the adapter while it handles a request; read when the request ends."""

    model: str
    version: str = ""
    code: int = 200


_Metric = TypeVar("_Metric", Counter, Gauge, Histogram)
_children: dict[tuple[object, ...], Any] = {}


def _child(metric: _Metric, *labels: str) -> _Metric:
    """`metric.labels(*labels)`, remembered: the request path asks for the same few children on every
    request, and prometheus-client validates and locks on each `labels` call. Bounded, as the label
    values are (configured model names, versions, protocols, status codes)."""
    key = (id(metric), *labels)
    child = _children.get(key)
    if child is None:
        child = _children[key] = metric.labels(*labels)
    return cast(_Metric, child)


def record_request(record: RequestRecord, protocol: str, seconds: float) -> None:
    _child(REQUEST_SECONDS, record.model, record.version, protocol).observe(seconds)
    _child(REQUESTS, record.model, protocol, str(record.code)).inc()


@contextmanager
def track_request(model: str, protocol: str, started: float | None = None) -> Iterator[RequestRecord]:
    """Time one request and count its outcome; an exception's `http_status` becomes the code.

    `started` is when the server received the request (`time.perf_counter()`), if that was
    earlier than entering this block; the duration runs from it. Codes are HTTP status codes
    for every protocol (gRPC errors carry their HTTP equivalent), so one query covers all protocols.
    """
    record = RequestRecord(model)
    _child(IN_FLIGHT, protocol).inc()
    start = time.perf_counter() if started is None else started
    try:
        yield record
    except Exception as exc:
        record.code = int(getattr(exc, "http_status", 500))
        raise
    finally:
        _child(IN_FLIGHT, protocol).dec()
        record_request(record, protocol, time.perf_counter() - start)


def observe_inference(model: str, version: str, rows: int, seconds: float) -> None:
    _child(INFERENCE_SECONDS, model, version).observe(seconds)
    _child(BATCH_SIZE, model).observe(rows)


def batch_observer(model: str) -> Callable[[int], None]:
    """Records the rows of each merged runtime call of `model` (`leanserve_runtime_batch_size`)."""
    return _child(MERGED_ROWS, model).observe


def set_model_ready(model: str, ready: bool) -> None:
    MODEL_READY.labels(model).set(1 if ready else 0)


_marked_live: dict[str, VersionLabels] = {}
"""The version each model's `leanserve_model_info` marks live, whichever data plane marked it."""


def set_live_version(model: str, live: VersionLabels, replaced: VersionLabels | None = None) -> None:
    """Mark `live` as the serving version (1), and the one it replaced and the one marked live before
    (a data plane loaded again in the same process starts with no `replaced`) as past (0): one live
    version per model."""
    for past in (replaced, _marked_live.get(model)):
        if past is not None and past != live:
            MODEL_INFO.labels(model, *astuple(past)).set(0)
    MODEL_INFO.labels(model, *astuple(live)).set(1)
    _marked_live[model] = live
    LAST_SWAP.labels(model).set(time.time())


def count_refused(model: str, protocol: str, code: int) -> None:
    """A request refused before it reached a model (body too large, wrong type, server busy)."""
    _child(REQUESTS, model, protocol, str(code)).inc()
