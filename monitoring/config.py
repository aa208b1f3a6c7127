"""The settings of the drift monitor and of the closed loop, with their defaults: the one place they are
defined (the policy's thresholds are `monitoring.policy.PolicyConfig`).

Standard library only (and `monitoring.policy`, `monitoring.audit`, themselves so): the service's
LEANSERVE_* settings (`service.settings`) take their defaults from these classes, and
`service.monitoring_config` maps the settings onto them, without importing numpy, pandas or
prometheus_client (`leanserve serve` validates its settings before BentoML sets up the metrics
directory). `monitoring.monitor` and `monitoring.trigger` export them too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from monitoring.audit import audit_log_path
from monitoring.policy import PolicyConfig

__all__ = ["MonitorConfig", "PolicyConfig", "TriggerConfig"]


@dataclass(frozen=True)
class MonitorConfig:
    """Attributes: sample_rate (share of rows sampled), window_size (rows kept per model),
    min_samples (rows before a window is evaluated), interval_s (seconds between evaluations),
    min_distinct (distinct inputs a window needs for a drift verdict).

    min_distinct defaults to 50, a quarter of the default min_samples (200): below it the average input
    of a minimal window repeats more than four times, which is a few clients replaying requests (a load
    test of one sentence gives 1), not a population the drift tests can compare with the reference.
    0 or 1 turns the rule off; above window_size it counts as window_size
    (a window must be able to qualify). Raises ValueError when it is negative."""

    sample_rate: float = 0.5
    window_size: int = 1000
    min_samples: int = 200
    interval_s: float = 30.0
    min_distinct: int = 50

    def __post_init__(self) -> None:
        if self.min_distinct < 0:
            raise ValueError(f"min_distinct must be >= 0, got {self.min_distinct}")


@dataclass(frozen=True)
class TriggerConfig:
    """Attributes: policy (when to act), min_fidelity (gate on recent traffic, vs FP32),
    shadow_rows / min_shadow_agreement / shadow_timeout_s (the shadow run), build_time_budget_s,
    serve_seconds (per setting of the build's serving stage: half the default, the rebuild runs beside
    live traffic) and build_timeout_s (the build process), audit_log (JSON lines; default `audit_log_path()`, beside the
    model store), history (windows kept per model), stop_grace_s (seconds a build has to exit on SIGTERM
    at stop before SIGKILL), build_command (the argv that runs `leanserve optimise`; empty: this
    interpreter's `-m optimise.cli optimise`; the build's options are appended), distil_time_s (seconds
    a rebuild trains distilled students on the recent inputs added to the model's distillation data,
    apart from its search budget and its timeout, where the server has recent inputs to give: tensor
    models; 0: a rebuild trains no new students, and a live student is taken from the student cache or
    trained for as long as it was)."""

    policy: PolicyConfig = field(default_factory=PolicyConfig)
    min_fidelity: float = 0.99
    shadow_rows: int = 50
    min_shadow_agreement: float = 0.98
    shadow_timeout_s: float = 300.0
    build_time_budget_s: float = 60.0
    serve_seconds: float = 0.5
    build_timeout_s: float = 900.0
    audit_log: Path = field(default_factory=audit_log_path)
    history: int = 20
    stop_grace_s: float = 10.0
    build_command: tuple[str, ...] = ()
    distil_time_s: float = 0.0
