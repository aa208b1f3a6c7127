"""Serving: the raw runtime session (the runtime the stored variant records) against leanserve's
three protocols and a plain BentoML + PyTorch FP32 baseline, one ~20-token sentence per request.

The minilm demo is built with the default search (as `leanserve optimise --model minilm`;
`--space fp32-int8` for the integration tests' faster space) into --bentoml-home, or the
latest version stored there is reused. Then, for every path, on a FRESH server process (no state
carried from an earlier phase):
- latency at concurrency 1 from a Python client (httpx, tritonclient), with the server's own
  request and inference histograms over the same requests: request minus inference is what the
  server adds (front door to answer, protocol decoding and encoding, thread hand-off);
- on a second fresh server, throughput at concurrency 32, then 64, from a C load generator
  (wrk for HTTP, h2load for gRPC; `benchmarks/c_load.py`), so the client does not take the
  server's cores: requests/s, p50/p99, answers that were not 200 (the server's own count by
  code), and the server's RSS (all its processes) before, at its peak and after.
The raw session runs in this process at c=1, back to back and with 3 ms of idle before each call
(as a server's model call sees), and as 32-row calls (what cross-request batching can reach).
Every server runs with the serving settings the build's serving stage chose and stored, except
native /embed phases that confirm (or refute) the choice through the real server: batching off
(LEANSERVE_BATCH_MAX_ROWS=1), the settings a build without the stage serves with
(`service.repository.unmeasured_settings`), and the choice with every core given to parallel runs
(what the stage's `request_cores` leaves out), each where it differs from the choice. Native /embed also runs once at a concurrency
past LEANSERVE_MAX_INFLIGHT_REQUESTS, where the excess must be shed with 503. Not a test:
nothing is asserted.

    .venv/bin/python benchmarks/serving_bench.py [--bentoml-home DIR] [--rounds N] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np

if TYPE_CHECKING:
    from optimise.artefact import StoredArtefact
    from optimise.runtimes import InferenceSession
    from optimise.types import ServingSettings

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests"), str(REPO / "tests" / "integration")]
from benchmarks import c_load  # noqa: E402
from benchmarks._load import CallFactory, Latency, latency, oip, rest  # noqa: E402

MODEL = "minilm"
OUTPUT = "sentence_embedding"
TOKENS = (17, 23)
CONCURRENCY = (32, 64)
SHED_CONCURRENCY = 256  # past the default LEANSERVE_MAX_INFLIGHT_REQUESTS (128)
IDLE_S = 0.003
GRPC_INFER = "/inference.GRPCInferenceService/ModelInfer"


@dataclass(frozen=True)
class Load:
    n: int  # timed requests at concurrency 1
    warmup: int
    seconds: tuple[float, float]  # of load at each of CONCURRENCY
    shed_seconds: float


FULL = Load(n=300, warmup=30, seconds=(20.0, 60.0), shed_seconds=10.0)
QUICK = Load(n=40, warmup=10, seconds=(5.0, 5.0), shed_seconds=3.0)
TARGETS = (
    "server-side overhead (request minus inference) <= 0.3 ms gRPC, <= 0.4 ms OIP v2 REST, <= 0.6 ms "
    "native /embed; req/s at c=32 and c=64 >= 4x the baseline on the same load generator"
)


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
    from optimise.serving_search import ServingTarget
    from optimise.sources import load_source
    from optimise.types import Constraints

    with tempfile.TemporaryDirectory() as scratch:
        result = optimise(
            load_source(MODEL),
            get_profile("cpu"),
            Constraints(),
            SearchSettings(),
            Path(scratch),
            serving=ServingTarget(),  # as `leanserve optimise` builds it
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
def stored_session(artefact: StoredArtefact) -> InferenceSession:
    """The stored variant on the runtime, threads and settings its manifest records."""
    from optimise.runtimes import open_session

    manifest, selected = artefact.manifest, artefact.manifest.selected
    return open_session(
        selected.runtime,
        artefact.model_path,
        selected.intra_op_threads,
        manifest.profile.execution_providers,
        selected.runtime_settings,
    )


def raw_session(artefact: StoredArtefact) -> CallFactory:
    session = stored_session(artefact)

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


def raw_batches(artefact: StoredArtefact, texts: list[str], seconds: float) -> float:
    """Rows/s of the raw session called with 32 rows at a time: the ceiling of batching."""
    session = stored_session(artefact)
    tok = tokenizer(artefact)
    tok.enable_padding()
    batches = []
    for start in range(0, 32 * 8, 32):
        encodings = tok.encode_batch([texts[(start + i) % len(texts)] for i in range(32)])
        batches.append(
            {
                "input_ids": np.array([e.ids for e in encodings]),
                "attention_mask": np.array([e.attention_mask for e in encodings]),
                "token_type_ids": np.array([e.type_ids for e in encodings]),
            }
        )
    session.run(batches[0])
    calls, begin = 0, time.perf_counter()
    while time.perf_counter() - begin < seconds:
        session.run(batches[calls % len(batches)])
        calls += 1
    return 32 * calls / (time.perf_counter() - begin)


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


# -- what the server says about itself --------------------------------------------------
def server_histograms(base_url: str, protocol: str) -> dict[str, tuple[float, float]]:
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


def server_codes(base_url: str, protocol: str) -> dict[str, float]:
    """leanserve_requests_total by status code, every model, one protocol."""
    from prometheus_client.parser import text_string_to_metric_families

    codes: dict[str, float] = {}
    for family in text_string_to_metric_families(httpx.get(f"{base_url}/metrics", timeout=30).text):
        if family.name != "leanserve_requests":
            continue
        for sample in family.samples:
            if sample.name.endswith("_total") and sample.labels.get("protocol") == protocol:
                code = sample.labels["code"]
                codes[code] = codes.get(code, 0.0) + sample.value
    return codes


def _mean_ms(
    before: dict[str, tuple[float, float]], after: dict[str, tuple[float, float]], kind: str
) -> float:
    seconds, count = (a - b for a, b in zip(after[kind], before[kind], strict=True))
    return 1e3 * seconds / count if count else float("nan")


class RssSampler:
    """RSS of a process and its descendants, sampled every 0.2 s while running (MB)."""

    def __init__(self, pid: int) -> None:
        import psutil

        self.process = psutil.Process(pid)
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def now_mb(self) -> float:
        import psutil

        total = 0
        for process in [self.process, *self.process.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                total += process.memory_info().rss
        return total / 2**20

    def _sample(self) -> None:
        while not self._stop.wait(0.2):
            self.peak_mb = max(self.peak_mb, self.now_mb())

    def __enter__(self) -> RssSampler:
        self.peak_mb = self.now_mb()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# -- the paths -----------------------------------------------------------------------------
Loader = Callable[[Any, int, float], c_load.LoadResult]


@dataclass(frozen=True)
class Phase:
    name: str
    server: str | None  # "leanserve", "baseline", or None: in this process
    client: Callable[[Any], CallFactory]  # the c=1 Python client
    load: Loader | None = None  # the C load generator
    protocol: str | None = None  # its label on leanserve's request metrics
    env: dict[str, str] | None = None  # the server's extra environment
    pause_s: float = 0.0  # idle before each timed c=1 request


@dataclass
class Sample:
    latency: Latency
    server_request_ms: float = float("nan")
    server_inference_ms: float = float("nan")
    per_s: dict[int, float] = field(default_factory=dict)
    p99_ms: dict[int, float] = field(default_factory=dict)
    not_200: int = 0
    rss_mb: tuple[float, float, float] = (float("nan"),) * 3

    @property
    def server_adds_ms(self) -> float:
        return self.server_request_ms - self.server_inference_ms


def bodies(text: str) -> tuple[bytes, bytes, bytes]:
    """The one request each load generator sends: native JSON, OIP v2 JSON, OIP v2 gRPC message."""
    from service._generated import grpc_predict_v2_pb2 as pb

    native = json.dumps({"texts": [text]}).encode()
    tensor = {"name": "text", "shape": [1], "datatype": "BYTES", "data": [text]}
    oip_json = json.dumps({"inputs": [tensor], "outputs": [{"name": OUTPUT}]}).encode()
    message = pb.ModelInferRequest(
        model_name=MODEL,
        inputs=[
            pb.ModelInferRequest.InferInputTensor(
                name="text",
                datatype="BYTES",
                shape=[1],
                contents=pb.InferTensorContents(bytes_contents=[text.encode()]),
            )
        ],
        outputs=[pb.ModelInferRequest.InferRequestedOutputTensor(name=OUTPUT)],
    ).SerializeToString()
    return native, oip_json, message


def phases(artefact: StoredArtefact, load_text: str) -> list[Phase]:
    import tritonclient.grpc as triton_grpc
    import tritonclient.http as triton_http

    raw = raw_session(artefact)
    native, oip_json, message = bodies(load_text)

    def host(s: Any) -> str:
        return str(s.http).removeprefix("http://")

    def wrk(path: str, body: bytes) -> Loader:
        return lambda s, c, seconds: c_load.wrk_post(f"{s.http}{path}", body, c, seconds)

    def h2load(s: Any, c: int, seconds: float) -> c_load.LoadResult:
        return c_load.h2load_grpc(s.grpc, GRPC_INFER, message, c, seconds)

    return [
        Phase("raw runtime session (in-process)", None, lambda _: raw),
        Phase(
            f"raw runtime session, {IDLE_S * 1e3:.0f} ms idle before each call",
            None,
            lambda _: raw,
            pause_s=IDLE_S,
        ),
        Phase(
            "leanserve native REST /embed", "leanserve", lambda s: rest(s.http), wrk("/embed", native), "rest"
        ),
        Phase(
            "leanserve native REST /embed, batching off",
            "leanserve",
            lambda s: rest(s.http),
            wrk("/embed", native),
            "rest",
            env={"LEANSERVE_BATCH_MAX_ROWS": "1"},
        ),
        *(
            Phase(
                f"leanserve native REST /embed, {settings.describe()} ({why})",
                "leanserve",
                lambda s: rest(s.http),
                wrk("/embed", native),
                "rest",
                env=serving_env(settings),
            )
            for settings, why in alternatives(artefact)
        ),
        Phase(
            "leanserve OIP v2 REST",
            "leanserve",
            lambda s: oip(triton_http, host(s), MODEL, OUTPUT),
            wrk(f"/v2/models/{MODEL}/infer", oip_json),
            "rest-v2",
        ),
        Phase(
            "leanserve OIP v2 gRPC",
            "leanserve",
            lambda s: oip(triton_grpc, s.grpc, MODEL, OUTPUT),
            h2load,
            "grpc",
        ),
        Phase("baseline BentoML + PyTorch /embed", "baseline", lambda s: rest(s.http), wrk("/embed", native)),
    ]


def alternatives(artefact: StoredArtefact) -> list[tuple[ServingSettings, str]]:
    """Serving settings to run /embed with besides the build's choice, each with why: the defaults of
    a build without the serving stage, and the choice with every core given to parallel runs (what
    the stage's `request_cores` leaves out). Those equal to the choice are left out."""
    from dataclasses import replace

    from service.repository import unmeasured_settings

    manifest = artefact.manifest
    chosen = manifest.serving.settings if manifest.serving else None
    cores = manifest.profile.intra_op_threads
    candidates = [(unmeasured_settings(manifest.selected), "a build without the serving stage")]
    if chosen is not None and chosen.parallel_sessions < cores:
        candidates.append(
            (replace(chosen, parallel_sessions=cores), "the choice with every core for parallel runs")
        )
    return [(settings, why) for settings, why in candidates if settings != chosen]


def serving_env(settings: ServingSettings) -> dict[str, str]:
    """The `LEANSERVE_*` variables that make a server run with `settings`, whatever the build chose."""
    return {
        "LEANSERVE_THREADS": str(settings.threads),
        "LEANSERVE_PARALLEL_SESSIONS": str(settings.parallel_sessions),
        "LEANSERVE_BATCH_MAX_ROWS": str(settings.batch_max_rows),
        "LEANSERVE_BATCH_WAIT_MS": str(settings.batch_wait_ms),
    }


def measure(phase: Phase, tag: str, homes: Path, load: Load, texts: list[str]) -> Sample:
    """Latency at c=1 on one fresh server, then the C load at each concurrency on another."""
    with _server(phase, tag, homes) as server:
        histograms: list[dict[str, tuple[float, float]]] = []

        def scrape() -> None:
            if phase.protocol is not None:
                histograms.append(server_histograms(server.http, phase.protocol))

        lat = latency(
            phase.client(server), texts, load.n, load.warmup, 120, on_warm=scrape, pause_s=phase.pause_s
        )
        scrape()
    sample = Sample(lat)
    if histograms:
        before, after = histograms
        sample.server_request_ms = _mean_ms(before, after, "request")
        sample.server_inference_ms = _mean_ms(before, after, "inference")
    if phase.load is None:
        return sample
    with _server(phase, tag, homes) as server:
        codes_before = server_codes(server.http, phase.protocol) if phase.protocol else {}
        with RssSampler(server.process.pid) as rss:
            before_mb = rss.now_mb()
            not_2xx = 0
            for concurrency, seconds in zip(CONCURRENCY, load.seconds, strict=True):
                result = phase.load(server, concurrency, seconds)
                sample.per_s[concurrency], sample.p99_ms[concurrency] = result.per_s, result.p99_ms
                not_2xx += result.not_2xx
            time.sleep(2.0)  # in-flight work drains
            after_mb = rss.now_mb()
        sample.rss_mb = (before_mb, rss.peak_mb, after_mb)
        sample.not_200 = not_2xx
        if phase.protocol:
            codes = server_codes(server.http, phase.protocol)
            failed = sum(v - codes_before.get(k, 0.0) for k, v in codes.items() if k != "200")
            sample.not_200 = max(not_2xx, int(failed))
    return sample


@dataclass(frozen=True)
class Shedding:
    concurrency: int
    per_s: float
    shed: int  # answered 503 by the server
    other: int  # any other answer than 200 or 503, and client-side errors
    rss_peak_mb: float


def shedding(tag: str, homes: Path, body: bytes, seconds: float) -> Shedding:
    """Native /embed at SHED_CONCURRENCY connections, past the server's request bound."""
    with fresh_server("leanserve", tag, homes) as server, RssSampler(server.process.pid) as rss:
        before = server_codes(server.http, "rest")
        result = c_load.wrk_post(f"{server.http}/embed", body, SHED_CONCURRENCY, seconds)
        after = server_codes(server.http, "rest")
    delta = {k: int(v - before.get(k, 0.0)) for k, v in after.items()}
    shed = delta.get("503", 0)
    other = sum(v for k, v in delta.items() if k not in ("200", "503")) + max(0, result.not_2xx - shed)
    return Shedding(SHED_CONCURRENCY, result.per_s, shed, other, rss.peak_mb)


def _server(phase: Phase, tag: str, homes: Path) -> contextlib.AbstractContextManager[Any]:
    if phase.server is None:
        return contextlib.nullcontext(None)
    return fresh_server(phase.server, tag, homes, phase.env)


def _median(samples: list[Sample]) -> Sample:
    def mid(values: list[float]) -> float:
        return float(np.median(values))

    lat = Latency(
        mid([s.latency.p50_ms for s in samples]),
        mid([s.latency.p99_ms for s in samples]),
        samples[0].latency.count,
    )
    return Sample(
        lat,
        mid([s.server_request_ms for s in samples]),
        mid([s.server_inference_ms for s in samples]),
        {c: mid([s.per_s[c] for s in samples]) for c in samples[0].per_s},
        {c: mid([s.p99_ms[c] for s in samples]) for c in samples[0].p99_ms},
        max(s.not_200 for s in samples),
        tuple(mid([s.rss_mb[i] for s in samples]) for i in range(3)),  # type: ignore[arg-type]
    )


@dataclass(frozen=True)
class Results:
    about: str
    samples: list[tuple[str, Sample]]
    raw_rows_per_s: float
    shedding: Shedding


def run(tag: str, homes: Path, load: Load, rounds: int) -> Results:
    """Every path once per round (interleaved, so a noisy minute hits all), medians over rounds."""
    from optimise import store

    model = store.get_model(tag)
    artefact = store.artefact(model)
    texts = bench_texts(artefact)
    load_text = sorted(texts, key=len)[len(texts) // 2]
    paths = phases(artefact, load_text)
    samples: dict[str, list[Sample]] = {p.name: [] for p in paths}
    raw_rows: list[float] = []
    for r in range(rounds):
        raw_rows.append(raw_batches(artefact, texts, load.seconds[0]))
        for phase in paths:
            start = time.perf_counter()
            samples[phase.name].append(measure(phase, tag, homes, load, texts))
            print(
                f"round {r + 1} {phase.name}: {samples[phase.name][-1]} ({time.perf_counter() - start:.0f} s)",
                file=sys.stderr,
            )
    shed = shedding(tag, homes, bodies(load_text)[0], load.shed_seconds)
    selected, stage = artefact.manifest.selected, artefact.manifest.serving
    chosen = f"serving stage chose {stage.settings.describe()}" if stage else "no serving stage"
    about = (
        f"minilm {tag}: variant {selected.id} ({selected.precision} {selected.format} on {selected.runtime}, "
        f"{selected.intra_op_threads} threads, batch-invariant: {selected.batch_invariant}; {chosen}); c=1 texts: "
        f"{len(texts)} of {TOKENS[0]}-{TOKENS[1]} tokens; load: one {len(load_text)}-character text; "
        f"{os.cpu_count()} CPUs"
    )
    return Results(
        about, [(name, _median(runs)) for name, runs in samples.items()], float(np.median(raw_rows)), shed
    )


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _ms(value: float) -> str:
    return "-" if np.isnan(value) else f"{value:.2f}"


def table(results: Results, load: Load, rounds: int) -> str:
    raw, base = results.samples[0][1], results.samples[-1][1]
    c32, c64 = CONCURRENCY
    lines = [
        f"## Serving: {results.about}",
        "",
        f"c=1: {load.n} requests after {load.warmup} warm-up, Python client; c={c32} for {load.seconds[0]:.0f} s "
        f"then c={c64} for {load.seconds[1]:.0f} s from wrk (HTTP) / h2load (gRPC), a fresh server per phase; "
        f"medians of {rounds} round(s). In server: mean request and inference times from the server's own "
        "metrics over the timed c=1 requests; their difference is what the server adds. RSS: the server's "
        "processes, before / peak / after the loads.",
        "",
        f"| path | p50 ms (c=1) | p99 ms (c=1) | e2e over raw p50 | in server: request / inference (ms) "
        f"| server adds (ms) | req/s c={c32} | p99 ms c={c32} | req/s c={c64} | p99 ms c={c64} "
        f"| vs baseline c={c32} / c={c64} | not 200 | RSS MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, s in results.samples:
        lat = s.latency
        loaded = bool(s.per_s)
        ratio = (
            f"{s.per_s[c32] / base.per_s[c32]:.2f}x / {s.per_s[c64] / base.per_s[c64]:.2f}x"
            if loaded
            else "-"
        )
        lines.append(
            f"| {name} | {lat.p50_ms:.2f} | {lat.p99_ms:.2f} | {lat.p50_ms - raw.latency.p50_ms:+.2f} "
            f"| {_ms(s.server_request_ms)} / {_ms(s.server_inference_ms)} | {_ms(s.server_adds_ms)} "
            f"| {_rate(s.per_s.get(c32))} | {_ms(s.p99_ms.get(c32, float('nan')))} "
            f"| {_rate(s.per_s.get(c64))} | {_ms(s.p99_ms.get(c64, float('nan')))} | {ratio} "
            f"| {s.not_200 if loaded else '-'} | "
            + (" / ".join(f"{v:.0f}" for v in s.rss_mb) if loaded else "-")
            + " |"
        )
    shed = results.shedding
    lines += [
        "",
        f"Raw session, 32 rows per call (the ceiling of cross-request batching): {results.raw_rows_per_s:.0f} rows/s "
        f"({results.raw_rows_per_s / base.per_s[c32]:.2f}x the baseline's req/s at c={c32}).",
        f"Shedding: native /embed at c={shed.concurrency} (past LEANSERVE_MAX_INFLIGHT_REQUESTS=128) for "
        f"{load.shed_seconds:.0f} s: {shed.per_s:.0f} answers/s, {shed.shed} shed with 503, {shed.other} other "
        f"errors, RSS peak {shed.rss_peak_mb:.0f} MB.",
        "",
        f"Targets (not asserted): {TARGETS}.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--bentoml-home", type=Path, help="model store to reuse or build into (default: temp)"
    )
    parser.add_argument("--space", choices=("default", "fp32-int8"), default="default")
    parser.add_argument("--quick", action="store_true", help="short loads: a smoke run")
    parser.add_argument("--rounds", type=int, default=1, help="repeat every path; medians are shown")
    args = parser.parse_args()
    missing = c_load.available()
    if missing:
        parser.error(missing)
    load = QUICK if args.quick else FULL
    with tempfile.TemporaryDirectory(prefix="serving-bench-") as scratch:
        home = args.bentoml_home or Path(scratch) / "store"
        os.environ["BENTOML_HOME"] = str(home.resolve())  # before bentoml is imported
        os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
        tag = stored_model(args.space)
        results = run(tag, Path(scratch), load, args.rounds)
    print(table(results, load, args.rounds), flush=True)


if __name__ == "__main__":
    main()
