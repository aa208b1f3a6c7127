"""The Grafana dashboards: valid JSON in step with their generator, unique panel ids, the variables
Grafana needs, and PromQL that parses and only names metrics that monitoring/metrics.py defines."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY

import monitoring.metrics  # noqa: F401  (registers the leanserve_ families)

REPO = Path(__file__).resolve().parents[3]
DASHBOARDS = REPO / "monitoring" / "dashboards"
NAMES = ("leanserve-serving.json", "leanserve-drift.json")
METRIC = re.compile(r"leanserve_[a-z_]+")
HISTOGRAM_SUFFIX = re.compile(r"_(bucket|count|sum)$")
# What Grafana substitutes before a query reaches Prometheus.
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "1m",
    "$__range": "1h",
    "$model": ".*",
    "$feature": ".*",
}


def load(name: str) -> dict[str, Any]:
    return json.loads((DASHBOARDS / name).read_text(encoding="utf-8"))


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])  # a collapsed row keeps its panels inside


def expressions(dashboard: dict[str, Any]) -> list[str]:
    """Every PromQL expression: panel targets, annotations and query variables."""
    exprs = [t["expr"] for p in panels(dashboard) for t in p.get("targets", [])]
    exprs += [a["expr"] for a in dashboard["annotations"]["list"] if "expr" in a]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            exprs.append(query["query"] if isinstance(query, dict) else query)
    return exprs


def families_in(expr: str) -> set[str]:
    """Metric names in an expression, histogram series folded into their family."""
    return {HISTOGRAM_SUFFIX.sub("", name) for name in METRIC.findall(expr)}


def registered_families() -> set[str]:
    """The names monitoring.metrics exposes: counters as name_total, histograms by family name."""
    names = set()
    for family in REGISTRY.collect():
        if family.name.startswith("leanserve_"):
            names.add(f"{family.name}_total" if family.type == "counter" else family.name)
    return names


def substitute(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    return expr


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("leanserve_dashboards_generate", DASHBOARDS / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", NAMES)
def test_dashboard_is_valid_grafana_json(name: str) -> None:
    dashboard = load(name)
    assert 36 <= dashboard["schemaVersion"] <= 41
    assert dashboard["uid"] == name.removesuffix(".json") and dashboard["title"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    model = variables["model"]
    assert model["type"] == "query" and "label_values(leanserve_model_info, model)" in json.dumps(
        model["query"]
    )
    every = list(panels(dashboard))
    ids = [p["id"] for p in every]
    assert len(ids) == len(set(ids)), f"duplicate panel ids in {name}"
    for panel in every:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24 and grid["h"] > 0, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["title"] and panel.get("description"), panel["id"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        for t in panel["targets"]:
            assert t["datasource"]["uid"] == "${datasource}", panel["title"]
        if panel["type"] in {"timeseries", "stat", "bargauge"}:
            assert panel["fieldConfig"]["defaults"].get("unit"), f"{panel['title']} has no unit"


def test_panels_do_not_overlap() -> None:
    for name in NAMES:
        cells: dict[tuple[int, int], str] = {}
        for panel in panels(load(name)):
            g = panel["gridPos"]
            for x in range(g["x"], g["x"] + g["w"]):
                for y in range(g["y"], g["y"] + g["h"]):
                    assert (x, y) not in cells, f"{name}: {panel['title']} overlaps {cells[(x, y)]}"
                    cells[(x, y)] = panel["title"]


def test_the_serving_dashboard_annotates_swaps() -> None:
    notes = [a for a in load("leanserve-serving.json")["annotations"]["list"] if "expr" in a]
    assert any("leanserve_last_swap_timestamp_seconds" in a["expr"] for a in notes)


@pytest.mark.parametrize("name", NAMES)
def test_every_queried_metric_is_defined_in_monitoring_metrics(name: str) -> None:
    defined = registered_families()
    assert "leanserve_requests_total" in defined and "leanserve_request_duration_seconds" in defined
    queried: set[str] = set()
    for expr in expressions(load(name)):
        found = families_in(expr)
        assert found, f"no leanserve_ metric in {expr!r}"
        queried |= found
    assert not queried - defined, f"{name} queries metrics that monitoring/metrics.py does not define"


def test_the_dashboards_use_every_leanserve_metric() -> None:
    queried = {f for name in NAMES for expr in expressions(load(name)) for f in families_in(expr)}
    assert registered_families() - queried == set()


def test_the_drawn_dataset_drift_threshold_is_the_drift_reports() -> None:
    """The generator is standard library only, so it keeps a copy of the threshold it draws."""
    from monitoring.drift import DATASET_DRIFT_THRESHOLD

    assert load_generator().DATASET_DRIFT_THRESHOLD == DATASET_DRIFT_THRESHOLD


def test_json_files_are_what_the_generator_writes() -> None:
    generator = load_generator()
    for name, build in generator.DASHBOARDS.items():
        assert (DASHBOARDS / name).read_text(encoding="utf-8") == generator.render(build), (
            f"{name} is out of date: run python monitoring/dashboards/generate.py"
        )
    assert set(generator.DASHBOARDS) == set(NAMES)


@pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool not on PATH (Debian package prometheus)"
)
def test_every_expression_parses_as_promql(tmp_path: Path) -> None:
    """promtool parses the expressions, as recording rules of a throwaway rules file."""
    rules = [
        {"record": f"dashboard:expr_{i}", "expr": substitute(expr)}
        for i, expr in enumerate(
            e for name in NAMES for e in expressions(load(name)) if "label_values" not in e
        )
    ]
    path = tmp_path / "dashboards.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}), encoding="utf-8")
    checked = subprocess.run(
        ["promtool", "check", "rules", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
