"""Pure choice of the winner, and the Pareto front. No I/O, no measuring.

The winner is the fastest variant (p50 latency at batch 1) whose quality stays
inside the budget and whose size fits the profile and the constraints; variants
within `latency_tolerance` of the fastest count as tied and the smallest wins. Every
other variant gets the list of constraints it failed, so a report can say why.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from optimise.errors import OptimiseError
from optimise.types import Constraints, HardwareProfile, QualityMetric, Variant, VariantMetrics


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
    elif metrics.quality < constraints.min_cosine:
        failed.append(f"mean cosine {metrics.quality:.4f} < {constraints.min_cosine:.4f}")
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


def _fastest_then_smallest(feasible: Sequence[Variant], tolerance: float) -> Variant:
    """Latency gaps under the tolerance are measurement noise, not speed: prefer the smaller file."""

    def p50(v: Variant) -> float:
        assert v.metrics is not None
        return v.metrics.latency_p50_ms

    best = min(p50(v) for v in feasible)
    tied = [v for v in feasible if p50(v) <= best * (1 + tolerance)]
    return min(tied, key=lambda v: (v.metrics.size_bytes if v.metrics else 0, p50(v)))


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
    winner = _fastest_then_smallest(feasible, constraints.latency_tolerance)
    return Selection(winner=winner, verdicts=verdicts, pareto_ids=pareto_front(measured))
