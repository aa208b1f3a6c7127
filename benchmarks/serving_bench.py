"""Serving overhead: the raw ONNX Runtime session against leanserve's three protocols and a
plain BentoML + PyTorch FP32 baseline, one ~20-token sentence per request.

The minilm demo is built with the default search (as `leanserve optimise --model minilm`;
`--space fp32-int8` for the integration tests' faster space) into --bentoml-home, or the
latest version stored there is reused. Then, each phase on a FRESH server process (BentoML's
batcher adapts its waits to the load it has seen): p50/p99 latency at concurrency 1, and
throughput at concurrency 32 (threads, each with its own client). The load generator runs
here, on loopback, and shares the CPU with the server. Texts: the fidelity-set lines of
17-23 tokens ([CLS] and [SEP] included), cycled. Not a test: nothing is asserted.

    .venv/bin/python benchmarks/serving_bench.py [--bentoml-home DIR] [--rounds N] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests"), str(REPO / "tests" / "integration")]
from benchmarks._load import (  # noqa: E402
    CallFactory,
    Latency,
    Throughput,
    latency,
    median,
    oip,
    oip_floor,
    rest,
    rest_floor,
    throughput,
)

MODEL = "minilm"
OUTPUT = "sentence_embedding"
TOKENS = (17, 23)
CONCURRENCY = 32


@dataclass(frozen=True)
class Load:
    n: int  # timed requests at concurrency 1
    warmup: int
    requests: int  # at most, at concurrency 32
    seconds: float  # at most, at concurrency 32


FULL = Load(n=300, warmup=30, requests=3000, seconds=20.0)
QUICK = Load(n=40, warmup=10, requests=300, seconds=5.0)
TARGETS = "p50 overhead over the raw session <= 1.5 ms (REST), <= 0.7 ms (gRPC); p50 <= 0.5x baseline; req/s >= 1.6x baseline"


# -- the model under test ----------------------------------------------------------------
def stored_model(space: str) -> str:
    """The latest stored minilm, or a new one built with the chosen search space."""
    from optimise import store

    existing = store.list_models(MODEL)
    if existing:
        return str(existing[-1].tag)
    print(f"building {MODEL} ({space} space) into {os.environ['BENTOML_HOME']} ...", file=sys.stderr)
    if space == "fp32-int8":
        from builds import FP32_AND_INT8
        from servers import build_demo

        return build_demo(MODEL, FP32_AND_INT8)
    from optimise.build import optimise
    from optimise.profiles import get_profile
    from optimise.search import SearchSettings
    from optimise.sources import load_source
    from optimise.types import Constraints

    with tempfile.TemporaryDirectory() as scratch:
        result = optimise(
            load_source(MODEL), get_profile("cpu"), Constraints(), SearchSettings(), Path(scratch)
        )
        return store.save(result, MODEL)


def tokenizer(root: Path) -> Any:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(root / "preprocessing" / "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(128)
    return tok


def bench_texts(root: Path) -> list[str]:
    from optimise.demos.minilm import DATA_DIR, read_lines

    tok = tokenizer(root)
    lines = read_lines(DATA_DIR / "minilm_fidelity.txt")
    return [t for t in lines if TOKENS[0] <= len(tok.encode(t).ids) <= TOKENS[1]]


# -- the floor: tokenizer + session in this process ----------------------------------------
def raw_session(root: Path, manifest: dict[str, Any]) -> CallFactory:
    from optimise.runtime import OnnxSession

    session = OnnxSession(
        root / manifest["model_file"],
        manifest["selected"]["intra_op_threads"],
        tuple(manifest["profile"]["execution_providers"]),
    )

    def factory() -> Callable[[str], object]:
        tok = tokenizer(root)

        def call(text: str) -> object:
            e = tok.encode(text)
            feeds = {
                "input_ids": [e.ids],
                "attention_mask": [e.attention_mask],
                "token_type_ids": [e.type_ids],
            }
            return session.run({k: np.array(v) for k, v in feeds.items()})

        return call

    return factory


# -- servers: a fresh process per phase ----------------------------------------------------
@contextlib.contextmanager
def fresh_server(kind: str, tag: str, homes: Path, extra_env: dict[str, str] | None = None) -> Iterator[Any]:
    import servers

    home = Path(tempfile.mkdtemp(dir=homes)) / "bentoml"
    target = "service.app:LeanServe" if kind == "leanserve" else "benchmarks.baseline_service:Baseline"
    server = servers.start_server(home, [tag], extra_env, target=target)
    try:
        yield server
    finally:
        servers.stop_server(server)


@dataclass(frozen=True)
class Phase:
    name: str
    server: str | None  # None: in this process
    client: Callable[[Any], CallFactory]
    # The same client and server answering a call that runs no model: what the protocol costs.
    floor: Callable[[Any], CallFactory] | None = None
    env: dict[str, str] | None = None  # the server's extra environment


def phases(root: Path, manifest: dict[str, Any]) -> list[Phase]:
    import tritonclient.grpc as triton_grpc
    import tritonclient.http as triton_http

    raw = raw_session(root, manifest)

    def host(s: Any) -> str:
        return str(s.http).removeprefix("http://")

    return [
        Phase("raw ORT session (in-process)", None, lambda _: raw),
        Phase(
            "leanserve native REST /embed", "leanserve", lambda s: rest(s.http), lambda s: rest_floor(s.http)
        ),
        Phase(
            "leanserve OIP v2 REST",
            "leanserve",
            lambda s: oip(triton_http, host(s), MODEL, OUTPUT),
            lambda s: oip_floor(triton_http, host(s)),
        ),
        Phase(
            "leanserve OIP v2 gRPC",
            "leanserve",
            lambda s: oip(triton_grpc, s.grpc, MODEL, OUTPUT),
            lambda s: oip_floor(triton_grpc, s.grpc),
        ),
        Phase(
            "baseline BentoML + PyTorch /embed",
            "baseline",
            lambda s: rest(s.http),
            lambda s: rest_floor(s.http),
        ),
    ]


def measure(
    phase: Phase, tag: str, homes: Path, load: Load, texts: list[str]
) -> tuple[Latency, Throughput, float]:
    """Latency at c=1 (then the protocol floor on the same server), then throughput at c=32,
    each on its own fresh server."""
    measured: list[Any] = []
    floor_ms = float("nan")
    for step in ("latency", "throughput"):
        server_or_none = (
            contextlib.nullcontext(None)
            if phase.server is None
            else fresh_server(phase.server, tag, homes, phase.env)
        )
        with server_or_none as server:
            factory = phase.client(server)
            if step == "latency":
                measured.append(latency(factory, texts, load.n, load.warmup, max_s=120))
                if phase.floor is not None:
                    floor_ms = latency(phase.floor(server), texts, load.n, load.warmup, 60).p50_ms
            else:
                measured.append(throughput(factory, texts, CONCURRENCY, load.requests, load.seconds))
    return measured[0], measured[1], floor_ms


Result = tuple[str, Latency, Throughput, float]


def run(tag: str, homes: Path, load: Load, rounds: int) -> tuple[str, list[Result]]:
    """Every path once per round (interleaved, so a noisy minute hits all), medians over rounds."""
    from optimise import store

    model = store.get_model(tag)
    root, manifest = Path(model.path), store.read_manifest(model)
    texts = bench_texts(root)
    paths = phases(root, manifest)
    samples: dict[str, list[tuple[Latency, Throughput, float]]] = {p.name: [] for p in paths}
    for r in range(rounds):
        for phase in paths:
            start = time.perf_counter()
            samples[phase.name].append(measure(phase, tag, homes, load, texts))
            print(
                f"round {r + 1} {phase.name}: {samples[phase.name][-1]} ({time.perf_counter() - start:.0f} s)",
                file=sys.stderr,
            )
    results = [
        (name, *median([(lat, thr) for lat, thr, _ in runs]), float(np.median([f for _, _, f in runs])))
        for name, runs in samples.items()
    ]
    selected = manifest["selected"]
    about = (
        f"minilm {tag}: variant {selected['id']} ({selected['precision']}, {selected['intra_op_threads']} "
        f"ORT threads); {len(texts)} texts of {TOKENS[0]}-{TOKENS[1]} tokens; {os.cpu_count()} CPUs"
    )
    return about, results


def table(about: str, results: list[Result], load: Load, rounds: int) -> str:
    raw, base = results[0], results[-1]
    lines = [
        f"## Serving: {about}",
        "",
        f"c=1: {load.n} requests after {load.warmup} warm-up; c={CONCURRENCY}: up to "
        f"{load.requests} requests or {load.seconds:.0f} s; a fresh server per phase; "
        f"medians of {rounds} round(s). Protocol floor: the same client and server answering "
        "a liveness call (no model), so overhead = floor + what the service adds.",
        "",
        f"| path | p50 ms (c=1) | p99 ms | overhead over raw p50 (ms) | protocol floor p50 (ms) "
        f"| p50 vs baseline | req/s (c={CONCURRENCY}) | req/s vs baseline | errors |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, lat, thr, floor in results:
        lines.append(
            f"| {name} | {lat.p50_ms:.2f} | {lat.p99_ms:.2f} | {lat.p50_ms - raw[1].p50_ms:+.2f} "
            f"| {'-' if np.isnan(floor) else f'{floor:.2f}'} | {lat.p50_ms / base[1].p50_ms:.2f}x "
            f"| {thr.per_s:.0f} | {thr.per_s / base[2].per_s:.2f}x | {thr.errors} |"
        )
    lines += ["", f"Targets (not asserted): {TARGETS}."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--bentoml-home", type=Path, help="model store to reuse or build into (default: temp)"
    )
    parser.add_argument("--space", choices=("default", "fp32-int8"), default="default")
    parser.add_argument("--quick", action="store_true", help="few requests: a smoke run")
    parser.add_argument("--rounds", type=int, default=1, help="repeat every path; medians are shown")
    args = parser.parse_args()
    load = QUICK if args.quick else FULL
    with tempfile.TemporaryDirectory(prefix="serving-bench-") as scratch:
        home = args.bentoml_home or Path(scratch) / "store"
        os.environ["BENTOML_HOME"] = str(home.resolve())  # before bentoml is imported
        os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
        tag = stored_model(args.space)
        about, results = run(tag, Path(scratch), load, args.rounds)
    print(table(about, results, load, args.rounds), flush=True)


if __name__ == "__main__":
    main()
