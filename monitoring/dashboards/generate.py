"""Writes the Grafana dashboards of leanserve next to this file (standard library only).

    python monitoring/dashboards/generate.py            # rewrite leanserve-*.json
    python monitoring/dashboards/generate.py --check    # exit 1 when a JSON file is out of date

The JSON files are what Grafana imports (file provisioning or a ConfigMap); this script is their
source: edit it, run it, commit both. tests/unit/monitoring/test_dashboards.py checks they agree and
that every queried metric is defined in monitoring/metrics.py.

Both dashboards take a `datasource` variable (any Prometheus data source) and a `model` variable
(label_values of leanserve_model_info). Gauges under BentoML's multiprocess mode carry a `pid` label
and every series an `instance`: queries aggregate by the labels they show.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SCHEMA_VERSION = 39
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
M = 'model=~"$model"'
RATE = "$__rate_interval"
SLO_SECONDS = 0.25  # LeanserveLatencySLOBreach in monitoring/alerts/leanserve.rules.yaml
DATASET_DRIFT_THRESHOLD = 0.5  # monitoring.drift.DATASET_DRIFT_THRESHOLD, the drift report's dataset rule
EMBEDDING_ALERT = 0.6  # LeanserveEmbeddingDrift

Json = dict[str, Any]


def target(
    expr: str, legend: str = "", ref: str = "A", *, instant: bool = False, fmt: str = "time_series"
) -> Json:
    return {
        "datasource": DATASOURCE,
        "editorMode": "code",
        "expr": expr,
        "format": fmt,
        "instant": instant,
        "legendFormat": legend or "__auto",
        "range": not instant,
        "refId": ref,
    }


def quantiles(metric: str, by: str, selector: str = M, legend: str = "") -> list[Json]:
    """p50, p95 and p99 of a histogram, by the given labels (plus le)."""
    return [
        target(
            f"histogram_quantile({q}, sum by ({by}, le) (rate({metric}_bucket{{{selector}}}[{RATE}])))",
            f"p{round(q * 100)} {legend}".strip(),
            ref,
        )
        for q, ref in ((0.5, "A"), (0.95, "B"), (0.99, "C"))
    ]


def thresholds(*steps: tuple[float | None, str]) -> Json:
    return {"mode": "absolute", "steps": [{"color": color, "value": value} for value, color in steps]}


def timeseries(
    title: str,
    targets: list[Json],
    unit: str,
    description: str,
    *,
    bars: bool = False,
    min_value: float | None = 0,
    max_value: float | None = None,
    threshold_line: float | None = None,
) -> Json:
    custom: Json = {
        "drawStyle": "bars" if bars else "line",
        "fillOpacity": 60 if bars else 10,
        "lineWidth": 1,
        "showPoints": "never",
        "spanNulls": False,
        "stacking": {"group": "A", "mode": "normal" if bars else "none"},
        "thresholdsStyle": {"mode": "dashed" if threshold_line is not None else "off"},
    }
    defaults: Json = {"custom": custom, "unit": unit}
    if min_value is not None:
        defaults["min"] = min_value
    if max_value is not None:
        defaults["max"] = max_value
    defaults["thresholds"] = (
        thresholds((None, "green"), (threshold_line, "red"))
        if threshold_line is not None
        else thresholds((None, "green"))
    )
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "targets": targets,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {
            "legend": {
                "displayMode": "table",
                "placement": "bottom",
                "showLegend": True,
                "calcs": ["lastNotNull", "max"],
            },
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
    }


def stat(title: str, targets: list[Json], unit: str, description: str, steps: Json) -> Json:
    return {
        "type": "stat",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "targets": targets,
        "fieldConfig": {
            "defaults": {"unit": unit, "thresholds": steps, "color": {"mode": "thresholds"}},
            "overrides": [],
        },
        "options": {
            "colorMode": "background",
            "graphMode": "none",
            "justifyMode": "auto",
            "orientation": "auto",
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "textMode": "value_and_name",
        },
    }


def state_timeline(title: str, targets: list[Json], description: str, mappings: list[Json]) -> Json:
    return {
        "type": "state-timeline",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "targets": targets,
        "fieldConfig": {
            "defaults": {
                "color": {"mode": "thresholds"},
                "thresholds": thresholds((None, "green")),
                "mappings": mappings,
                "custom": {"fillOpacity": 80, "lineWidth": 0},
            },
            "overrides": [],
        },
        "options": {
            "mergeValues": True,
            "showValue": "auto",
            "alignValue": "left",
            "rowHeight": 0.9,
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": False},
            "tooltip": {"mode": "single", "sort": "none"},
        },
    }


def value_map(*entries: tuple[str, str, str]) -> list[Json]:
    return [
        {
            "type": "value",
            "options": {
                value: {"text": text, "color": color, "index": i}
                for i, (value, text, color) in enumerate(entries)
            },
        }
    ]


def row(title: str) -> Json:
    return {"type": "row", "title": title, "collapsed": False, "panels": []}


class Layout:
    """Places panels left to right on Grafana's 24-column grid and numbers them."""

    def __init__(self) -> None:
        self.panels: list[Json] = []
        self.x = self.y = self.row_height = 0

    def row(self, title: str) -> None:
        self._newline()
        self._place(row(title), 24, 1)
        self._newline()

    def add(self, panel: Json, width: int, height: int = 8) -> None:
        if self.x + width > 24:
            self._newline()
        self._place(panel, width, height)

    def _place(self, panel: Json, width: int, height: int) -> None:
        panel = {
            "id": len(self.panels) + 1,
            "gridPos": {"h": height, "w": width, "x": self.x, "y": self.y},
            **panel,
        }
        self.panels.append(panel)
        self.x += width
        self.row_height = max(self.row_height, height)

    def _newline(self) -> None:
        if self.x:
            self.y += self.row_height
        self.x = self.row_height = 0


def templating(extra: list[Json] | None = None) -> Json:
    datasource = {
        "name": "datasource",
        "label": "Data source",
        "type": "datasource",
        "query": "prometheus",
        "current": {},
        "hide": 0,
        "includeAll": False,
        "multi": False,
        "options": [],
        "refresh": 1,
        "regex": "",
    }
    return {
        "list": [
            datasource,
            query_variable("model", "Model", "label_values(leanserve_model_info, model)"),
            *(extra or []),
        ]
    }


def query_variable(name: str, label: str, query: str) -> Json:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DATASOURCE,
        "definition": query,
        "query": {"qryType": 1, "query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
        "current": {},
        "hide": 0,
        "includeAll": True,
        "allValue": ".*",
        "multi": True,
        "options": [],
        "refresh": 2,
        "regex": "",
        "sort": 1,
    }


def annotation_list(extra: list[Json] | None = None) -> Json:
    builtin = {
        "builtIn": 1,
        "datasource": {"type": "grafana", "uid": "-- Grafana --"},
        "enable": True,
        "hide": True,
        "iconColor": "rgba(0, 211, 255, 1)",
        "name": "Annotations & Alerts",
        "type": "dashboard",
    }
    swaps = {
        "name": "Model swaps",
        "datasource": DATASOURCE,
        "enable": True,
        "iconColor": "purple",
        # The live version of a model whose last-swap time changed in the last 2 minutes.
        "expr": (
            f"max by (model, version) (leanserve_model_info{{{M}}} == 1) and on (model) "
            f"(max by (model) (changes(leanserve_last_swap_timestamp_seconds{{{M}}}[2m])) > 0)"
        ),
        "step": "1m",
        "titleFormat": "{{model}} now serves {{version}}",
        "textFormat": "live version of {{model}} changed",
        "tagKeys": "model",
        "useValueForTime": False,
    }
    return {"list": [builtin, swaps, *(extra or [])]}


def dashboard(uid: str, title: str, description: str, layout: Layout, variables: Json, notes: Json) -> Json:
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["leanserve"],
        "id": None,
        "editable": True,
        "fiscalYearStartMonth": 0,
        "graphTooltip": 1,
        "links": [],
        "liveNow": False,
        "refresh": "30s",
        "schemaVersion": SCHEMA_VERSION,
        "time": {"from": "now-6h", "to": "now"},
        "timepicker": {},
        "timezone": "browser",
        "version": 1,
        "weekStart": "",
        "annotations": notes,
        "templating": variables,
        "panels": layout.panels,
    }


def serving() -> Json:
    p = Layout()
    p.row("Traffic")
    p.add(
        timeseries(
            "Request rate by protocol",
            [target(f"sum by (protocol) (rate(leanserve_requests_total{{{M}}}[{RATE}]))", "{{protocol}}")],
            "reqps",
            "Requests per second, every outcome, by protocol (rest, rest-v2, grpc).",
        ),
        8,
    )
    p.add(
        timeseries(
            "Request rate by model",
            [target(f"sum by (model) (rate(leanserve_requests_total{{{M}}}[{RATE}]))", "{{model}}")],
            "reqps",
            "Requests per second by model; _unknown gathers requests for models this server does not serve.",
        ),
        8,
    )
    p.add(
        timeseries(
            "Throughput (rows per second)",
            [target(f"sum by (model) (rate(leanserve_batch_size_sum{{{M}}}[{RATE}]))", "{{model}}")],
            "suffix: rows/s",
            "Rows (images, texts) run through ONNX Runtime per second: requests times their batch sizes.",
        ),
        8,
    )
    p.add(
        timeseries(
            "Errors by code",
            [
                target(
                    f'sum by (model, code) (rate(leanserve_requests_total{{{M}, code!~"2.."}}[{RATE}]))',
                    "{{code}} {{model}}",
                )
            ],
            "reqps",
            "Requests per second that did not succeed, by HTTP status code (gRPC errors carry their HTTP equivalent).",
            bars=True,
        ),
        10,
    )
    p.add(
        stat(
            "5xx ratio (5m)",
            [
                target(
                    f'sum(rate(leanserve_requests_total{{{M}, code=~"5.."}}[5m])) / sum(rate(leanserve_requests_total{{{M}}}[5m]))',
                    "5xx",
                )
            ],
            "percentunit",
            "Share of requests answered with a 5xx status over the last 5 minutes (alert: LeanserveHighErrorRate, 5%).",
            thresholds((None, "green"), (0.01, "orange"), (0.05, "red")),
        ),
        4,
    )
    p.add(
        timeseries(
            "Requests in flight",
            [target("sum by (protocol) (leanserve_requests_in_flight)", "{{protocol}}")],
            "short",
            "Requests being handled now, by protocol, summed over workers and replicas (this gauge has no model label).",
        ),
        10,
    )

    p.row("Latency")
    p.add(
        timeseries(
            "Request latency by protocol",
            quantiles("leanserve_request_duration_seconds", "protocol", legend="{{protocol}}"),
            "s",
            "p50, p95 and p99 of the time from request received to response ready, by protocol.",
            threshold_line=SLO_SECONDS,
        ),
        12,
    )
    p.add(
        timeseries(
            "Request latency p95 by model and version",
            [
                target(
                    f"histogram_quantile(0.95, sum by (model, version, le) (rate(leanserve_request_duration_seconds_bucket{{{M}}}[{RATE}])))",
                    "{{model}} {{version}}",
                )
            ],
            "s",
            "p95 request latency per model and version; the dashed line is the SLO of LeanserveLatencySLOBreach (250ms).",
            threshold_line=SLO_SECONDS,
        ),
        12,
    )
    p.add(
        timeseries(
            "Inference time by model",
            quantiles("leanserve_inference_duration_seconds", "model", legend="{{model}}"),
            "s",
            "p50, p95 and p99 of the time spent in ONNX Runtime (and tokenisation) per call.",
        ),
        12,
    )
    p.add(
        timeseries(
            "Mean inference time by model and version",
            [
                target(
                    f"sum by (model, version) (rate(leanserve_inference_duration_seconds_sum{{{M}}}[{RATE}]))"
                    f" / sum by (model, version) (rate(leanserve_inference_duration_seconds_count{{{M}}}[{RATE}]))",
                    "{{model}} {{version}}",
                )
            ],
            "s",
            "Mean time in ONNX Runtime per call: compare versions across a swap.",
        ),
        12,
    )

    p.row("Batching")
    p.add(
        {
            "type": "heatmap",
            "title": "Batch size distribution",
            "description": "Inference calls per batch-size bucket (rows per call); adaptive batching merges /embed requests.",
            "datasource": DATASOURCE,
            "targets": [
                target(
                    f"sum by (le) (increase(leanserve_batch_size_bucket{{{M}}}[{RATE}]))",
                    "{{le}}",
                    fmt="heatmap",
                )
            ],
            "fieldConfig": {
                "defaults": {"custom": {"hideFrom": {"legend": False, "tooltip": False, "viz": False}}},
                "overrides": [],
            },
            "options": {
                "calculate": False,
                "cellGap": 1,
                "color": {
                    "mode": "scheme",
                    "scheme": "Oranges",
                    "fill": "dark-orange",
                    "scale": "exponential",
                    "exponent": 0.5,
                    "steps": 64,
                    "reverse": False,
                },
                "yAxis": {"axisPlacement": "left", "unit": "short", "reverse": False},
                "rowsFrame": {"layout": "auto"},
                "tooltip": {"mode": "single", "yHistogram": False, "showColorScale": False},
                "legend": {"show": True},
                "cellValues": {"unit": "short"},
                "filterValues": {"le": 1e-9},
                "exemplars": {"color": "rgba(255,0,255,0.7)"},
            },
        },
        12,
    )
    p.add(
        timeseries(
            "Mean batch size by model",
            [
                target(
                    f"sum by (model) (rate(leanserve_batch_size_sum{{{M}}}[{RATE}]))"
                    f" / sum by (model) (rate(leanserve_batch_size_count{{{M}}}[{RATE}]))",
                    "{{model}} per request",
                ),
                target(
                    f"sum by (model) (rate(leanserve_runtime_batch_size_sum{{{M}}}[{RATE}]))"
                    f" / sum by (model) (rate(leanserve_runtime_batch_size_count{{{M}}}[{RATE}]))",
                    "{{model}} per runtime call",
                    "B",
                ),
            ],
            "short",
            "Mean rows per request, and per call of the runtime after concurrent requests were merged "
            "(batch-invariant variants; LEANSERVE_BATCH_MAX_ROWS).",
        ),
        12,
    )

    p.row("Models")
    p.add(
        {
            "type": "table",
            "title": "Live versions",
            "description": "The version each model serves now (leanserve_model_info == 1), with its variant, precision and profile.",
            "datasource": DATASOURCE,
            "targets": [
                target(
                    f"max by (model, version, variant, precision, profile) (leanserve_model_info{{{M}}} == 1)",
                    instant=True,
                    fmt="table",
                )
            ],
            "fieldConfig": {"defaults": {"custom": {"align": "auto"}}, "overrides": []},
            "options": {
                "showHeader": True,
                "cellHeight": "sm",
                "footer": {"show": False, "reducer": ["sum"], "fields": ""},
            },
            "transformations": [
                {
                    "id": "organize",
                    "options": {
                        "excludeByName": {"Time": True, "Value": True},
                        "indexByName": {"model": 0, "version": 1, "variant": 2, "precision": 3, "profile": 4},
                    },
                }
            ],
        },
        12,
    )
    p.add(
        stat(
            "Last swap",
            [
                target(
                    f"max by (model) (leanserve_last_swap_timestamp_seconds{{{M}}}) * 1000",
                    "{{model}}",
                    instant=True,
                )
            ],
            "dateTimeFromNow",
            "When each model's live version last changed (or was first loaded).",
            thresholds((None, "blue")),
        ),
        6,
    )
    ready = stat(
        "Ready",
        [target(f"min by (model) (leanserve_model_ready{{{M}}})", "{{model}}", instant=True)],
        "none",
        "Whether every worker and replica serves a live version of the model (alert: LeanserveModelNotReady).",
        thresholds((None, "red"), (1, "green")),
    )
    ready["fieldConfig"]["defaults"]["mappings"] = value_map(
        ("1", "ready", "green"), ("0", "not ready", "red")
    )
    p.add(ready, 6)
    p.add(
        state_timeline(
            "Live version over time",
            [
                target(
                    f"max by (model, version, precision) (leanserve_model_info{{{M}}} == 1)",
                    "{{model}} {{version}} ({{precision}})",
                )
            ],
            "Which version of each model was live when; a swap starts a new row.",
            value_map(("1", "live", "green")),
        ),
        24,
    )
    p.add(
        timeseries(
            "Re-optimisations",
            [
                target(
                    f"sum by (model, reason, outcome) (increase(leanserve_reoptimisations_total{{{M}}}[{RATE}]))",
                    "{{model}} {{reason}}: {{outcome}}",
                )
            ],
            "short",
            "Re-optimisation runs by trigger reason and outcome (alert on failed or refused: LeanserveReoptimisationFailed).",
            bars=True,
        ),
        16,
    )
    p.add(
        stat(
            "Re-optimisations in range",
            [
                target(
                    f"sum by (outcome) (increase(leanserve_reoptimisations_total{{{M}}}[$__range]))",
                    "{{outcome}}",
                    instant=True,
                )
            ],
            "short",
            "Runs in the dashboard's time range, by outcome.",
            thresholds((None, "blue")),
        ),
        8,
    )
    return dashboard(
        "leanserve-serving",
        "leanserve / serving",
        "Traffic, latency, errors, batching and live versions of the models served by leanserve.",
        p,
        templating(),
        annotation_list(),
    )


def drift() -> Json:
    feature = 'feature=~"$feature"'
    p = Layout()
    p.row("Input data drift")
    p.add(
        timeseries(
            "Share of drifted input features",
            [target(f"max by (model) (leanserve_drift_share_drifted_features{{{M}}})", "{{model}}")],
            "percentunit",
            "Share of input features whose test flagged drift in the last evaluated window; the dashed line is the"
            " monitor's dataset rule (50%).",
            max_value=1,
            threshold_line=DATASET_DRIFT_THRESHOLD,
        ),
        12,
    )
    p.add(
        state_timeline(
            "Dataset drift",
            [target(f"max by (model) (leanserve_dataset_drift{{{M}}})", "{{model}}")],
            "The monitor's verdict on each window (alert: LeanserveDataDrift, sustained 15 minutes).",
            value_map(("0", "no drift", "green"), ("1", "drift", "red")),
        ),
        12,
    )
    # The bar gauge (latest) and the status history (over time) show the same scores on one scale.
    feature_scores = f"max by (model, feature) (leanserve_feature_drift_score{{{M}, {feature}}})"
    score_scale = {
        "unit": "short",
        "min": 0,
        "max": 1,
        "decimals": 3,
        "color": {"mode": "continuous-GrYlRd"},
        "thresholds": thresholds((None, "green")),
    }
    p.add(
        {
            "type": "bargauge",
            "title": "Drift score per feature (latest)",
            "description": "Latest score of each input feature (digits: px_0..px_63; text models: n_tokens, text_chars)."
            " K-S / chi-square tests give p-values (drift when below 0.05), Wasserstein / Jensen-Shannon a distance"
            " (drift when above 0.1): Evidently picks the test by sample size.",
            "datasource": DATASOURCE,
            "targets": [target(feature_scores, "{{model}} {{feature}}", instant=True)],
            "fieldConfig": {"defaults": score_scale, "overrides": []},
            "options": {
                "displayMode": "lcd",
                "orientation": "horizontal",
                "showUnfilled": True,
                "valueMode": "color",
                "namePlacement": "left",
                "sizing": "manual",
                "minVizHeight": 10,
                "maxVizHeight": 16,
                "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            },
        },
        8,
        22,
    )
    p.add(
        {
            "type": "status-history",
            "title": "Drift score per feature over time",
            "description": "Each row is one feature, each cell one evaluation's score (see the bar gauge for the scale).",
            "datasource": DATASOURCE,
            "targets": [target(feature_scores, "{{model}} {{feature}}")],
            "fieldConfig": {
                "defaults": {**score_scale, "custom": {"fillOpacity": 80, "lineWidth": 0}},
                "overrides": [],
            },
            "options": {
                "showValue": "never",
                "rowHeight": 0.9,
                "colWidth": 0.9,
                "legend": {"displayMode": "list", "placement": "bottom", "showLegend": False},
                "tooltip": {"mode": "single", "sort": "none"},
            },
        },
        16,
        22,
    )

    p.row("Prediction and embedding drift")
    p.add(
        timeseries(
            "Prediction drift score",
            [target(f"max by (model) (leanserve_prediction_drift_score{{{M}}})", "{{model}}")],
            "short",
            "Drift of the model's outputs in the last window. Classifiers (digits): the test's score on the predicted"
            " class (a chi-square p-value: drift when below 0.05). Embedding models (minilm): the share of drifted"
            " embedding statistics (norm, principal coordinates: drift at 50%).",
            max_value=1,
        ),
        12,
    )
    p.add(
        timeseries(
            "Embedding drift score (ROC AUC)",
            [target(f"max by (model) (leanserve_embedding_drift_score{{{M}}})", "{{model}}")],
            "short",
            "ROC AUC of a classifier telling reference from current embeddings: 0.5 is no drift; the monitor flags"
            " from about 0.57; the dashed line is LeanserveEmbeddingDrift's 0.6.",
            min_value=0.4,
            max_value=1,
            threshold_line=EMBEDDING_ALERT,
        ),
        12,
    )

    p.row("Monitor")
    p.add(
        timeseries(
            "Samples and distinct inputs in the drift window",
            [
                target(f"max by (model) (leanserve_drift_window_samples{{{M}}})", "{{model}} samples"),
                target(
                    f"max by (model) (leanserve_drift_window_distinct_inputs{{{M}}})",
                    "{{model}} distinct inputs",
                    "B",
                ),
            ],
            "short",
            "Rows in the window when it was last evaluated (sampled traffic, bounded by the window size), and"
            " how many distinct inputs they held: below LEANSERVE_DRIFT_MIN_DISTINCT (default 50) the window"
            " is not judged (one client replaying requests) and the drift panels keep the last verdict.",
        ),
        8,
    )
    p.add(
        timeseries(
            "Drift evaluation time",
            quantiles("leanserve_drift_evaluation_duration_seconds", "model", legend="{{model}}")[:2],
            "s",
            "p50 and p95 of the time to evaluate one window (the first in a process includes importing Evidently).",
        ),
        8,
    )
    p.add(
        timeseries(
            "Drift evaluations (last 5m)",
            [
                target(
                    f"sum by (model) (increase(leanserve_drift_evaluation_duration_seconds_count{{{M}}}[5m]))",
                    "{{model}}",
                ),
                target(
                    f"sum by (model) (increase(leanserve_drift_evaluation_failures_total{{{M}}}[5m]))",
                    "{{model}} failed",
                    "B",
                ),
            ],
            "short",
            "Windows evaluated in the last 5 minutes: flat at zero while traffic flows means the monitor is stuck;"
            " failed evaluations (the window was not judged; alert: LeanserveDriftEvaluationFailing) are"
            " counted apart.",
        ),
        8,
    )
    p.add(
        timeseries(
            "Re-optimisations by reason",
            [
                target(
                    f"sum by (model, reason, outcome) (increase(leanserve_reoptimisations_total{{{M}}}[{RATE}]))",
                    "{{model}} {{reason}}: {{outcome}}",
                )
            ],
            "short",
            "What the drift and latency windows triggered: re-optimisation runs by reason and outcome.",
            bars=True,
        ),
        24,
    )
    drift_regions = {
        "name": "Dataset drift",
        "datasource": DATASOURCE,
        "enable": True,
        "iconColor": "red",
        "expr": f"max by (model) (leanserve_dataset_drift{{{M}}}) == 1",
        "step": "1m",
        "titleFormat": "dataset drift on {{model}}",
        "textFormat": "",
        "tagKeys": "model",
        "useValueForTime": False,
    }
    features = query_variable(
        "feature", "Feature", f"label_values(leanserve_feature_drift_score{{{M}}}, feature)"
    )
    return dashboard(
        "leanserve-drift",
        "leanserve / drift",
        "Data, prediction and embedding drift of served traffic against each live version's reference sample.",
        p,
        templating([features]),
        annotation_list([drift_regions]),
    )


DASHBOARDS = {"leanserve-serving.json": serving, "leanserve-drift.json": drift}


def render(build: Callable[[], Json]) -> str:
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--check", action="store_true", help="only report files that differ from the generated JSON"
    )
    args = parser.parse_args(argv)
    stale = []
    for name, build in DASHBOARDS.items():
        path, text = HERE / name, render(build)
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
        else:
            path.write_text(text, encoding="utf-8")
    if stale:
        print(f"out of date (run {Path(__file__).name}): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
