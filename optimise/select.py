"""Pure choice of the winner, and the Pareto front. No I/O, no measuring.

The winner is the fastest variant (p50 latency at batch 1) whose quality stays
inside the budget and whose size fits the profile and the constraints. A slower
variant counts as tied with the fastest when its p50 is within the tie margin:
the largest of `latency_tolerance` (a share of the fastest p50),
`latency_tolerance_ms` (a gap no served request notices) and the run-to-run
noise of the gap itself (the standard error of the two variants' round-by-round p50
differences, less the one round farthest from the others once there are five: a gap the
measurement cannot resolve). Among the tied the
smallest wins; sizes within 1 % of the smallest count as equal, and then the faster wins. `Selection.reason` says in one sentence why the
winner won; every other variant gets the list of constraints it failed, so a
report can say why not.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from optimise.errors import OptimiseError
from optimise.types import Constraints, HardwareProfile, QualityMetric, Variant, VariantMetrics

MIN_PAIRED_ROUNDS = 3  # fewer rounds give no standard error worth the name
TRIM_FROM_ROUNDS = 5  # from this many rounds on, the one odd round is left out of the noise
SIZE_TOLERANCE = 0.01
"""Tied variants whose sizes differ by less than this share count as the same size."""


class NoFeasibleVariant(OptimiseError):
    """Every variant failed a constraint: the constraints cannot be met."""


@dataclass(frozen=True)
class Verdict:
    variant_id: str
    failed: tuple[str, ...]

    @property
    def feasible(self) -> bool:
        return not self.failed


@dataclass(frozen=True)
class Selection:
    winner: Variant
    verdicts: dict[str, Verdict]
    pareto_ids: frozenset[str]
    reason: str
    """One sentence on why the winner won: fastest outright, or smallest within the tie margin."""


def _mb(size: int) -> str:
    return f"{size / 1e6:.2f} MB"


def check(
    metrics: VariantMetrics, reference_quality: float, constraints: Constraints, profile: HardwareProfile
) -> tuple[str, ...]:
    """The constraints `metrics` fails, each as a short sentence; empty when it passes."""
    failed = []
    if metrics.quality_metric is QualityMetric.ACCURACY:
        drop = reference_quality - metrics.quality
        if drop > constraints.max_accuracy_drop + 1e-12:
            failed.append(f"accuracy drop {drop * 100:.2f} pt > {constraints.max_accuracy_drop * 100:.2f} pt")
    else:
        if metrics.quality < constraints.min_cosine:
            failed.append(f"mean cosine {metrics.quality:.4f} < {constraints.min_cosine:.4f}")
        weakest = metrics.length_cosine_min
        if weakest is not None and weakest < constraints.min_length_cosine:
            failed.append(
                f"cosine {weakest:.4f} at {metrics.length_cosine_min_at} tokens < "
                f"{constraints.min_length_cosine:.4f} at any one length"
            )
    for limit, what in (
        (constraints.max_size_bytes, "size limit"),
        (profile.max_size_bytes, "profile size budget"),
    ):
        if limit is not None and metrics.size_bytes > limit:
            failed.append(f"size {_mb(metrics.size_bytes)} > {what} {_mb(limit)}")
    if constraints.latency_slo_ms is not None and metrics.latency_p50_ms > constraints.latency_slo_ms:
        failed.append(f"p50 {metrics.latency_p50_ms:.2f} ms > SLO {constraints.latency_slo_ms:.2f} ms")
    return tuple(failed)


def pareto_front(variants: Sequence[Variant]) -> frozenset[str]:
    """Variants no other variant beats on latency, quality and size at once."""

    def key(v: Variant) -> tuple[float, float, float]:
        m = v.metrics
        assert m is not None
        return (m.latency_p50_ms, -m.quality, float(m.size_bytes))

    measured = [v for v in variants if v.metrics is not None]
    front = set()
    for v in measured:
        kv = key(v)
        dominated = any(
            all(a <= b for a, b in zip(key(o), kv, strict=True)) and key(o) != kv
            for o in measured
            if o is not v
        )
        if not dominated:
            front.add(v.id)
    return frozenset(front)


def _p50(v: Variant) -> float:
    assert v.metrics is not None  # only measured variants reach the choice
    return v.metrics.latency_p50_ms


def _spread(v: Variant) -> float:
    assert v.metrics is not None
    return v.metrics.latency_p50_spread_ms


def _size(v: Variant) -> int:
    assert v.metrics is not None
    return v.metrics.size_bytes


def _bytes(size: int) -> str:
    return _mb(size) if size >= 1e6 else f"{size / 1e3:.1f} kB"


def _noise(v: Variant, fastest: Variant) -> float:
    """How uncertain the gap between `v`'s and the fastest's p50 is (ms): the standard error of
    their round-by-round p50 differences.

    Measured in the same interleaved rounds, the two share the machine's noise, and the differences
    cancel it: a busy neighbour that slows a whole round moves both p50s alike (a 3 ms spread of each
    on a 6 ms p50 was seen here) and is no reason to call a consistently 50 % slower variant equally
    fast. The question is whether the gap is measured, so the error of its estimate over n rounds
    (standard deviation / sqrt(n)) counts, not how much single rounds vary (the interquartile range
    of the differences tied a variant slower in every round on a busy machine). Without shared rounds
    (older manifests), the larger of the two p50 spreads."""
    assert v.metrics is not None and fastest.metrics is not None
    mine, theirs = v.metrics.latency_p50_rounds_ms, fastest.metrics.latency_p50_rounds_ms
    if len(mine) >= MIN_PAIRED_ROUNDS and len(mine) == len(theirs):
        gaps = _without_the_odd_round(np.subtract(mine, theirs))
        return float(np.std(gaps, ddof=1) / np.sqrt(len(gaps)))
    return max(_spread(v), _spread(fastest))


def _without_the_odd_round(gaps: np.ndarray) -> np.ndarray:
    """The gaps less the one farthest from their median, when there are at least `TRIM_FROM_ROUNDS`:
    one cold or disturbed round (a fresh clone's build measured a variant at 45.9 ms once, then ~6 ms
    in four rounds) must not make a gap measured in every other round look like noise."""
    if len(gaps) < TRIM_FROM_ROUNDS:
        return gaps
    return np.delete(gaps, int(np.argmax(np.abs(gaps - np.median(gaps)))))


def _tie_margin(v: Variant, fastest: Variant, constraints: Constraints) -> float:
    """How far (ms) `v`'s p50 may sit above the fastest's and still count as equally fast."""
    return max(
        constraints.latency_tolerance * _p50(fastest),
        constraints.latency_tolerance_ms,  # below this no served request notices the difference
        _noise(v, fastest),  # a gap that moves this much between rounds is not a measured difference
    )


def _fastest_then_smallest(feasible: Sequence[Variant], constraints: Constraints) -> tuple[Variant, str]:
    """The winner among `feasible` (non-empty, all measured) and the sentence saying why.

    A latency gap inside the tie margin is noise or imperceptible, not speed: prefer the smaller file.
    """
    fastest = min(feasible, key=lambda v: (_p50(v), _size(v)))
    tied = [v for v in feasible if _p50(v) - _p50(fastest) <= _tie_margin(v, fastest, constraints)]
    smallest = min(_size(v) for v in tied)
    # Sizes within SIZE_TOLERANCE are the same size (e.g. two int8 files differing by a few zero
    # points): then the faster of them wins, not a few kilobytes.
    as_small = [v for v in tied if _size(v) <= smallest * (1 + SIZE_TOLERANCE)]
    winner = min(as_small, key=lambda v: (_p50(v), _size(v)))
    # The margin a sentence quotes is one gap's: the winner's to the fastest, or where the fastest won,
    # the nearest other variant's (the fastest's gap to itself has no noise to quote).
    others = [v for v in feasible if v is not fastest]
    quoted = winner if winner is not fastest or not others else min(others, key=_p50)
    return winner, _reason(winner, fastest, tied, constraints, quoted)


def _reason(
    winner: Variant, fastest: Variant, tied: Sequence[Variant], constraints: Constraints, quoted: Variant
) -> str:
    best = _p50(fastest)
    margin = (
        f"{_tie_margin(quoted, fastest, constraints):.3f} ms (the larger of "
        f"{constraints.latency_tolerance * 100:g} % of {best:.3f} ms, {constraints.latency_tolerance_ms:.3f} ms "
        f"and the run-to-run noise of the gap {_noise(quoted, fastest):.3f} ms)"
    )
    if len(tied) == 1:
        return f"fastest feasible variant (p50 {best:.3f} ms); no other within the tie margin of {margin}"
    if _p50(winner) == best:
        return (
            f"fastest feasible variant (p50 {best:.3f} ms) and as small as any ({_bytes(_size(winner))}, "
            f"within {SIZE_TOLERANCE * 100:g} %) of the {len(tied)} within the tie margin of {margin}"
        )
    faster = sum(1 for v in tied if v is not winner and _p50(v) <= _p50(winner))
    return (
        f"tied with {faster} faster-or-equal variant{'s' if faster != 1 else ''} within {margin}; "
        f"smallest of them ({_bytes(_size(winner))} vs {_bytes(_size(fastest))} for the fastest, "
        f"p50 {_p50(winner):.3f} ms vs {best:.3f} ms)"
    )


def select(
    variants: Sequence[Variant], reference_quality: float, constraints: Constraints, profile: HardwareProfile
) -> Selection:
    measured = [v for v in variants if v.metrics is not None]
    verdicts = {
        v.id: Verdict(v.id, check(v.metrics, reference_quality, constraints, profile))  # type: ignore[arg-type]
        for v in measured
    }
    feasible = [v for v in measured if verdicts[v.id].feasible]
    if not feasible:
        reasons = "; ".join(f"{v.describe()}: {', '.join(verdicts[v.id].failed)}" for v in measured[:3])
        raise NoFeasibleVariant(f"no variant meets the constraints ({reasons})")
    winner, reason = _fastest_then_smallest(feasible, constraints)
    return Selection(winner=winner, verdicts=verdicts, pareto_ids=pareto_front(measured), reason=reason)
