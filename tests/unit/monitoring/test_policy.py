from __future__ import annotations

import pytest

from monitoring.policy import Action, PolicyConfig, Reason, WindowState, decide, distinct_rule

CONFIG = PolicyConfig(
    input_drift_threshold=0.3,
    drift_windows=3,
    latency_slo_ms=20.0,
    latency_windows=2,
    cooldown_s=600,
    max_runs_per_hour=2,
)
CALM = WindowState(share_drifted=0.05, latency_p95_ms=10.0)
DRIFTED = WindowState(share_drifted=0.6, latency_p95_ms=10.0)
NOW = 100_000.0


def test_calm_traffic_does_nothing() -> None:
    assert decide([CALM] * 10, [], NOW, CONFIG).action is Action.NONE


def test_drift_must_last_k_windows() -> None:
    assert decide([CALM, DRIFTED, DRIFTED], [], NOW, CONFIG).action is Action.NONE
    decision = decide([CALM, DRIFTED, DRIFTED, DRIFTED], [], NOW, CONFIG)
    assert decision.action is Action.REOPTIMISE and decision.reason is Reason.DATA_DRIFT
    assert "0.60" in decision.detail


def test_drift_that_outlives_a_reoptimisation_needs_retraining() -> None:
    decision = decide([DRIFTED] * 3, [NOW - 4000], NOW, CONFIG, reoptimised=True)
    assert decision.action is Action.NEEDS_RETRAINING and "persists" in decision.detail


def test_embedding_drift_counts_as_input_drift() -> None:
    embedded = WindowState(embedding_drift=True)
    assert decide([embedded] * 3, [], NOW, CONFIG).reason is Reason.DATA_DRIFT


def test_output_drift_without_input_drift_needs_retraining_not_optimisation() -> None:
    concept = WindowState(share_drifted=0.0, prediction_drift=True)
    decision = decide([concept] * 3, [], NOW, CONFIG)
    assert decision.action is Action.NEEDS_RETRAINING and decision.reason is Reason.CONCEPT_DRIFT


def test_latency_over_the_slo_for_k_windows() -> None:
    slow = WindowState(latency_p95_ms=35.0)
    assert decide([CALM, slow], [], NOW, CONFIG).action is Action.NONE
    assert decide([slow, slow], [], NOW, CONFIG).reason is Reason.LATENCY
    assert decide([slow, slow], [], NOW, PolicyConfig(latency_slo_ms=None)).action is Action.NONE


def test_cooldown_and_hourly_cap_hold_a_run_back() -> None:
    assert decide([DRIFTED] * 3, [NOW - 60], NOW, CONFIG).reason is Reason.COOLDOWN
    assert decide([DRIFTED] * 3, [NOW - 3000, NOW - 2000], NOW, CONFIG).reason is Reason.RATE_LIMIT
    assert decide([DRIFTED] * 3, [NOW - 4000, NOW - 2000], NOW, CONFIG).action is Action.REOPTIMISE


@pytest.mark.parametrize(
    "kwargs",
    [
        {"input_drift_threshold": 0.0},
        {"drift_windows": 0},
        {"latency_windows": 0},
        {"cooldown_s": -1},
        {"max_runs_per_hour": 0},
    ],
)
def test_invalid_config(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        PolicyConfig(**kwargs)  # type: ignore[arg-type]


# -- distinct inputs: one client replaying requests is not drift --------------------------------
UNJUDGED = WindowState(
    share_drifted=1.0,
    embedding_drift=True,
    prediction_drift=True,
    latency_p95_ms=10.0,
    distinct_inputs=1,
    not_judged="window has 1 distinct input; at least 50 needed",
)


@pytest.mark.parametrize(
    ("distinct", "minimum", "reason"),
    [
        (1, 50, "window has 1 distinct input; at least 50 needed"),
        (3, 50, "window has 3 distinct inputs; at least 50 needed"),
        (49, 50, "window has 49 distinct inputs; at least 50 needed"),
        (50, 50, None),
        (900, 50, None),
        (1, 1, None),
        (0, 0, None),
    ],
)
def test_distinct_rule(distinct: int, minimum: int, reason: str | None) -> None:
    assert distinct_rule(distinct, minimum) == reason


def test_a_window_that_was_not_judged_carries_no_drift_verdict() -> None:
    decision = decide([UNJUDGED] * 5, [], NOW, CONFIG)
    assert decision.action is Action.NONE and decision.reason is Reason.NOT_JUDGED
    assert "1 distinct input" in decision.detail
    # Its drift fields are ignored: no concept drift either.
    assert decide([UNJUDGED] * 3, [], NOW, CONFIG, reoptimised=True).action is Action.NONE


def test_an_unjudged_window_breaks_a_drift_streak() -> None:
    assert decide([DRIFTED, DRIFTED, UNJUDGED, DRIFTED], [], NOW, CONFIG).action is Action.NONE
    assert decide([UNJUDGED, DRIFTED, DRIFTED, DRIFTED], [], NOW, CONFIG).action is Action.REOPTIMISE


def test_the_latency_rule_still_sees_unjudged_windows() -> None:
    slow = WindowState(latency_p95_ms=35.0, distinct_inputs=1, not_judged="window has 1 distinct input")
    assert decide([slow, slow], [], NOW, CONFIG).reason is Reason.LATENCY
