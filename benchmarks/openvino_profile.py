"""Where the time of a stored OpenVINO variant goes: OpenVINO's per-operation counters at batch 1.

Opens the stored version's model with the settings its manifest records (a single row padded to
the same length bucket the server uses), runs the bundle's latency input (MiniLM: 1 x 128 tokens)
with OpenVINO's performance counters on, and prints the time per operation type and kernel, the
sum of them, and the wall-clock p50 of the same call through leanserve's session (the difference
is the cost of the call itself: input preparation, padding, copying outputs). Not a test.

    .venv/bin/python benchmarks/openvino_profile.py [--model minilm] [--calls 200]
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import numpy as np

from optimise import store
from optimise.artefact import StoredArtefact
from optimise.runtimes import open_session
from optimise.runtimes.openvino_session import OpenVinoSession
from optimise.source import ModelBundle
from optimise.sources import load_source


def stored_openvino(tag: str) -> tuple[StoredArtefact, ModelBundle]:
    """The stored version `tag` and its source's bundle; exits naming the runtime when it is not OpenVINO."""
    stored = store.artefact(store.get_model(tag))
    runtime = stored.manifest.selected.runtime
    if runtime != "openvino":
        raise SystemExit(f"{tag} runs on {runtime}, not openvino")
    return stored, load_source(stored.manifest.source.spec)


def profile(tag: str, calls: int) -> str:
    stored, bundle = stored_openvino(tag)
    selected = stored.manifest.selected
    feeds = bundle.latency_inputs
    settings = {**selected.runtime_settings, "PERF_COUNT": "YES"}
    session = open_session(selected.runtime, stored.model_path, selected.intra_op_threads, settings=settings)
    assert isinstance(session, OpenVinoSession)
    plain = open_session(
        selected.runtime, stored.model_path, selected.intra_op_threads, settings=selected.runtime_settings
    )
    for _ in range(20):
        session.run(feeds)
        plain.run(feeds)
    totals: dict[tuple[str, str], float] = defaultdict(float)
    for _ in range(calls):
        session.run(feeds)
        for info in session.profiling_info(feeds):
            totals[(info.node_type, info.exec_type)] += info.real_time.total_seconds() * 1e3 / calls
    wall = []
    for _ in range(calls):
        start = time.perf_counter()
        plain.run(feeds)
        wall.append((time.perf_counter() - start) * 1e3)
    compute = sum(totals.values())
    lines = [
        f"## {tag}: {selected.id} ({' -> '.join(p.name for p in selected.passes)}), "
        f"{selected.intra_op_threads} threads, {dict(selected.runtime_settings)}",
        "",
        "| operation | kernel | ms per call | share |",
        "|---|---|---|---|",
    ]
    for (node, kernel), ms in sorted(totals.items(), key=lambda item: -item[1])[:15]:
        lines.append(f"| {node} | {kernel} | {ms:.3f} | {ms / compute * 100:.1f} % |")
    p50 = float(np.percentile(wall, 50))
    lines += [
        "",
        f"sum of operations {compute:.2f} ms; wall-clock p50 of the call {p50:.2f} ms "
        f"(call overhead {p50 - compute:.2f} ms)",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm", help="NAME or NAME:VERSION in the model store")
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    print(profile(args.model, args.calls))


if __name__ == "__main__":
    main()
