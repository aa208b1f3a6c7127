"""What monitoring costs on the request path: the same server with drift monitoring on and off.

Every phase runs on a fresh server (BentoML's batcher learns wait times); on and off alternate
within each round so machine noise hits both; medians over rounds, ratios on / off. Also times one
drift evaluation of a 1,000-row digits window and a 500-row MiniLM embedding window.

    .venv/bin/python benchmarks/monitoring_bench.py --bentoml-home /tmp/sbench/home [--quick] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere
from benchmarks import serving_bench as sb
from benchmarks._load import Latency, Throughput, median, oip, rest

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

        texts = sb.bench_texts(Path(store.get_model(tag).path))
        import tritonclient.grpc as triton_grpc

        clients = {
            "native REST /embed": lambda s: rest(s.http),
            "OIP v2 gRPC": lambda s: oip(triton_grpc, s.grpc, sb.MODEL, sb.OUTPUT),
        }
        samples: dict[tuple[str, str], list[tuple[Latency, Throughput]]] = {}
        for _ in range(args.rounds):
            for path, client in clients.items():
                for state, env in MONITORING.items():
                    result = sb.measure("leanserve", client, tag, Path(scratch), load, texts, env)
                    samples.setdefault((path, state), []).append(result)
    print(f"## Monitoring on vs off ({tag}; medians of {args.rounds} round(s), a fresh server per phase)\n")
    print(
        "| path | p50 ms on | p50 ms off | p50 on/off (target <= 1.03) | req/s on | req/s off | req/s on/off (target >= 0.97) |"
    )
    print("|---|---|---|---|---|---|---|")
    for path in clients:
        (lat_on, thr_on), (lat_off, thr_off) = median(samples[(path, "on")]), median(samples[(path, "off")])
        print(
            f"| {path} | {lat_on.p50_ms:.2f} | {lat_off.p50_ms:.2f} | {lat_on.p50_ms / lat_off.p50_ms:.3f} "
            f"| {thr_on.per_s:.0f} | {thr_off.per_s:.0f} | {thr_on.per_s / thr_off.per_s:.3f} |"
        )
    print("\n| drift evaluation | seconds |\n|---|---|")
    for label, seconds in drift_timings():
        print(f"| {label} | {seconds:.3f} |")


if __name__ == "__main__":
    main()
