"""The build report: a Markdown table of every candidate and a Pareto-front plot."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from optimise.serving_search import best_of, trials_of
from optimise.types import QualityMetric, Variant, VariantMetrics

if TYPE_CHECKING:
    from optimise.build import BuildResult

REPORT_NAME = "report.md"
PLOT_NAME = "pareto.png"


def _quality_text(variant: Variant) -> str:
    assert variant.metrics is not None
    return quality_text(variant.metrics)


def quality_text(m: VariantMetrics) -> str:
    """Accuracy in percent, or mean cosine (min; the weakest sequence length) to the reference."""
    if m.quality_metric is QualityMetric.ACCURACY:
        return f"{m.quality * 100:.2f} %"
    text = f"{m.quality:.4f} (min {m.quality_min:.4f}"
    if m.length_cosine_min is not None:
        text += f"; {m.length_cosine_min:.4f} at {m.length_cosine_min_at} tokens, the weakest length"
    return text + ")"


def metrics_lines(m: VariantMetrics) -> list[str]:
    """One variant's measurements as `leanserve models show` prints them: latency (ms, the p50's spread
    over the measurement rounds), throughput (items/s), size (MB), quality (`quality_text`, recall@10)."""
    rounds = len(m.latency_p50_rounds_ms)
    spread = f", spread {m.latency_p50_spread_ms:.3f} ms over {rounds} rounds" if rounds > 1 else ""
    recall = "" if m.recall_at_10 is None else f", recall@10 {m.recall_at_10:.3f}"
    return [
        f"latency: p50 {m.latency_p50_ms:.3f} ms{spread}; p95 {m.latency_p95_ms:.3f} ms",
        f"throughput: {m.throughput_per_s:,.0f} items/s",
        f"size: {m.size_bytes / 1e6:.2f} MB ({m.compressed_size_bytes / 1e6:.2f} MB compressed)",
        f"quality: {quality_text(m)}{recall}",
        f"built in {m.build_seconds:.1f} s",
    ]


def candidate_rows(result: BuildResult) -> list[list[str]]:
    """One row per measured variant, fastest first: the same rows feed the report and the CLI table."""
    reference = result.variants[0].metrics
    assert reference is not None
    rows = []
    for v in sorted(result.variants, key=lambda v: v.metrics.latency_p50_ms if v.metrics else 0.0):
        m = v.metrics
        assert m is not None
        verdict = result.selection.verdicts[v.id]
        status = (
            "selected"
            if v.id == result.winner.id
            else ("ok" if verdict.feasible else "; ".join(verdict.failed))
        )
        rows.append(
            [
                v.id,
                format_and_runtime(v),
                v.describe(),
                f"{m.latency_p50_ms:.2f}",
                f"{m.latency_p95_ms:.2f}",
                f"{m.throughput_per_s:.0f}",
                f"{m.size_bytes / 1e6:.2f}",
                f"{reference.latency_p50_ms / m.latency_p50_ms:.2f}x",
                f"{reference.size_bytes / m.size_bytes:.2f}x",
                _quality_text(v),
                "-" if m.recall_at_10 is None else f"{m.recall_at_10:.3f}",
                {True: "yes", False: "no", None: "-"}[v.batch_invariant],
                f"{m.build_seconds:.1f}",
                "yes" if v.id in result.selection.pareto_ids else "",
                status,
            ]
        )
    return rows


def format_and_runtime(variant: Variant) -> str:
    """'tflite on litert', 'onnx on onnxruntime'; one word where the two are named alike (openvino)."""
    if variant.format == variant.runtime:
        return variant.runtime
    return f"{variant.format} on {variant.runtime}"


HEADERS = [
    "id", "format, runtime", "passes", "p50 ms", "p95 ms", "items/s", "MB", "speed-up", "smaller", "quality",
    "recall@10", "batchable", "build s", "Pareto", "verdict",
]  # fmt: skip


def runtime_rows(result: BuildResult) -> list[list[str]]:
    """Per runtime, its fastest variant inside the constraints: the runtimes side by side."""
    reference = result.variants[0].metrics
    assert reference is not None
    rows = []
    for runtime in dict.fromkeys(v.runtime for v in result.variants):
        feasible = [
            v
            for v in result.variants
            if v.runtime == runtime and v.metrics and result.selection.verdicts[v.id].feasible
        ]
        if not feasible:
            label = format_and_runtime(next(v for v in result.variants if v.runtime == runtime))
            rows.append([label, "none inside the constraints", "", "", "", "", ""])
            continue
        best = min(feasible, key=lambda v: v.metrics.latency_p50_ms if v.metrics else 0.0)
        m = best.metrics
        assert m is not None
        rows.append(
            [
                format_and_runtime(best),
                f"{best.id} ({best.describe()})",
                f"{m.latency_p50_ms:.2f}",
                f"{reference.latency_p50_ms / m.latency_p50_ms:.2f}x",
                f"{m.throughput_per_s:.0f}",
                f"{m.size_bytes / 1e6:.2f}",
                _quality_text(best),
            ]
        )
    return rows


RUNTIME_HEADERS = [
    "format, runtime",
    "fastest inside the constraints",
    "p50 ms",
    "speed-up",
    "items/s",
    "MB",
    "quality",
]


def write_plot(result: BuildResult, target: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display on servers
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    for v in result.variants:
        m = v.metrics
        assert m is not None
        on_front = v.id in result.selection.pareto_ids
        size = 30 + 400 * m.size_bytes / max(x.metrics.size_bytes for x in result.variants if x.metrics)
        ax.scatter(m.latency_p50_ms, m.quality, s=size, alpha=0.7, c="tab:orange" if on_front else "tab:gray")
        ax.annotate(v.id[:6], (m.latency_p50_ms, m.quality), fontsize=6)
    w = result.winner.metrics
    assert w is not None
    ax.scatter(w.latency_p50_ms, w.quality, marker="*", s=300, c="tab:red", label="selected")
    ax.set_xlabel("p50 latency, batch 1 (ms)")
    ax.set_ylabel(result.reference.metric.value)
    ax.set_title(f"{result.bundle.name} on {result.profile.name}: orange = Pareto front, marker area = size")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(target)
    plt.close(fig)


SERVING_HEADERS = [
    "variant",
    "threads",
    "parallel",
    "batch rows",
    "wait ms",
    "req/s",
    "p50 ms",
    "p99 ms",
    "choice",
]


def serving_rows(result: BuildResult) -> list[list[str]]:
    """The serving stage's variant x settings table, each variant's trials most requests/s first;
    the last column marks the stored variant's chosen settings and each variant's best."""
    choice = result.serving
    if choice is None:
        return []
    rows = []
    for variant_id in dict.fromkeys(t.variant_id for t in choice.trials):
        trials = sorted(trials_of(choice.trials, variant_id), key=lambda t: -t.requests_per_s)
        best = best_of(trials, choice)
        for trial in trials:
            s = trial.settings
            chosen = variant_id == choice.variant_id and s == choice.settings
            mark = "chosen" if chosen else ("best of variant" if trial is best else "")
            if trial.errors:
                mark = f"{trial.errors} errors"
            rows.append(
                [
                    variant_id,
                    str(s.threads),
                    str(s.parallel_sessions),
                    str(s.batch_max_rows) if s.batching else "-",
                    f"{s.batch_wait_ms:g}" if s.batching else "-",
                    f"{trial.requests_per_s:,.0f}",
                    f"{trial.latency_p50_ms:.1f}",
                    f"{trial.latency_p99_ms:.1f}",
                    mark,
                ]
            )
    return rows


def _serving_section(result: BuildResult) -> list[str]:
    choice = result.serving
    if choice is None:
        return []
    bound = f"p99 <= {choice.p99_bound_ms:g} ms" if choice.p99_bound_ms is not None else "no p99 bound"
    return [
        "## Serving settings",
        "",
        f"Each row: {choice.concurrency} clients in this process sending one-row requests back to back "
        f"for {choice.seconds_per_trial:g} s through the session the service runs, each with "
        f"{choice.request_cpu_ms:g} ms of the server's own Python work around its call; batches in parallel "
        f"up to the threads less {choice.request_cores} core(s) left to the request path ({bound}). Chosen for "
        f"{choice.variant_id}: {choice.settings.describe()}, {choice.reason}.",
        "",
        "| " + " | ".join(SERVING_HEADERS) + " |",
        "|" + "---|" * len(SERVING_HEADERS),
        *("| " + " | ".join(row) + " |" for row in serving_rows(result)),
        "",
    ]


def write_report(result: BuildResult, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    write_plot(result, directory / PLOT_NAME)
    w = result.winner
    lines = [
        f"# {result.bundle.name}: optimisation report ({result.profile.name} profile)",
        "",
        f"Selected **{w.id}** ({w.describe()}): {_quality_text(w)}; reference (PyTorch FP32) "
        f"{result.reference.metric.value} {result.reference.value:.4f}.",
        f"Profile: {result.profile.description}. Constraints: {result.constraints}.",
        f"Build took {result.seconds:.0f} s; speed-up and size ratios are against the FP32 ONNX export, "
        "all variants measured interleaved in one run.",
        "",
        f"Why it won: {result.selection.reason}.",
        "",
        "| " + " | ".join(HEADERS) + " |",
        "|" + "---|" * len(HEADERS),
        *("| " + " | ".join(row) + " |" for row in candidate_rows(result)),
        "",
        "recall@10: share of each evaluation sample's 10 nearest neighbours (cosine) that FP32 also "
        "finds; batchable: a row gets the same answer alone and in a padded batch (measured), so the "
        "service may batch it.",
        "",
        "## Runtimes side by side",
        "",
        "| " + " | ".join(RUNTIME_HEADERS) + " |",
        "|" + "---|" * len(RUNTIME_HEADERS),
        *("| " + " | ".join(row) + " |" for row in runtime_rows(result)),
        "",
        *(f"- {note}" for note in result.profile.runtime_notes),
        "",
        f"![Pareto front]({PLOT_NAME})",
        "",
        *_serving_section(result),
    ]
    if result.failures:
        lines += ["## Dropped candidates", ""]
        lines += [
            f"- {' -> '.join(p.label() for p in c.recipe.passes)}: {c.failure}" for c in result.failures
        ]
    target = directory / REPORT_NAME
    target.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return target
