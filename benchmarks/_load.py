"""A small closed-loop load generator: sequential latency, and throughput from N threads.

A *call factory* builds one client (one connection) and returns `call(text)`, which
sends one request and waits for the decoded answer; each thread gets its own.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np

Call = Callable[[str], object]
CallFactory = Callable[[], Call]


@dataclass(frozen=True)
class Latency:
    p50_ms: float
    p99_ms: float
    count: int


@dataclass(frozen=True)
class Throughput:
    per_s: float
    count: int
    errors: int
    seconds: float


def latency(
    factory: CallFactory,
    texts: list[str],
    n: int,
    warmup: int,
    max_s: float,
    on_warm: Callable[[], object] | None = None,
    pause_s: float = 0.0,
) -> Latency:
    """One request at a time: `warmup` untimed, then up to `n` timed (or until `max_s`);
    `on_warm` runs between the two; `pause_s` of idle (untimed) before each timed request."""
    call = factory()
    for i in range(warmup):
        call(texts[i % len(texts)])
    if on_warm is not None:
        on_warm()
    samples: list[float] = []
    deadline = time.perf_counter() + max_s
    for i in range(n):
        if pause_s:
            time.sleep(pause_s)
        start = time.perf_counter()
        call(texts[(warmup + i) % len(texts)])
        samples.append(time.perf_counter() - start)
        if start > deadline:
            break
    return _summary(samples)


def _summary(seconds: list[float]) -> Latency:
    ms = np.array(seconds) * 1e3
    return Latency(float(np.percentile(ms, 50)), float(np.percentile(ms, 99)), len(ms))


def paired_latency(
    factories: tuple[CallFactory, CallFactory], texts: list[str], n: int, warmup: int
) -> tuple[Latency, Latency]:
    """Two servers, one request at a time, alternating A B / B A: a noisy moment hits both alike."""
    calls = [factory() for factory in factories]
    for i in range(warmup):
        for call in calls:
            call(texts[i % len(texts)])
    samples: list[list[float]] = [[], []]
    for i in range(n):
        for side in (0, 1) if i % 2 else (1, 0):
            start = time.perf_counter()
            calls[side](texts[i % len(texts)])
            samples[side].append(time.perf_counter() - start)
    return _summary(samples[0]), _summary(samples[1])


def throughput(
    factory: CallFactory, texts: list[str], concurrency: int, max_requests: int, max_s: float, warmup: int = 2
) -> Throughput:
    """`concurrency` threads, each with its own client, send back to back until `max_requests`
    requests in all or `max_s` seconds; completed requests per second of the timed window."""
    ticket = itertools.count()
    ready = threading.Barrier(concurrency + 1)
    done = [0] * concurrency
    errors = [0] * concurrency
    finished = [0.0] * concurrency
    deadline = [float("inf")]
    failures: list[BaseException] = []

    def worker(slot: int) -> None:
        try:
            call = factory()
            for i in range(warmup):  # connect, and let the server see the load before timing
                call(texts[(slot + i) % len(texts)])
        except BaseException as exc:
            failures.append(exc)
            ready.abort()
            return
        try:
            ready.wait()
        except threading.BrokenBarrierError:
            return
        while (k := next(ticket)) < max_requests and time.perf_counter() < deadline[0]:
            try:
                call(texts[k % len(texts)])
                done[slot] += 1
            except Exception:
                errors[slot] += 1
        finished[slot] = time.perf_counter()

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(concurrency)]
    for t in threads:
        t.start()
    try:
        ready.wait(timeout=120)
    except threading.BrokenBarrierError:
        raise RuntimeError(f"a load thread failed to start: {failures[:1]!r}") from None
    start = time.perf_counter()
    deadline[0] = start + max_s
    for t in threads:
        t.join(timeout=max_s + 120)
    seconds = max(finished) - start
    return Throughput(sum(done) / seconds, sum(done), sum(errors), seconds)


def median(runs: list[tuple[Latency, Throughput]]) -> tuple[Latency, Throughput]:
    """Medians of several rounds (counts and errors summed)."""
    lats, thrs = [r[0] for r in runs], [r[1] for r in runs]
    return (
        Latency(
            float(np.median([x.p50_ms for x in lats])),
            float(np.median([x.p99_ms for x in lats])),
            sum(x.count for x in lats),
        ),
        Throughput(
            float(np.median([x.per_s for x in thrs])),
            sum(x.count for x in thrs),
            sum(x.errors for x in thrs),
            sum(x.seconds for x in thrs),
        ),
    )


# -- clients: one text per request, the answer decoded as a user would ---------------------
def rest(base_url: str) -> CallFactory:
    """POST /embed {"texts": [text]} with httpx (keep-alive), JSON answer parsed."""

    def factory() -> Call:
        client = httpx.Client(base_url=base_url, timeout=60)

        def call(text: str) -> object:
            response = client.post("/embed", json={"texts": [text]})
            response.raise_for_status()
            return response.json()

        return call

    return factory


def oip(module: Any, url: str, model: str, output: str) -> CallFactory:
    """tritonclient.http or tritonclient.grpc: one BYTES "text" in, the named output out."""

    def factory() -> Call:
        client = module.InferenceServerClient(url)
        wanted = [module.InferRequestedOutput(output)]

        def call(text: str) -> object:
            tensor = module.InferInput("text", [1], "BYTES")
            tensor.set_data_from_numpy(np.array([text.encode()], dtype=object))
            return client.infer(model, [tensor], outputs=wanted).as_numpy(output)

        return call

    return factory


# -- protocol floors: a round trip that does no inference, through the same client and stack --
def rest_floor(base_url: str) -> CallFactory:
    """GET /livez with httpx: BentoML's HTTP stack and middlewares, no model."""

    def factory() -> Call:
        client = httpx.Client(base_url=base_url, timeout=60)

        def call(_: str) -> object:
            return client.get("/livez").raise_for_status()

        return call

    return factory


def oip_floor(module: Any, url: str) -> CallFactory:
    """tritonclient's server-live call (GET /v2/health/live, or the ServerLive RPC)."""

    def factory() -> Call:
        client = module.InferenceServerClient(url)
        return lambda _: client.is_server_live()

    return factory
