"""When to act: a pure function from recent drift and latency windows to a decision.

No I/O and no clock of its own (the caller passes `now`), so every rule is
testable with plain values. Input drift that lasts is answered by
re-optimising on recent traffic (recalibration can follow a shifted input
range); output drift without input drift means the relation between inputs and
answers moved (concept drift): no optimisation fixes that, so it is reported as
needing retraining. Cooldown and an hourly cap keep a flapping signal from
rebuilding the model over and over.

Drift is only judged on a window of enough distinct inputs (`distinct_rule`):
one input repeated, or a handful, is one client replaying requests (a load
test), not a shifted population, and a drift test would flag it every time.
Such a window carries no drift verdict (`WindowState.not_judged` says why):
it breaks a drift streak and counts as neither input nor output drift; the
latency rule still sees it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum


class Action(StrEnum):
    NONE = "none"
    REOPTIMISE = "reoptimise"
    NEEDS_RETRAINING = "needs-retraining"


class Reason(StrEnum):
    STABLE = "stable"
    DATA_DRIFT = "data-drift"
    LATENCY = "latency-slo"
    CONCEPT_DRIFT = "concept-drift"
    NOT_JUDGED = "not-judged"
    COOLDOWN = "cooldown"
    RATE_LIMIT = "rate-limit"
    ALERT = "alert"
    MANUAL = "manual"


@dataclass(frozen=True)
class PolicyConfig:
    """Thresholds of the closed loop.

    Attributes:
        input_drift_threshold: share of drifted input features (a window's `share_drifted`) from
            which the window counts as input drift: the policy's own threshold, not the drift
            report's dataset rule (`monitoring.drift.DATASET_DRIFT_THRESHOLD`).
        drift_windows: consecutive drifted windows before acting.
        latency_slo_ms: p95 latency objective; None disables the latency rule.
        latency_windows: consecutive windows over the SLO before acting.
        cooldown_s: no new run this soon after the last one.
        max_runs_per_hour: cap on runs in any sliding hour.
    """

    input_drift_threshold: float = 0.3
    drift_windows: int = 3
    latency_slo_ms: float | None = None
    latency_windows: int = 3
    cooldown_s: float = 1800.0
    max_runs_per_hour: int = 2

    def __post_init__(self) -> None:
        if not 0 < self.input_drift_threshold <= 1:
            raise ValueError(f"input_drift_threshold must be in (0, 1], got {self.input_drift_threshold}")
        if self.drift_windows < 1 or self.latency_windows < 1:
            raise ValueError("window counts must be at least 1")
        if self.cooldown_s < 0 or self.max_runs_per_hour < 1:
            raise ValueError("cooldown_s must be >= 0 and max_runs_per_hour >= 1")


@dataclass(frozen=True)
class WindowState:
    """What one evaluated window of live traffic showed.

    `share_drifted` is the measured share of drifted input features (the drift report's);
    `not_judged` says why the window got no drift verdict (then the drift fields mean nothing);
    `distinct_inputs` is how many distinct inputs it held (None: not counted)."""

    share_drifted: float = 0.0
    embedding_drift: bool = False
    prediction_drift: bool = False
    latency_p95_ms: float | None = None
    distinct_inputs: int | None = None
    not_judged: str | None = None


def distinct_rule(distinct_inputs: int, min_distinct: int) -> str | None:
    """Why a window of `distinct_inputs` distinct inputs gets no drift verdict, or None when it is judged."""
    if distinct_inputs >= min_distinct:
        return None
    plural = "input" if distinct_inputs == 1 else "inputs"
    return f"window has {distinct_inputs} distinct {plural}; at least {min_distinct} needed"


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: Reason
    detail: str


def _input_drifted(window: WindowState, config: PolicyConfig) -> bool:
    judged = window.not_judged is None
    return judged and (window.share_drifted >= config.input_drift_threshold or window.embedding_drift)


def _concept_drifted(window: WindowState, config: PolicyConfig) -> bool:
    judged = window.not_judged is None
    return judged and window.prediction_drift and not _input_drifted(window, config)


def _last(windows: Sequence[WindowState], count: int) -> Sequence[WindowState] | None:
    return windows[-count:] if len(windows) >= count else None


def _throttled(runs: Sequence[float], now: float, config: PolicyConfig) -> Decision | None:
    if runs and now - max(runs) < config.cooldown_s:
        wait = config.cooldown_s - (now - max(runs))
        return Decision(
            Action.NONE, Reason.COOLDOWN, f"last run {now - max(runs):.0f} s ago; cooldown {wait:.0f} s left"
        )
    recent = [t for t in runs if now - t < 3600]
    if len(recent) >= config.max_runs_per_hour:
        return Decision(
            Action.NONE,
            Reason.RATE_LIMIT,
            f"{len(recent)} runs in the last hour (cap {config.max_runs_per_hour})",
        )
    return None


def decide(
    windows: Sequence[WindowState],
    runs: Sequence[float],
    now: float,
    config: PolicyConfig,
    reoptimised: bool = False,
) -> Decision:
    """Decide from the windows since the last finished run (oldest first) and past run start times.

    `reoptimised` says a run promoted a rebuild of this model: if inputs still drift after it,
    the reference itself is out of date and only retraining on recent data helps.
    """
    drifted = _last(windows, config.drift_windows)
    wanted: Decision | None = None
    if drifted and all(_input_drifted(w, config) for w in drifted):
        share = drifted[-1].share_drifted
        if reoptimised:
            detail = f"input drift persists after re-optimisation (share {share:.2f}): retrain on recent data"
            return Decision(Action.NEEDS_RETRAINING, Reason.DATA_DRIFT, detail)
        wanted = Decision(
            Action.REOPTIMISE,
            Reason.DATA_DRIFT,
            f"input drift for {len(drifted)} windows (share {share:.2f})",
        )
    elif drifted and all(_concept_drifted(w, config) for w in drifted):
        detail = f"outputs drifted for {len(drifted)} windows while inputs did not: retrain the model"
        return Decision(Action.NEEDS_RETRAINING, Reason.CONCEPT_DRIFT, detail)
    slow = _last(windows, config.latency_windows)
    if wanted is None and config.latency_slo_ms is not None and slow:
        p95s = [w.latency_p95_ms for w in slow]
        if all(p is not None and p > config.latency_slo_ms for p in p95s):
            wanted = Decision(
                Action.REOPTIMISE,
                Reason.LATENCY,
                f"p95 over {config.latency_slo_ms} ms for {len(slow)} windows",
            )
    if wanted is None and windows and windows[-1].not_judged is not None:
        return Decision(Action.NONE, Reason.NOT_JUDGED, f"drift not judged: {windows[-1].not_judged}")
    if wanted is None:
        return Decision(Action.NONE, Reason.STABLE, "no rule fired")
    return _throttled(runs, now, config) or wanted
