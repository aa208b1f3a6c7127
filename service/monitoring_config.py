"""The drift monitor's and the closed loop's configs from the service settings, mapped once.

The defaults live in monitoring's config classes (`monitoring.config`, `monitoring.policy`) and the
settings take theirs from them, so this only says which setting feeds which field.
"""

from __future__ import annotations

from dataclasses import replace

from monitoring.config import MonitorConfig, PolicyConfig, TriggerConfig
from service.settings import ServiceSettings


def monitor_config(settings: ServiceSettings) -> MonitorConfig:
    return MonitorConfig(
        sample_rate=settings.drift_sample_rate,
        window_size=settings.drift_window_size,
        min_samples=settings.drift_min_samples,
        min_distinct=settings.drift_min_distinct,
        interval_s=settings.drift_interval_s,
    )


def policy_config(settings: ServiceSettings) -> PolicyConfig:
    """One LEANSERVE_REOPTIMISE_WINDOWS counts both drifted and slow windows."""
    return PolicyConfig(
        input_drift_threshold=settings.reoptimise_drift_share,
        drift_windows=settings.reoptimise_windows,
        latency_slo_ms=settings.latency_slo_ms,
        latency_windows=settings.reoptimise_windows,
        cooldown_s=settings.reoptimise_cooldown_s,
        max_runs_per_hour=settings.reoptimise_max_per_hour,
    )


def trigger_config(settings: ServiceSettings) -> TriggerConfig:
    """An unset LEANSERVE_AUDIT_LOG leaves TriggerConfig's default (beside the model store)."""
    config = TriggerConfig(
        policy=policy_config(settings),
        shadow_rows=settings.shadow_rows,
        shadow_timeout_s=settings.shadow_timeout_s,
        build_time_budget_s=settings.reoptimise_time_budget_s,
        distil_time_s=settings.reoptimise_distil_time_s,
    )
    return config if settings.audit_log is None else replace(config, audit_log=settings.audit_log)
