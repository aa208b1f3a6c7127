"""A real Prometheus scraping a real `bentoml serve`: the target is up, the request metrics arrive
with their labels, the dashboards' queries run, and the alert rules load.

Prometheus comes from the Debian package `prometheus` (binary on PATH); the test is skipped without it.
Everything listens on loopback, on free ports, and every wait is bounded.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from servers import REPO, Server, free_port

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        shutil.which("prometheus") is None, reason="prometheus not on PATH (Debian package prometheus)"
    ),
]

RULES = REPO / "monitoring" / "alerts" / "leanserve.rules.yaml"
DASHBOARDS = sorted((REPO / "monitoring" / "dashboards").glob("leanserve-*.json"))
GROUPS = {"leanserve-availability", "leanserve-slo", "leanserve-drift", "leanserve-reoptimisation"}
METRIC = re.compile(r"leanserve_[a-z_]+")
HISTOGRAM_SUFFIX = re.compile(r"_(bucket|count|sum)$")
# Families the service exports once it has loaded its models and answered requests.
SERVING_FAMILIES = {
    "leanserve_request_duration_seconds",
    "leanserve_inference_duration_seconds",
    "leanserve_batch_size",
    "leanserve_runtime_batch_size",
    "leanserve_requests_total",
    "leanserve_requests_in_flight",
    "leanserve_model_info",
    "leanserve_model_ready",
    "leanserve_last_swap_timestamp_seconds",
}
# Families written only once the drift monitor has judged a window (200 sampled rows by default) or
# a re-optimisation has run. Under BentoML's multiprocess collector a family without samples is not
# exposed at all (no `# TYPE` line either), so these may be missing from a fresh server.
LATE_FAMILIES = {
    "leanserve_drift_share_drifted_features",
    "leanserve_dataset_drift",
    "leanserve_feature_drift_score",
    "leanserve_prediction_drift_score",
    "leanserve_embedding_drift_score",
    "leanserve_drift_window_samples",
    "leanserve_drift_window_distinct_inputs",
    "leanserve_drift_evaluation_duration_seconds",
    "leanserve_drift_evaluation_failures_total",
    "leanserve_reoptimisations_total",
}
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "15s",
    "$__range": "5m",
    "$model": ".*",
    "$feature": ".*",
}
PIXELS = {"name": "pixels", "shape": [2, 1, 8, 8], "datatype": "FP32", "data": [0.25] * 128}
START_TIMEOUT = 60.0
SAMPLE_TIMEOUT = 60.0


def dashboard_expressions() -> list[str]:
    exprs = []
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text(encoding="utf-8"))
        for panel in dashboard["panels"]:
            for inner in [panel, *panel.get("panels", [])]:
                exprs += [t["expr"] for t in inner.get("targets", [])]
        exprs += [a["expr"] for a in dashboard["annotations"]["list"] if "expr" in a]
    return exprs


def families(exprs: list[str]) -> set[str]:
    return {HISTOGRAM_SUFFIX.sub("", name) for expr in exprs for name in METRIC.findall(expr)}


def substitute(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    return expr


def wait_for(what: str, check: Callable[[], Any], timeout: float) -> Any:
    """Poll `check` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except httpx.HTTPError as exc:
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(0.5)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


class Prometheus:
    def __init__(self, url: str, process: subprocess.Popen[bytes], log: Path) -> None:
        self.url, self.process, self.log = url, process, log
        self.client = httpx.Client(base_url=url, timeout=10)

    def query(self, expr: str) -> list[dict[str, Any]]:
        response = self.client.get("/api/v1/query", params={"query": expr})
        body = response.json()
        assert response.status_code == 200 and body["status"] == "success", (expr, body)
        return list(body["data"]["result"])

    def alive(self) -> None:
        if self.process.poll() is not None:
            pytest.fail(f"prometheus exited: {self.log.read_text(errors='replace')[-3000:]}")


def write_config(path: Path, target: str) -> None:
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [
            {
                "job_name": "leanserve",
                "metrics_path": "/metrics",
                "static_configs": [{"targets": [target]}],
            }
        ],
    }
    path.write_text(json.dumps(config, indent=2), encoding="utf-8")  # JSON is YAML


@pytest.fixture(scope="module")
def prometheus(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    root = tmp_path_factory.mktemp("prometheus")
    write_config(root / "prometheus.yml", server.http.removeprefix("http://"))
    port = free_port()
    log = root / "prometheus.log"
    command = [
        shutil.which("prometheus") or "prometheus",
        f"--config.file={root / 'prometheus.yml'}",
        f"--storage.tsdb.path={root / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
    ]
    process = subprocess.Popen(command, cwd=root, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    running = Prometheus(f"http://127.0.0.1:{port}", process, log)
    try:
        wait_for(
            "prometheus /-/ready",
            lambda: running.alive() or running.client.get("/-/ready").status_code == 200,
            START_TIMEOUT,
        )
        yield running
    finally:
        running.client.close()
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def send_traffic(server: Server) -> None:
    with server.client() as client:
        for _ in range(3):
            assert client.post("/v2/models/digits/infer", json={"inputs": [PIXELS]}).status_code == 200
            assert client.post("/embed", json={"texts": ["a served text", "another"]}).status_code == 200
        assert client.post("/v2/models/not-served/infer", json={"inputs": [PIXELS]}).status_code == 404


@pytest.fixture(scope="module")
def scraped(server: Server, prometheus: Prometheus) -> Prometheus:
    """Traffic before the first scrape (every series exists from its first sample) and after it
    (so that rates have something to show)."""
    send_traffic(server)
    wait_for(
        'up{job="leanserve"} == 1',
        lambda: prometheus.alive() or prometheus.query('up{job="leanserve"} == 1'),
        SAMPLE_TIMEOUT,
    )
    time.sleep(2.5)  # at least two scrapes of the first counts
    send_traffic(server)
    return prometheus


def test_target_is_up(scraped: Prometheus) -> None:
    [up] = scraped.query('up{job="leanserve"}')
    assert up["value"][1] == "1"


def test_request_counts_arrive_for_both_models(scraped: Prometheus) -> None:
    def both() -> set[str]:
        by_model = scraped.query('sum by (model) (leanserve_requests_total{code="200"})')
        models = {series["metric"]["model"] for series in by_model}
        return models if {"digits", "minilm"} <= models else set()

    wait_for("leanserve_requests_total for digits and minilm", both, SAMPLE_TIMEOUT)
    unknown = scraped.query('leanserve_requests_total{model="_unknown", code="404"}')
    assert unknown and unknown[0]["metric"]["protocol"] == "rest-v2"


def test_latency_quantile_is_a_number(scraped: Prometheus) -> None:
    expr = (
        "histogram_quantile(0.95, sum by (model, le) (rate(leanserve_request_duration_seconds_bucket[30s])))"
    )

    def finite() -> dict[str, float]:
        values = {s["metric"]["model"]: float(s["value"][1]) for s in scraped.query(expr)}
        return values if all(math.isfinite(values.get(m, math.nan)) for m in ("digits", "minilm")) else {}

    p95 = wait_for("a finite p95 latency for both models", finite, SAMPLE_TIMEOUT)
    assert all(0 < p95[model] < 60 for model in ("digits", "minilm")), (
        p95
    )  # others may have no recent traffic


def test_live_versions_are_visible(scraped: Prometheus) -> None:
    live = scraped.query("max by (model, version) (leanserve_model_info == 1)")
    assert {series["metric"]["model"] for series in live} >= {"digits", "minilm"}


def test_every_dashboard_family_the_service_exports_reaches_prometheus(
    server: Server, scraped: Prometheus
) -> None:
    queried = families(dashboard_expressions())
    assert queried == SERVING_FAMILIES | LATE_FAMILIES, "update the family lists with the dashboards"
    exposition = httpx.get(f"{server.http}/metrics", timeout=10).text
    exported = set(re.findall(r"^# TYPE (leanserve_[a-z_]+) ", exposition, flags=re.MULTILINE))
    assert exported >= SERVING_FAMILIES, SERVING_FAMILIES - exported
    assert exported - queried == set(), "the service exports families that no dashboard shows"

    def in_prometheus() -> set[str]:
        names = set(scraped.client.get("/api/v1/label/__name__/values").json()["data"])
        missing = {f for f in exported if f not in names and f"{f}_bucket" not in names}
        return {"ok"} if not missing else set()

    wait_for(f"{sorted(exported)} in prometheus", in_prometheus, SAMPLE_TIMEOUT)


def test_every_dashboard_query_runs(scraped: Prometheus) -> None:
    for expr in dashboard_expressions():
        scraped.query(substitute(expr))  # asserts status "success"
    rows = scraped.query(
        substitute('sum by (protocol) (rate(leanserve_requests_total{model=~"$model"}[$__rate_interval]))')
    )
    assert {series["metric"]["protocol"] for series in rows} >= {"rest", "rest-v2"}


def test_alert_rules_are_loaded_and_evaluate(scraped: Prometheus) -> None:
    def evaluated() -> list[dict[str, Any]]:
        groups = scraped.client.get("/api/v1/rules").json()["data"]["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        loaded = {group["name"] for group in groups} == GROUPS and all(r["health"] == "ok" for r in rules)
        return rules if loaded else []

    rules = wait_for("the alert rules loaded and evaluated", evaluated, SAMPLE_TIMEOUT)
    assert all(rule["type"] == "alerting" and not rule.get("lastError") for rule in rules)
    assert {rule["name"] for rule in rules} >= {
        "LeanserveTargetDown",
        "LeanserveLatencySLOBreach",
        "LeanserveDataDrift",
    }
    firing = [rule["name"] for rule in rules if rule["state"] == "firing"]
    assert firing == [], f"a healthy server raises {firing}"
