from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from monitoring.config import MonitorConfig, PolicyConfig, TriggerConfig
from service.monitoring_config import monitor_config, policy_config, trigger_config
from service.settings import MIN_ADMIN_TOKEN_CHARS, ServiceSettings


def test_an_empty_admin_token_in_the_environment_means_no_admin_api(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEANSERVE_ADMIN_TOKEN", "")
    assert ServiceSettings().admin_token is None
    monkeypatch.setenv("LEANSERVE_ADMIN_TOKEN", "   ")
    assert ServiceSettings().admin_token is None


def test_a_short_admin_token_refuses_to_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEANSERVE_ADMIN_TOKEN", "x" * (MIN_ADMIN_TOKEN_CHARS - 1))
    with pytest.raises(ValidationError, match=f"at least {MIN_ADMIN_TOKEN_CHARS} characters"):
        ServiceSettings()


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
@pytest.mark.parametrize("name", ["BATCH_WAIT_MS", "REQUEST_READ_TIMEOUT_S", "DRIFT_SAMPLE_RATE"])
def test_a_number_that_is_not_finite_is_refused_as_such(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(f"LEANSERVE_{name}", value)
    with pytest.raises(ValidationError, match="finite number"):
        ServiceSettings()


def test_a_token_is_kept_without_surrounding_whitespace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEANSERVE_ADMIN_TOKEN", f"  {'k' * MIN_ADMIN_TOKEN_CHARS}\n")
    token = ServiceSettings().admin_token
    assert token is not None and token.get_secret_value() == "k" * MIN_ADMIN_TOKEN_CHARS


# -- the monitoring settings: defaults owned by monitoring's config classes ----------------------------
# The documented defaults (README, k8s/base/config.env): their env names and values are public.
DOCUMENTED_MONITORING_DEFAULTS = {
    "LEANSERVE_DRIFT_SAMPLE_RATE": 0.5,
    "LEANSERVE_DRIFT_WINDOW_SIZE": 1000,
    "LEANSERVE_DRIFT_MIN_SAMPLES": 200,
    "LEANSERVE_DRIFT_MIN_DISTINCT": 50,
    "LEANSERVE_DRIFT_INTERVAL_S": 30.0,
    "LEANSERVE_REOPTIMISE_DRIFT_SHARE": 0.3,
    "LEANSERVE_REOPTIMISE_WINDOWS": 3,
    "LEANSERVE_REOPTIMISE_COOLDOWN_S": 1800.0,
    "LEANSERVE_REOPTIMISE_MAX_PER_HOUR": 2,
    "LEANSERVE_LATENCY_SLO_MS": None,
    "LEANSERVE_SHADOW_ROWS": 50,
    "LEANSERVE_REOPTIMISE_TIME_BUDGET_S": 60.0,
    "LEANSERVE_REOPTIMISE_DISTIL_TIME_S": 0.0,
    "LEANSERVE_AUDIT_LOG": None,
}


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in [n for n in os.environ if n.startswith("LEANSERVE_")]:
        monkeypatch.delenv(name)
    return monkeypatch


def test_monitoring_defaults_keep_their_names_and_values(clean_env: pytest.MonkeyPatch) -> None:
    settings = ServiceSettings()
    for env, value in DOCUMENTED_MONITORING_DEFAULTS.items():
        assert getattr(settings, env.removeprefix("LEANSERVE_").lower()) == value, env


def test_default_settings_build_the_monitoring_defaults(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    settings = ServiceSettings()
    assert monitor_config(settings) == MonitorConfig()
    assert policy_config(settings) == PolicyConfig()
    log = tmp_path / "audit.jsonl"
    assert trigger_config(settings.model_copy(update={"audit_log": log})) == TriggerConfig(audit_log=log)


def test_each_monitoring_setting_reaches_its_config_field(clean_env: pytest.MonkeyPatch) -> None:
    values = {
        "DRIFT_SAMPLE_RATE": "0.25",
        "DRIFT_WINDOW_SIZE": "400",
        "DRIFT_MIN_SAMPLES": "100",
        "DRIFT_MIN_DISTINCT": "7",
        "DRIFT_INTERVAL_S": "5",
        "REOPTIMISE_DRIFT_SHARE": "0.6",
        "REOPTIMISE_WINDOWS": "4",
        "REOPTIMISE_COOLDOWN_S": "60",
        "REOPTIMISE_MAX_PER_HOUR": "5",
        "LATENCY_SLO_MS": "25",
        "SHADOW_ROWS": "80",
        "SHADOW_TIMEOUT_S": "45",
        "REOPTIMISE_TIME_BUDGET_S": "30",
        "REOPTIMISE_DISTIL_TIME_S": "600",
        "AUDIT_LOG": "/var/log/leanserve.jsonl",
    }
    for name, value in values.items():
        clean_env.setenv(f"LEANSERVE_{name}", value)
    settings = ServiceSettings()
    assert monitor_config(settings) == MonitorConfig(
        sample_rate=0.25, window_size=400, min_samples=100, min_distinct=7, interval_s=5.0
    )
    policy = PolicyConfig(
        input_drift_threshold=0.6,
        drift_windows=4,
        latency_slo_ms=25.0,
        latency_windows=4,
        cooldown_s=60.0,
        max_runs_per_hour=5,
    )
    assert trigger_config(settings) == TriggerConfig(
        policy=policy,
        shadow_rows=80,
        shadow_timeout_s=45.0,
        build_time_budget_s=30.0,
        distil_time_s=600.0,
        audit_log=Path("/var/log/leanserve.jsonl"),
    )


def test_the_settings_import_no_metrics_nor_numerical_libraries() -> None:
    # `leanserve serve` validates its settings before BentoML sets the metrics directory up.
    script = (
        "import sys, service.settings\n"
        "print(sorted({'numpy', 'pandas', 'prometheus_client'} & set(sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]"
