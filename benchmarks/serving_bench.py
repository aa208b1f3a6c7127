"""Serving overhead: the raw runtime session (the runtime the stored variant records) against
leanserve's three protocols and a plain BentoML + PyTorch FP32 baseline, one ~20-token sentence
per request.

The minilm demo is built with the default search (as `leanserve optimise --model minilm`;
`--space fp32-int8` for the integration tests' faster space) into --bentoml-home, or the
latest version stored there is reused. Then, each phase on a FRESH server process (no state
carried from an earlier phase: warm caches, learnt waits): p50/p99 latency at concurrency 1, and
throughput at concurrency 32 (threads, each with its own client). The load generator runs
here, on loopback, and shares the CPU with the server. Texts: the fidelity-set lines of
17-23 tokens ([CLS] and [SEP] included), cycled. The raw session runs twice: back to back,
and with 3 ms of idle before each call, as a server's model call sees. Not a test: nothing
is asserted.

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
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np

if TYPE_CHECKING:
    from optimise.artefact import StoredArtefact

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
IDLE_S = 0.003


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


def tokenizer(artefact: StoredArtefact) -> Any:
    from tokenizers import Tokenizer

    assert artefact.tokenizer_path is not None and artefact.manifest.tokenizer is not None
    tok = Tokenizer.from_file(str(artefact.tokenizer_path))
    tok.no_padding()
    tok.enable_truncation(artefact.manifest.tokenizer.max_tokens)
    return tok


def bench_texts(artefact: StoredArtefact) -> list[str]:
    from optimise.demos.minilm import DATA_DIR, read_lines

    tok = tokenizer(artefact)
    lines = read_lines(DATA_DIR / "minilm_fidelity.txt")
    return [t for t in lines if TOKENS[0] <= len(tok.encode(t).ids) <= TOKENS[1]]


# -- the floor: tokenizer + session in this process ----------------------------------------
def raw_session(artefact: StoredArtefact) -> CallFactory:
    from optimise.runtimes import open_session

    manifest = artefact.manifest
    selected = manifest.selected
    session = open_session(
        selected.runtime,
        artefact.model_path,
        selected.intra_op_threads,
        manifest.profile.execution_providers,
        selected.runtime_settings,
    )

    def factory() -> Callable[[str], object]:
        tok = tokenizer(artefact)

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
    protocol: str | None = None  # its label on leanserve's request metrics
    env: dict[str, str] | None = None  # the server's extra environment
    pause_s: float = 0.0  # idle before each timed c=1 request


@dataclass(frozen=True)
class Sample:
    latency: Latency
    throughput: Throughput
    floor_ms: float = float("nan")
    # Means over the timed c=1 requests, from the server's own /metrics: the whole request in
    # the server (protocol adapter and data plane) and the model call alone (tokenise + run).
    server_request_ms: float = float("nan")
    server_inference_ms: float = float("nan")


def server_means(base_url: str, protocol: str) -> dict[str, tuple[float, float]]:
    """(sum, count) of leanserve's request and inference histograms for one protocol."""
    from prometheus_client.parser import text_string_to_metric_families

    totals = {"request": [0.0, 0.0], "inference": [0.0, 0.0]}
    text = httpx.get(f"{base_url}/metrics", timeout=30).text
    for family in text_string_to_metric_families(text):
        kind = {
            "leanserve_request_duration_seconds": "request",
            "leanserve_inference_duration_seconds": "inference",
        }.get(family.name)
        if kind is None:
            continue
        for sample in family.samples:
            if sample.labels.get("model") != MODEL or sample.labels.get("protocol", protocol) != protocol:
                continue
            if sample.name.endswith("_sum"):
                totals[kind][0] += sample.value
            elif sample.name.endswith("_count"):
                totals[kind][1] += sample.value
    return {k: (v[0], v[1]) for k, v in totals.items()}


def _mean_ms(
    before: dict[str, tuple[float, float]], after: dict[str, tuple[float, float]], kind: str
) -> float:
    seconds, count = (a - b for a, b in zip(after[kind], before[kind], strict=True))
    return 1e3 * seconds / count if count else float("nan")


def phases(artefact: StoredArtefact) -> list[Phase]:
    import tritonclient.grpc as triton_grpc
    import tritonclient.http as triton_http

    raw = raw_session(artefact)

    def host(s: Any) -> str:
        return str(s.http).removeprefix("http://")

    return [
        Phase("raw runtime session (in-process)", None, lambda _: raw),
        # A server's model call follows milliseconds of idle (protocol work, the client): the
        # same session after as long a pause shows what idling alone costs on this machine.
        Phase(
            f"raw runtime session, {IDLE_S * 1e3:.0f} ms idle before each call",
            None,
            lambda _: raw,
            pause_s=IDLE_S,
        ),
        Phase(
            "leanserve native REST /embed",
            "leanserve",
            lambda s: rest(s.http),
            lambda s: rest_floor(s.http),
            "rest",
        ),
        Phase(
            "leanserve OIP v2 REST",
            "leanserve",
            lambda s: oip(triton_http, host(s), MODEL, OUTPUT),
            lambda s: oip_floor(triton_http, host(s)),
            "rest-v2",
        ),
        Phase(
            "leanserve OIP v2 gRPC",
            "leanserve",
            lambda s: oip(triton_grpc, s.grpc, MODEL, OUTPUT),
            lambda s: oip_floor(triton_grpc, s.grpc),
            "grpc",
        ),
        Phase(
            "baseline BentoML + PyTorch /embed",
            "baseline",
            lambda s: rest(s.http),
            lambda s: rest_floor(s.http),
        ),
    ]


def measure(phase: Phase, tag: str, homes: Path, load: Load, texts: list[str]) -> Sample:
    """Latency at c=1 (then the protocol floor on the same server), then throughput at c=32,
    each on its own fresh server."""
    with _server(phase, tag, homes) as server:
        metrics: list[dict[str, tuple[float, float]]] = []

        def scrape() -> None:
            if phase.protocol is not None:
                metrics.append(server_means(server.http, phase.protocol))

        lat = latency(
            phase.client(server), texts, load.n, load.warmup, 120, on_warm=scrape, pause_s=phase.pause_s
        )
        scrape()
        floor_ms = float("nan")
        if phase.floor is not None:
            floor_ms = latency(phase.floor(server), texts, load.n, load.warmup, 60).p50_ms
    with _server(phase, tag, homes) as server:
        thr = throughput(phase.client(server), texts, CONCURRENCY, load.requests, load.seconds)
    if not metrics:
        return Sample(lat, thr, floor_ms)
    before, after = metrics
    return Sample(
        lat, thr, floor_ms, _mean_ms(before, after, "request"), _mean_ms(before, after, "inference")
    )


def _server(phase: Phase, tag: str, homes: Path) -> contextlib.AbstractContextManager[Any]:
    if phase.server is None:
        return contextlib.nullcontext(None)
    return fresh_server(phase.server, tag, homes, phase.env)


def _median(samples: list[Sample]) -> Sample:
    lat, thr = median([(s.latency, s.throughput) for s in samples])

    def mid(field: str) -> float:
        return float(np.median([getattr(s, field) for s in samples]))

    return Sample(lat, thr, mid("floor_ms"), mid("server_request_ms"), mid("server_inference_ms"))


def run(tag: str, homes: Path, load: Load, rounds: int) -> tuple[str, list[tuple[str, Sample]]]:
    """Every path once per round (interleaved, so a noisy minute hits all), medians over rounds."""
    from optimise import store

    model = store.get_model(tag)
    artefact = store.artefact(model)
    texts = bench_texts(artefact)
    paths = phases(artefact)
    samples: dict[str, list[Sample]] = {p.name: [] for p in paths}
    for r in range(rounds):
        for phase in paths:
            start = time.perf_counter()
            samples[phase.name].append(measure(phase, tag, homes, load, texts))
            print(
                f"round {r + 1} {phase.name}: {samples[phase.name][-1]} ({time.perf_counter() - start:.0f} s)",
                file=sys.stderr,
            )
    selected = artefact.manifest.selected
    about = (
        f"minilm {tag}: variant {selected.id} ({selected.precision}, {selected.intra_op_threads} "
        f"ORT threads); {len(texts)} texts of {TOKENS[0]}-{TOKENS[1]} tokens; {os.cpu_count()} CPUs"
    )
    return about, [(name, _median(runs)) for name, runs in samples.items()]


def _ms(value: float) -> str:
    return "-" if np.isnan(value) else f"{value:.2f}"


def table(about: str, results: list[tuple[str, Sample]], load: Load, rounds: int) -> str:
    raw, base = results[0][1], results[-1][1]
    lines = [
        f"## Serving: {about}",
        "",
        f"c=1: {load.n} requests after {load.warmup} warm-up; c={CONCURRENCY}: up to "
        f"{load.requests} requests or {load.seconds:.0f} s; a fresh server per phase; "
        f"medians of {rounds} round(s). Protocol floor: the same client and server answering "
        "a liveness call (no model). In server: mean request and inference times from the "
        "server's own metrics over the timed c=1 requests.",
        "",
        f"| path | p50 ms (c=1) | p99 ms | overhead over raw p50 (ms) | protocol floor p50 (ms) "
        f"| in server: request / inference (ms) | p50 vs baseline | req/s (c={CONCURRENCY}) "
        "| req/s vs baseline | errors |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, s in results:
        lat, thr = s.latency, s.throughput
        lines.append(
            f"| {name} | {lat.p50_ms:.2f} | {lat.p99_ms:.2f} | {lat.p50_ms - raw.latency.p50_ms:+.2f} "
            f"| {_ms(s.floor_ms)} | {_ms(s.server_request_ms)} / {_ms(s.server_inference_ms)} "
            f"| {lat.p50_ms / base.latency.p50_ms:.2f}x | {thr.per_s:.0f} "
            f"| {thr.per_s / base.throughput.per_s:.2f}x | {thr.errors} |"
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
