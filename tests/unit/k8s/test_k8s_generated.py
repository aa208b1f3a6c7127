"""k8s/generate.py: the monitoring copies under k8s/base/monitoring are current and equal their
single sources in monitoring/ (no kubectl needed)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import yaml

REPO = Path(__file__).resolve().parents[3]
GENERATOR = REPO / "k8s" / "generate.py"
RULES = REPO / "monitoring" / "alerts" / "leanserve.rules.yaml"
DASHBOARDS = REPO / "monitoring" / "dashboards"
OUT = REPO / "k8s" / "base" / "monitoring"


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("k8s_generate", GENERATOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_files_are_current() -> None:
    assert generator().check() == [], "run: python k8s/generate.py"


def test_check_mode_exits_zero_when_current() -> None:
    done = subprocess.run(
        [sys.executable, str(GENERATOR), "--check"], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr


def test_check_mode_reports_a_stale_copy(tmp_path: Path) -> None:
    module = generator()
    # Point the generator at a copy of its output with one dashboard altered.
    out = tmp_path / "monitoring"
    (out / "dashboards").mkdir(parents=True)
    for path, content in module.render().items():
        target = out / path.relative_to(module.OUT)
        target.write_text(content, encoding="utf-8")
    first = sorted((out / "dashboards").glob("*.json"))[0]
    first.write_text(first.read_text(encoding="utf-8") + " ", encoding="utf-8")
    (out / "dashboards" / "leanserve-gone.json").write_text("{}", encoding="utf-8")
    module.OUT, module.OUT_DASHBOARDS = out, out / "dashboards"
    problems = module.check()
    assert any(first.name in p and "out of date" in p for p in problems), problems
    assert any("leanserve-gone.json" in p and "no source" in p for p in problems), problems
    module.write()
    assert module.check() == []
    assert not (out / "dashboards" / "leanserve-gone.json").exists()


def test_prometheus_rule_groups_equal_the_rules_file() -> None:
    rule = yaml.safe_load((OUT / "prometheusrule.yaml").read_text(encoding="utf-8"))
    assert rule["apiVersion"] == "monitoring.coreos.com/v1" and rule["kind"] == "PrometheusRule"
    assert rule["spec"]["groups"] == yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]


def test_dashboard_copies_are_byte_identical() -> None:
    sources = sorted(DASHBOARDS.glob("*.json"))
    copies = sorted((OUT / "dashboards").glob("*.json"))
    assert [p.name for p in copies] == [p.name for p in sources] and sources
    for source, copy in zip(sources, copies, strict=True):
        assert copy.read_bytes() == source.read_bytes(), copy.name
        json.loads(copy.read_text(encoding="utf-8"))


def test_every_dashboard_gets_a_labelled_configmap() -> None:
    kustomization = yaml.safe_load((OUT / "kustomization.yaml").read_text(encoding="utf-8"))
    generated = {entry["files"][0]: entry for entry in kustomization["configMapGenerator"]}
    assert set(generated) == {f"dashboards/{p.name}" for p in DASHBOARDS.glob("*.json")}
    for entry in generated.values():
        assert entry["options"]["labels"] == {"grafana_dashboard": "1"}
        assert entry["options"]["disableNameSuffixHash"] is True
    assert "servicemonitor.yaml" in kustomization["resources"]
    assert (OUT / "servicemonitor.yaml").is_file()
