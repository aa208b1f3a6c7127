from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from optimise.errors import OptimiseError
from optimise.select import NoFeasibleVariant, check, pareto_front, select
from optimise.types import (
    Constraints,
    HardwareProfile,
    PassSpec,
    Precision,
    QualityMetric,
    Variant,
    VariantMetrics,
)

REFERENCE = 0.95  # FP32 accuracy of the imaginary model
MB = 1_000_000

PROFILE = HardwareProfile(
    name="test",
    description="test profile",
    execution_providers=("CPUExecutionProvider",),
    precisions=(Precision.FP32, Precision.INT8_DYNAMIC),
    intra_op_threads=1,
)


def metrics(
    latency: float = 1.0,
    quality: float = REFERENCE,
    size: int = 4 * MB,
    metric: QualityMetric = QualityMetric.ACCURACY,
    spread: float = 0.0,
) -> VariantMetrics:
    return VariantMetrics(
        latency_p50_ms=latency,
        latency_p95_ms=latency * 1.5,
        throughput_per_s=1000.0 / latency,
        size_bytes=size,
        compressed_size_bytes=size // 2,
        quality=quality,
        quality_min=quality if metric is QualityMetric.COSINE else None,
        quality_metric=metric,
        build_seconds=0.1,
        latency_p50_spread_ms=spread,
    )


def variant(vid: str, m: VariantMetrics | None, pass_name: str = "quantise_dynamic") -> Variant:
    return Variant(
        id=vid,
        parent_id=None,
        passes=(PassSpec("export_onnx"), PassSpec(pass_name)),
        artefact=Path(f"/nowhere/{vid}.onnx"),
        precision=Precision.INT8_DYNAMIC,
        intra_op_threads=1,
        metrics=m,
    )


# --- check -----------------------------------------------------------------


def test_check_passes_a_variant_inside_every_limit() -> None:
    assert check(metrics(quality=REFERENCE - 0.004), REFERENCE, Constraints(), PROFILE) == ()


@pytest.mark.parametrize(("reference", "quality"), [(1.0, 0.995), (0.9, 0.895), (0.95, 0.945)])
def test_check_accepts_a_drop_exactly_on_the_budget(reference: float, quality: float) -> None:
    # 0.5 pt in floating point is not exact (0.9 - 0.895 = 0.0050000000000000044): it must still pass.
    assert check(metrics(quality=quality), reference, Constraints(max_accuracy_drop=0.005), PROFILE) == ()


def test_check_rejects_a_drop_over_the_budget() -> None:
    failed = check(metrics(quality=REFERENCE - 0.006), REFERENCE, Constraints(), PROFILE)
    assert len(failed) == 1
    assert "accuracy drop" in failed[0]
    assert "0.60 pt > 0.50 pt" in failed[0]


def test_check_ignores_a_quality_gain() -> None:
    assert check(metrics(quality=REFERENCE + 0.03), REFERENCE, Constraints(), PROFILE) == ()


def test_check_rejects_mean_cosine_under_the_minimum() -> None:
    low = metrics(quality=0.98, metric=QualityMetric.COSINE)
    failed = check(low, 1.0, Constraints(min_cosine=0.99), PROFILE)
    assert len(failed) == 1 and "cosine" in failed[0] and "0.9800 < 0.9900" in failed[0]
    ok = metrics(quality=0.99, metric=QualityMetric.COSINE)
    assert check(ok, 1.0, Constraints(min_cosine=0.99), PROFILE) == ()


def test_check_rejects_a_text_variant_that_fails_at_one_sequence_length() -> None:
    # The mean over natural texts holds; one length takes a wrong kernel path (OpenVINO bf16 + int8).
    broken = replace(
        metrics(quality=0.995, metric=QualityMetric.COSINE), length_cosine_min=0.79, length_cosine_min_at=32
    )
    failed = check(broken, 1.0, Constraints(), PROFILE)
    assert failed == ("cosine 0.7900 at 32 tokens < 0.9000 at any one length",)
    fine = replace(broken, length_cosine_min=0.985)
    assert check(fine, 1.0, Constraints(), PROFILE) == ()
    assert check(broken, 1.0, Constraints(min_length_cosine=0.7), PROFILE) == ()
    with pytest.raises(ValueError, match="min_length_cosine"):
        Constraints(min_length_cosine=1.5)


def test_cosine_metric_is_not_judged_by_the_accuracy_budget() -> None:
    # A cosine of 0.992 is a "drop" of 0.8 pt from 1.0, which the accuracy budget would reject.
    m = metrics(quality=0.992, metric=QualityMetric.COSINE)
    assert check(m, 1.0, Constraints(max_accuracy_drop=0.005, min_cosine=0.99), PROFILE) == ()


def test_check_rejects_a_variant_over_the_size_limit() -> None:
    failed = check(metrics(size=5 * MB), REFERENCE, Constraints(max_size_bytes=4 * MB), PROFILE)
    assert failed == ("size 5.00 MB > size limit 4.00 MB",)
    assert check(metrics(size=4 * MB), REFERENCE, Constraints(max_size_bytes=4 * MB), PROFILE) == ()


def test_check_rejects_a_variant_over_the_profile_size_budget() -> None:
    small = replace(PROFILE, max_size_bytes=2 * MB)
    failed = check(metrics(size=3 * MB), REFERENCE, Constraints(), small)
    assert failed == ("size 3.00 MB > profile size budget 2.00 MB",)


def test_check_rejects_a_variant_over_the_latency_slo() -> None:
    failed = check(metrics(latency=12.0), REFERENCE, Constraints(latency_slo_ms=10.0), PROFILE)
    assert failed == ("p50 12.00 ms > SLO 10.00 ms",)


def test_check_lists_every_failed_constraint() -> None:
    bad = metrics(quality=REFERENCE - 0.1, size=9 * MB, latency=50.0)
    constraints = Constraints(max_size_bytes=8 * MB, latency_slo_ms=10.0)
    failed = check(bad, REFERENCE, constraints, replace(PROFILE, max_size_bytes=4 * MB))
    assert len(failed) == 4
    assert [f.split()[0] for f in failed] == ["accuracy", "size", "size", "p50"]


# --- select ----------------------------------------------------------------


def test_the_fastest_feasible_variant_wins() -> None:
    variants = [
        variant("slow", metrics(latency=5.0)),
        variant("fast", metrics(latency=2.0)),
        variant("mid", metrics(latency=3.0)),
    ]
    selection = select(variants, REFERENCE, Constraints(), PROFILE)
    assert selection.winner.id == "fast"
    assert all(v.feasible for v in selection.verdicts.values())
    assert set(selection.verdicts) == {"slow", "fast", "mid"}


@pytest.mark.parametrize(
    ("too_fast", "constraints", "profile", "reason"),
    [
        (metrics(latency=1.0, quality=REFERENCE - 0.0051), Constraints(), PROFILE, "accuracy drop"),
        (
            metrics(latency=1.0, quality=0.97, metric=QualityMetric.COSINE),
            Constraints(min_cosine=0.99),
            PROFILE,
            "mean cosine",
        ),
        (metrics(latency=1.0, size=10 * MB), Constraints(max_size_bytes=8 * MB), PROFILE, "size limit"),
        (
            metrics(latency=1.0, size=10 * MB),
            Constraints(),
            replace(PROFILE, max_size_bytes=8 * MB),
            "profile size budget",
        ),
    ],
    ids=["accuracy", "cosine", "size-limit", "profile-budget"],
)
def test_a_faster_variant_that_breaks_a_constraint_is_rejected(
    too_fast: VariantMetrics, constraints: Constraints, profile: HardwareProfile, reason: str
) -> None:
    ok_metric = too_fast.quality_metric
    ok = metrics(
        latency=4.0, quality=0.995 if ok_metric is QualityMetric.COSINE else REFERENCE, metric=ok_metric
    )
    variants = [variant("ok", ok), variant("bad", too_fast)]
    selection = select(variants, REFERENCE, constraints, profile)
    assert selection.winner.id == "ok"
    verdict = selection.verdicts["bad"]
    assert not verdict.feasible
    assert verdict.variant_id == "bad"
    assert len(verdict.failed) == 1 and reason in verdict.failed[0]
    assert selection.verdicts["ok"].feasible and selection.verdicts["ok"].failed == ()


def test_an_exact_boundary_drop_can_win() -> None:
    variants = [
        variant("fp32", metrics(latency=4.0, quality=1.0)),
        variant("int8", metrics(latency=1.0, quality=0.995)),
    ]
    assert select(variants, 1.0, Constraints(max_accuracy_drop=0.005), PROFILE).winner.id == "int8"


def test_equal_latency_prefers_the_smaller_variant() -> None:
    variants = [
        variant("big", metrics(latency=2.0, size=8 * MB)),
        variant("small", metrics(latency=2.0, size=2 * MB)),
    ]
    assert select(variants, REFERENCE, Constraints(), PROFILE).winner.id == "small"


def test_latency_within_the_tolerance_counts_as_a_tie_and_the_smaller_wins() -> None:
    fast_big = variant("fast-big", metrics(latency=1.00, size=8 * MB))
    near_small = variant("near-small", metrics(latency=1.04, size=2 * MB))
    slow_small = variant("slow-small", metrics(latency=1.10, size=1 * MB))
    tolerant = Constraints(latency_tolerance=0.05, latency_tolerance_ms=0.0)
    assert select([fast_big, near_small], REFERENCE, tolerant, PROFILE).winner.id == "near-small"
    assert select([fast_big, slow_small], REFERENCE, tolerant, PROFILE).winner.id == "fast-big"
    strict = Constraints(latency_tolerance=0.0, latency_tolerance_ms=0.0)
    assert select([fast_big, near_small], REFERENCE, strict, PROFILE).winner.id == "fast-big"


def test_digits_the_much_smaller_variant_wins_a_gap_of_a_hundredth_of_a_millisecond() -> None:
    # A digits build once picked a 3.9x-smaller variant over a 12.4x-smaller one at equal accuracy
    # because it measured 0.020 ms against 0.030 ms: 50 % slower, but 10 us no request notices.
    fp32 = 1_240_000
    variants = [
        variant("fp32", metrics(latency=0.045, size=fp32, spread=0.002)),
        variant("3.9x", metrics(latency=0.020, size=round(fp32 / 3.9), spread=0.001)),
        variant("12.4x", metrics(latency=0.030, size=round(fp32 / 12.4), spread=0.002)),
    ]
    selection = select(variants, REFERENCE, Constraints(), PROFILE)
    assert selection.winner.id == "12.4x"
    assert selection.reason == (
        "tied with 1 faster-or-equal variant within 0.050 ms (the larger of 10 % of 0.020 ms, 0.050 ms "
        "and the run-to-run noise of the gap 0.002 ms); smallest of them (100.0 kB vs 317.9 kB for the fastest, "
        "p50 0.030 ms vs 0.020 ms)"
    )
    # The relative rule alone (what chose "3.9x" before) does not tie them.
    relative_only = Constraints(latency_tolerance=0.10, latency_tolerance_ms=0.0)
    assert select(variants, REFERENCE, relative_only, PROFILE).winner.id == "3.9x"


def test_a_variant_30_percent_slower_and_beyond_the_spread_does_not_tie() -> None:
    # The sentence quotes the gap to the nearest other variant (its noise: the larger spread, 0.2 ms),
    # not the fastest's gap to itself.
    fast_big = variant("fast-big", metrics(latency=2.0, size=8 * MB, spread=0.1))
    slow_small = variant("slow-small", metrics(latency=2.6, size=1 * MB, spread=0.2))
    selection = select([fast_big, slow_small], REFERENCE, Constraints(), PROFILE)
    assert selection.winner.id == "fast-big"
    assert selection.reason == (
        "fastest feasible variant (p50 2.000 ms); no other within the tie margin of 0.200 ms "
        "(the larger of 10 % of 2.000 ms, 0.050 ms and the run-to-run noise of the gap 0.200 ms)"
    )


@pytest.mark.parametrize(
    ("fast_spread", "slow_spread", "winner"),
    [(0.05, 0.05, "fast-big"), (0.05, 0.5, "slow-small"), (0.5, 0.05, "slow-small"), (0.39, 0.0, "fast-big")],
    ids=["both-steady", "slow-one-noisy", "fast-one-noisy", "spread-just-short"],
)
def test_the_run_to_run_spread_of_either_variant_widens_the_margin(
    fast_spread: float, slow_spread: float, winner: str
) -> None:
    # 20 % slower: outside the 10 % relative margin, inside a spread of 0.5 ms.
    fast_big = variant("fast-big", metrics(latency=2.0, size=8 * MB, spread=fast_spread))
    slow_small = variant("slow-small", metrics(latency=2.4, size=1 * MB, spread=slow_spread))
    selection = select([fast_big, slow_small], REFERENCE, Constraints(), PROFILE)
    assert selection.winner.id == winner
    if winner == "slow-small":
        assert "within 0.500 ms" in selection.reason and "noise of the gap 0.500 ms" in selection.reason


def test_the_absolute_margin_ties_sub_millisecond_gaps_the_relative_one_would_not() -> None:
    fast_big = variant("fast-big", metrics(latency=0.100, size=4 * MB))
    near_small = variant("near-small", metrics(latency=0.140, size=1 * MB))
    assert select([fast_big, near_small], REFERENCE, Constraints(), PROFILE).winner.id == "near-small"
    tight = Constraints(latency_tolerance_ms=0.03)
    assert select([fast_big, near_small], REFERENCE, tight, PROFILE).winner.id == "fast-big"


def test_among_the_tied_the_smallest_then_the_faster_wins_and_the_reason_counts_them() -> None:
    variants = [
        variant("fastest", metrics(latency=1.00, size=8 * MB)),
        variant("second", metrics(latency=1.02, size=3 * MB)),
        variant("third-slower", metrics(latency=1.06, size=2 * MB)),
        variant("third-faster", metrics(latency=1.05, size=2 * MB)),
        variant("too-slow", metrics(latency=1.20, size=1 * MB)),
    ]
    selection = select(variants, REFERENCE, Constraints(), PROFILE)
    assert selection.winner.id == "third-faster"
    assert selection.reason.startswith("tied with 2 faster-or-equal variants within 0.100 ms")
    assert "(2.00 MB vs 8.00 MB for the fastest, p50 1.050 ms vs 1.000 ms)" in selection.reason


def test_the_fastest_wins_outright_when_it_is_also_the_smallest_of_the_tied() -> None:
    fast_small = variant("fast-small", metrics(latency=1.00, size=1 * MB))
    near_big = variant("near-big", metrics(latency=1.05, size=8 * MB))
    selection = select([fast_small, near_big], REFERENCE, Constraints(), PROFILE)
    assert selection.winner.id == "fast-small"
    assert selection.reason.startswith("fastest feasible variant (p50 1.000 ms) and as small as any (1.00 MB")
    assert "of the 2 within the tie margin of 0.100 ms" in selection.reason


@pytest.mark.parametrize(
    "kwargs",
    [
        {"latency_tolerance": 1.0},
        {"latency_tolerance": -0.1},
        {"latency_tolerance_ms": -0.01},
        {"max_accuracy_drop": 1.5},
        {"min_cosine": 1.1},
        {"max_size_bytes": 0},
        {"latency_slo_ms": 0.0},
    ],
)
def test_constraints_reject_out_of_range_values(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        Constraints(**kwargs)  # type: ignore[arg-type]


def test_unmeasured_variants_are_ignored() -> None:
    variants = [variant("unmeasured", None), variant("measured", metrics(latency=3.0))]
    selection = select(variants, REFERENCE, Constraints(), PROFILE)
    assert selection.winner.id == "measured"
    assert "unmeasured" not in selection.verdicts
    assert "unmeasured" not in selection.pareto_ids


def test_nothing_feasible_raises_naming_the_reason() -> None:
    variants = [
        variant("a", metrics(latency=1.0, quality=REFERENCE - 0.02), pass_name="quantise_static"),
        variant("b", metrics(latency=2.0, size=9 * MB)),
    ]
    with pytest.raises(NoFeasibleVariant) as info:
        select(variants, REFERENCE, Constraints(max_size_bytes=8 * MB), PROFILE)
    assert isinstance(info.value, OptimiseError)
    message = str(info.value)
    assert "no variant meets the constraints" in message
    assert "accuracy drop 2.00 pt > 0.50 pt" in message
    assert "size limit" in message
    assert "quantise_static" in message  # the variant is named by its passes


def test_nothing_measured_raises() -> None:
    with pytest.raises(NoFeasibleVariant):
        select([variant("unmeasured", None)], REFERENCE, Constraints(), PROFILE)


# --- pareto_front ----------------------------------------------------------


def test_a_dominated_variant_is_not_on_the_front() -> None:
    best = variant("best", metrics(latency=1.0, quality=0.95, size=1 * MB))
    worse = variant("worse", metrics(latency=2.0, quality=0.94, size=2 * MB))
    assert pareto_front([best, worse]) == frozenset({"best"})


def test_weakly_dominated_variant_is_not_on_the_front() -> None:
    # Equal on two axes and worse on the third: still dominated.
    best = variant("best", metrics(latency=1.0, quality=0.95, size=1 * MB))
    bigger = variant("bigger", metrics(latency=1.0, quality=0.95, size=2 * MB))
    assert pareto_front([best, bigger]) == frozenset({"best"})


def test_identical_variants_are_both_on_the_front() -> None:
    a = variant("a", metrics(latency=1.0, quality=0.95, size=MB))
    b = variant("b", metrics(latency=1.0, quality=0.95, size=MB))
    assert pareto_front([a, b]) == frozenset({"a", "b"})


def test_a_variant_best_on_one_axis_is_on_the_front() -> None:
    fastest = variant("fastest", metrics(latency=1.0, quality=0.90, size=5 * MB))
    most_accurate = variant("accurate", metrics(latency=5.0, quality=0.99, size=5 * MB))
    smallest = variant("smallest", metrics(latency=5.0, quality=0.90, size=1 * MB))
    dominated = variant("dominated", metrics(latency=6.0, quality=0.89, size=6 * MB))
    front = pareto_front([fastest, most_accurate, smallest, dominated])
    assert front == frozenset({"fastest", "accurate", "smallest"})


def test_front_skips_unmeasured_and_select_reports_it() -> None:
    a = variant("a", metrics(latency=1.0, quality=0.90))
    b = variant("b", metrics(latency=2.0, quality=0.95))
    c = variant("c", metrics(latency=3.0, quality=0.94))
    assert pareto_front([a, b, c, variant("u", None)]) == frozenset({"a", "b"})
    selection = select([a, b, c], 0.95, Constraints(), PROFILE)
    assert selection.pareto_ids == frozenset({"a", "b"})
    assert selection.winner.id == "b"  # "a" is faster but 5 pt below the reference


def test_tied_variants_of_practically_the_same_size_are_decided_by_speed() -> None:
    # Two int8 files 0.1 % apart in size (zero points), 20 % apart in p50 but within the noise margin.
    fast = variant("fast", replace(metrics(latency=6.4, size=23_330_000), latency_p50_spread_ms=2.0))
    slow = variant("slow", replace(metrics(latency=7.8, size=23_310_000), latency_p50_spread_ms=2.0))
    chosen = select([slow, fast], REFERENCE, Constraints(), PROFILE)
    assert chosen.winner.id == "fast"
    assert "as small as any" in chosen.reason


def with_rounds(m: VariantMetrics, rounds: list[float]) -> VariantMetrics:
    spread = float(np.subtract(*np.percentile(rounds, [75, 25])))
    return replace(m, latency_p50_ms=float(np.mean(rounds)), latency_p50_rounds_ms=tuple(rounds),
                   latency_p50_spread_ms=spread)  # fmt: skip


def test_a_busy_machine_moving_both_p50s_alike_does_not_make_a_slower_variant_tie() -> None:
    # Rounds swing by 3 ms for both (a busy neighbour), but the small one is 50 % slower in every round.
    fast = variant("fast-big", with_rounds(metrics(size=90 * MB), [6.0, 9.0, 6.0, 9.0, 6.0]))
    slow = variant("slow-small", with_rounds(metrics(size=23 * MB), [9.0, 12.0, 9.0, 12.0, 9.0]))
    assert fast.metrics is not None and fast.metrics.latency_p50_spread_ms == 3.0  # the old margin
    chosen = select([fast, slow], REFERENCE, Constraints(), PROFILE)
    assert chosen.winner.id == "fast-big"
    assert "noise of the gap 0.000 ms" in chosen.reason


def test_a_gap_that_changes_sign_between_rounds_is_noise() -> None:
    fast = variant("fast-big", with_rounds(metrics(size=90 * MB), [6.0, 9.0, 6.0, 9.0, 6.0]))
    small = variant("small", with_rounds(metrics(size=23 * MB), [9.5, 6.0, 9.5, 6.0, 9.5]))
    assert small.metrics is not None and fast.metrics is not None
    assert small.metrics.latency_p50_ms - fast.metrics.latency_p50_ms > 0.1 * fast.metrics.latency_p50_ms
    assert select([fast, small], REFERENCE, Constraints(), PROFILE).winner.id == "small"


def test_a_gap_measured_over_the_rounds_is_not_noise_even_when_single_rounds_swing() -> None:
    # The build that picked ONNX Runtime over OpenVINO int8: every round ~1.2 ms slower, one round 4 ms.
    fast = variant("openvino", with_rounds(metrics(size=23_330_000), [6.8, 7.0, 7.1, 6.9, 7.3]))
    slow = variant("onnxruntime", with_rounds(metrics(size=22_810_000), [8.0, 8.2, 8.3, 8.1, 11.3]))
    chosen = select([fast, slow], REFERENCE, Constraints(), PROFILE)
    assert chosen.winner.id == "openvino"


def test_one_cold_round_does_not_make_a_gap_of_every_other_round_noise() -> None:
    # A fresh clone's build: ONNX Runtime's first round ran cold (45.9 ms), then ~2 ms slower than
    # OpenVINO int8 in every round; the whole-series error (8 ms) tied them and the smaller file won.
    fast = variant("openvino", with_rounds(metrics(size=23_330_000), [4.3, 4.4, 4.3, 4.2, 4.4]))
    rounds = [45.9, 6.04, 5.86, 6.05, 6.43]
    slow_metrics = replace(
        with_rounds(metrics(size=22_810_000), rounds), latency_p50_ms=float(np.median(rounds))
    )
    slow = variant("onnxruntime", slow_metrics)  # p50 over all rounds: 6.05 ms
    chosen = select([fast, slow], REFERENCE, Constraints(), PROFILE)
    assert chosen.winner.id == "openvino"
