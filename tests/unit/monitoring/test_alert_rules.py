"""The Prometheus alerting rules: promtool accepts them and their unit tests pass, every alert has a
severity, a summary and a description, is covered by a unit test, and names only defined metrics."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY

import monitoring.metrics  # noqa: F401  (registers the leanserve_ families)

REPO = Path(__file__).resolve().parents[3]
ALERTS = REPO / "monitoring" / "alerts"
RULES = ALERTS / "leanserve.rules.yaml"
RULE_TESTS = ALERTS / "leanserve.rules.test.yaml"
SEVERITIES = {"critical", "warning", "info"}
needs_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool not on PATH (Debian package prometheus)"
)


def alerts() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    # promtool resolves the test file's rule_files against the working directory.
    return subprocess.run(
        ["promtool", *args], cwd=ALERTS, capture_output=True, text=True, timeout=120, check=False
    )


@needs_promtool
def test_promtool_check_rules() -> None:
    checked = promtool("check", "rules", RULES.name)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in checked.stdout


@needs_promtool
def test_promtool_test_rules() -> None:
    tested = promtool("test", "rules", RULE_TESTS.name)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_every_alert_has_severity_summary_and_description() -> None:
    rules = alerts()
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names))
    assert {
        "LeanserveDataDrift",
        "LeanserveEmbeddingDrift",
        "LeanserveDriftEvaluationFailing",
        "LeanserveLatencySLOBreach",
        "LeanserveHighErrorRate",
        "LeanserveReoptimisationFailed",
        "LeanserveModelNotServing",
        "LeanserveTargetDown",
    } <= set(names)
    for rule in rules:
        assert rule.get("labels", {}).get("severity") in SEVERITIES, rule["alert"]
        annotations = rule.get("annotations", {})
        assert annotations.get("summary") and annotations.get("description"), rule["alert"]
        assert "{{" in annotations["summary"] + annotations["description"], (
            f"{rule['alert']} is not templated"
        )


def test_every_alert_is_unit_tested_firing_and_not_firing() -> None:
    cases = [
        case
        for test in yaml.safe_load(RULE_TESTS.read_text(encoding="utf-8"))["tests"]
        for case in test.get("alert_rule_test", [])
    ]
    for name in (rule["alert"] for rule in alerts()):
        expected = [case.get("exp_alerts") or [] for case in cases if case["alertname"] == name]
        assert any(expected), f"{name} is never tested firing"
        assert not all(expected), f"{name} is never tested not firing"


def test_alerts_name_only_metrics_defined_in_monitoring_metrics() -> None:
    defined = {
        f"{family.name}_total" if family.type == "counter" else family.name
        for family in REGISTRY.collect()
        if family.name.startswith("leanserve_")
    }
    for rule in alerts():
        for name in re.findall(r"leanserve_[a-z_]+", rule["expr"]):
            assert re.sub(r"_(bucket|count|sum)$", "", name) in defined, f"{rule['alert']}: {name}"
