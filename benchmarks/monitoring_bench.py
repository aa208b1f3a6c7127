"""What monitoring costs on the request path: the same server with drift monitoring on and off.

Latency at concurrency 1: an "on" and an "off" server run side by side and requests alternate
between them (on, off / off, on), so a noisy moment hits both alike. Throughput at concurrency 32:
a fresh server per phase (no state carried between phases), on and off alternating within
each round. Medians over rounds, ratios on / off. Also times one drift evaluation of a
1,000-row digits window and a 500-row MiniLM embedding window.

    .venv/bin/python benchmarks/monitoring_bench.py --bentoml-home /tmp/sbench/home [--quick] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere
from benchmarks import serving_bench as sb
from benchmarks._load import CallFactory, Latency, Throughput, oip, paired_latency, rest, throughput

CONCURRENCY = 32
MAX_REQUESTS = 20_000  # more than any phase gets through in its seconds: time ends each phase
MONITORING = {"on": {"LEANSERVE_DRIFT_ENABLED": "true"}, "off": {"LEANSERVE_DRIFT_ENABLED": "false"}}


def drift_timings() -> list[tuple[str, float]]:
    """One evaluation each, after a warm-up call that pays Evidently's import."""
    from sklearn.datasets import load_digits

    from monitoring.drift import ReferenceSample, Window, compute_drift

    rng = np.random.default_rng(0)
    digits = (load_digits().images / 16.0).reshape(-1, 64)
    order = rng.permutation(len(digits))
    reference = ReferenceSample(inputs=digits[order[:700]], outputs=rng.normal(size=(700, 10)), name="digits")
    window = Window(inputs=digits[order[700:1700]], outputs=rng.normal(size=(1000, 10)))
    embeddings = ReferenceSample(outputs=rng.normal(size=(1000, 384)), name="minilm")
    text_window = Window(outputs=rng.normal(size=(500, 384)))
    compute_drift(reference, window)  # warm-up: imports
    timings = []
    for label, ref, cur in (
        ("digits, 1,000 rows x 64 features", reference, window),
        ("minilm, 500 x 384 embeddings", embeddings, text_window),
    ):
        start = time.perf_counter()
        compute_drift(ref, cur)
        timings.append((label, time.perf_counter() - start))
    return timings


def window_add_us(calls: int = 5000) -> float:
    """Microseconds per `SampleWindow.add` of one row at the service's default rate: the in-process
    cost of recording a request for drift."""
    from monitoring.config import MonitorConfig
    from monitoring.window import SampleWindow

    window = SampleWindow(capacity=1000, rate=MonitorConfig.sample_rate)
    inputs, outputs = np.ones((1, 64), np.float32), np.ones((1, 10), np.float32)
    start = time.perf_counter()
    for _ in range(calls):
        window.add(inputs, outputs)
    return (time.perf_counter() - start) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bentoml-home", type=Path)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    load = sb.QUICK if args.quick else sb.FULL
    with tempfile.TemporaryDirectory(prefix="monitoring-bench-") as scratch:
        os.environ["BENTOML_HOME"] = str((args.bentoml_home or Path(scratch) / "store").resolve())
        os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
        tag = sb.stored_model("default")
        from optimise import store

        texts = sb.bench_texts(store.artefact(store.get_model(tag)))
        import tritonclient.grpc as triton_grpc

        clients: dict[str, Callable[[Any], CallFactory]] = {
            "native REST /embed": lambda s: rest(s.http),
            "OIP v2 gRPC": lambda s: oip(triton_grpc, s.grpc, sb.MODEL, sb.OUTPUT),
        }
        homes = Path(scratch)
        latencies: dict[str, list[tuple[Latency, Latency]]] = {path: [] for path in clients}
        rates: dict[tuple[str, str], list[Throughput]] = {}
        for _ in range(args.rounds):
            for path, client in clients.items():
                with (
                    sb.fresh_server("leanserve", tag, homes, MONITORING["on"]) as on,
                    sb.fresh_server("leanserve", tag, homes, MONITORING["off"]) as off,
                ):
                    pair = paired_latency((client(on), client(off)), texts, load.n, load.warmup)
                    latencies[path].append(pair)
                for state, env in MONITORING.items():
                    with sb.fresh_server("leanserve", tag, homes, env) as server:
                        rate = throughput(client(server), texts, CONCURRENCY, MAX_REQUESTS, load.seconds[0])
                    rates.setdefault((path, state), []).append(rate)
                print(
                    f"{path}: {latencies[path][-1]}, {rates[(path, 'on')][-1]}, {rates[(path, 'off')][-1]}",
                    file=sys.stderr,
                )
    print(f"## Monitoring on vs off ({tag}; medians of {args.rounds} round(s))\n")
    print(
        "| path | p50 ms on | p50 ms off | p50 on/off (target <= 1.03) "
        f"| req/s on (c={CONCURRENCY}) | req/s off | req/s on/off (target >= 0.97) | errors |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for path in clients:
        p50_on = float(np.median([on.p50_ms for on, _ in latencies[path]]))
        p50_off = float(np.median([off.p50_ms for _, off in latencies[path]]))
        ratio = float(np.median([on.p50_ms / off.p50_ms for on, off in latencies[path]]))
        rate_on = float(np.median([r.per_s for r in rates[(path, "on")]]))
        rate_off = float(np.median([r.per_s for r in rates[(path, "off")]]))
        errors = sum(r.errors for state in MONITORING for r in rates[(path, state)])
        print(
            f"| {path} | {p50_on:.2f} | {p50_off:.2f} | {ratio:.3f} "
            f"| {rate_on:.0f} | {rate_off:.0f} | {rate_on / rate_off:.3f} | {errors} |"
        )
    print("\n| drift evaluation | seconds |\n|---|---|")
    for label, seconds in drift_timings():
        print(f"| {label} | {seconds:.3f} |")
    print(f"\nRecording one request's row into the drift window: {window_add_us():.1f} us")


if __name__ == "__main__":
    main()
