"""The build's last stage: serving settings, measured under concurrent load.

The variant search ranks candidates by batch-1 latency; a service under load is limited by how
many requests per second it answers within a latency bound. For the finalists (the selected
variant and the next-fastest feasible one) this stage runs `concurrency` closed-loop clients, each
sending one-row requests back to back (the rows of the evaluation set, text cut to its own length),
each doing the service's own per-request work around its call (`request_cpu_ms` of Python: without
it, settings that give both cores to the model win here and lose in the real server, where the
request path needs a core too), through the `ServingSession` the service serves with, across serving settings: intra-op threads,
parallel sessions, and for batch-invariant variants the batch size and wait. The winner for each
variant is the setting with the most requests/s whose p99 stays within the bound (settings within
`TIE_SHARE` of the most count as equal: the lower p99 wins); with none inside the bound, the lowest
p99. Everything runs in this process: no server, no network.

The grid is searched in two steps to keep the stage short: threads (1, the profile's) x parallel
sessions (1, the profile's threads) without batching, then, at the variant's own thread count (what a
lone request runs on, which the variant search measured), parallel batches (1 up to the profile's
threads less `request_cores`) x batch rows x wait.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from optimise.evaluate import unpadded_rows
from optimise.runtimes import InferenceSession, open_session
from optimise.runtimes.serving import ServingSession
from optimise.select import Selection
from optimise.types import Batch, HardwareProfile, ServingChoice, ServingSettings, ServingTrial, Variant

logger = logging.getLogger(__name__)

DEFAULT_CONCURRENCY = 32
DEFAULT_P99_MS = 200.0
"""Lenient by default: it keeps out settings with a starved tail, not settings a 1 s window's p99
noise puts just over a tight line (MiniLM at 32 clients in process: p99 70-110 ms for the best)."""
DEFAULT_SECONDS = 1.0
DEFAULT_REQUEST_CORES = 1
DEFAULT_REQUEST_CPU_MS = 0.5
"""What the server adds per request on the 2-core CPU profile: 0.3-0.5 ms by protocol, measured by
`benchmarks/serving_bench.py` ("server adds": its request minus inference histograms)."""
WARM_UP_S = 0.2  # of each trial, not counted: first runs of a new session and thread start-up
MAX_REQUESTS = 64  # distinct request rows the clients cycle through
BATCH_ROWS = (8, 32)
BATCH_WAITS_MS = (0.0, 2.0)
TIE_SHARE = 0.03
"""Settings within this share of the most requests/s count as equally fast (run-to-run noise here
is about that size); among them the lowest p99 wins."""


@dataclass(frozen=True)
class ServingTarget:
    """What the serving stage aims at. Raises ValueError for values out of range."""

    concurrency: int = DEFAULT_CONCURRENCY
    """Closed-loop clients, each with one request in flight."""
    p99_bound_ms: float | None = DEFAULT_P99_MS
    """Settings whose p99 latency exceeds this are not chosen while any other stays within it."""
    seconds: float = DEFAULT_SECONDS
    """Measured seconds per setting (after `WARM_UP_S`)."""
    request_cores: int = DEFAULT_REQUEST_CORES
    """Cores left to the request path when batching: merged batches in flight at once
    (`parallel_sessions`, one thread each) are searched up to the profile's threads less these.
    Through the real server on 2 cores (wrk, 32 clients), two parallel one-thread batches served
    732-752 req/s and one 976-1,073 (this stage, in process, ranked them the other way), and merged
    batches on 2 threads 807 req/s against 992 on one: what the model takes, the request path's
    Python lacks. Without batching each request pays a whole run, and parallel one-thread runs on
    every core served more (701 req/s, against 455-469 one at a time): searched up to all cores."""
    request_cpu_ms: float = DEFAULT_REQUEST_CPU_MS
    """The service's own CPU work per request outside the model (Python holding the GIL: the front
    door, parsing, tokenising, encoding the answer), done by each client around its call."""
    finalists: int = 2
    """Variants measured: the selected one and the next-fastest feasible ones."""
    select_variant: bool = False
    """Store the finalist that serves the most requests/s within the bound, not the batch-1 winner."""

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError(f"the serving concurrency must be at least 1, got {self.concurrency}")
        if self.p99_bound_ms is not None and self.p99_bound_ms <= 0:
            raise ValueError(f"the serving p99 bound must be positive, got {self.p99_bound_ms} ms")
        if self.request_cores < 0:
            raise ValueError(f"the cores left to requests must not be negative, got {self.request_cores}")
        if self.request_cpu_ms < 0:
            raise ValueError(f"the per-request CPU time must not be negative, got {self.request_cpu_ms} ms")
        if self.seconds <= 0:
            raise ValueError(f"the seconds per serving setting must be positive, got {self.seconds}")
        if self.finalists < 1:
            raise ValueError(f"at least one serving finalist is needed, got {self.finalists}")


def request_rows(inputs: Batch, limit: int = MAX_REQUESTS) -> list[Batch]:
    """One single-row request per row of `inputs` (at most `limit`): what a client sends, text cut to
    its own length as the service tokenises a request (`unpadded_rows`). Raises ValueError for an
    empty batch."""
    requests = list(itertools.islice(unpadded_rows(inputs), limit))
    if not requests:
        raise ValueError("no inputs to send as requests")
    return requests


def serving_stage(
    selection: Selection,
    variants: Sequence[Variant],
    inputs: Batch,
    profile: HardwareProfile,
    target: ServingTarget,
) -> tuple[Variant, ServingChoice]:
    """Measure the finalists' serving settings; returns the variant to store (the selected one, or
    with `target.select_variant` the one serving the most requests/s within the bound) and its choice."""
    requests = request_rows(inputs)
    finalists = _finalists(selection, variants, target.finalists)
    trials: list[ServingTrial] = []
    for variant in finalists:
        trials += search_variant(variant, profile, requests, target)
    best = {v.id: choose(trials_of(trials, v.id), target)[0] for v in finalists}
    stored = selection.winner
    if target.select_variant:
        stored = max(finalists, key=lambda v: (_within(best[v.id], target), best[v.id].requests_per_s))
    winning, reason = choose(trials_of(trials, stored.id), target)
    choice = ServingChoice(
        variant_id=stored.id,
        settings=winning.settings,
        concurrency=target.concurrency,
        p99_bound_ms=target.p99_bound_ms,
        seconds_per_trial=target.seconds,
        reason=reason,
        trials=tuple(trials),
        request_cpu_ms=target.request_cpu_ms,
        request_cores=target.request_cores,
        select_variant=target.select_variant,
    )
    return stored, choice


def trials_of(trials: Sequence[ServingTrial], variant_id: str) -> list[ServingTrial]:
    return [t for t in trials if t.variant_id == variant_id]


def _finalists(selection: Selection, variants: Sequence[Variant], count: int) -> list[Variant]:
    feasible = [
        v
        for v in variants
        if v.id != selection.winner.id and v.metrics is not None and _feasible(selection, v.id)
    ]
    feasible.sort(key=lambda v: v.metrics.latency_p50_ms if v.metrics else float("inf"))
    return [selection.winner, *feasible[: count - 1]]


def _feasible(selection: Selection, variant_id: str) -> bool:
    verdict = selection.verdicts.get(variant_id)
    return verdict is not None and verdict.feasible


def search_variant(
    variant: Variant, profile: HardwareProfile, requests: Sequence[Batch], target: ServingTarget
) -> list[ServingTrial]:
    """The two-step grid (see the module docstring) for one variant, every trial in order."""
    opened = _session_cache(variant, profile.execution_providers)
    cores = max(1, profile.intra_op_threads)
    counts = sorted({1, cores})
    batch_runners = sorted({1, max(1, cores - target.request_cores)})

    def trial(settings: ServingSettings) -> ServingTrial:
        result = measure(variant.id, opened, settings, requests, target)
        logger.info(
            "serving %s with %s: %.0f req/s, p99 %.1f ms",
            variant.id,
            settings.describe(),
            result.requests_per_s,
            result.latency_p99_ms,
        )
        return result

    trials = [trial(ServingSettings(threads, parallel)) for threads in counts for parallel in counts]
    if variant.batch_invariant:
        # Merged batches run on one thread each; `threads` then only serves a request that runs
        # alone, a batch-1 matter the variant search measured (this load cannot see it).
        threads = variant.intra_op_threads
        trials += [
            trial(ServingSettings(threads, parallel, rows, wait))
            for parallel in batch_runners
            for rows in BATCH_ROWS
            for wait in BATCH_WAITS_MS
        ]
    return trials


def _session_cache(variant: Variant, providers: Sequence[str]) -> Callable[[int, int], InferenceSession]:
    """Sessions by (threads, streams), opened once for all the variant's trials."""

    @cache
    def opened(threads: int, streams: int) -> InferenceSession:
        return open_session(
            variant.runtime,
            Path(variant.artefact),
            threads,
            providers,
            dict(variant.runtime_settings),
            streams,
        )

    return opened


def measure(
    variant_id: str,
    opened: Callable[[int, int], InferenceSession],
    settings: ServingSettings,
    requests: Sequence[Batch],
    target: ServingTarget,
) -> ServingTrial:
    """`target.concurrency` clients on one `ServingSession` with `settings` for `WARM_UP_S` +
    `target.seconds`; latency is from a request's call to its answer, in the calling thread."""
    session = ServingSession(opened, settings)
    try:
        serve = _with_server_work(session.run, target.request_cpu_ms / 1e3)
        latencies, in_window, errors = _closed_loop(serve, requests, target.concurrency, target.seconds)
    finally:
        session.close()
    if not latencies:
        return ServingTrial(variant_id, settings, 0.0, 0.0, 0.0, errors)  # never chosen: no answers
    p50, p99 = np.percentile(latencies, [50, 99]) * 1e3
    return ServingTrial(variant_id, settings, in_window / target.seconds, float(p50), float(p99), errors)


def _with_server_work(run: Callable[[Batch], object], cpu_s: float) -> Callable[[Batch], object]:
    """`run` with the service's own work per request around it, `cpu_s` of Python in all (counted
    in thread CPU time, so it holds the GIL and a core as the server's request path does): half in
    one shared thread, one request after another, as the server's event loop reads, routes and
    writes every request (51 % of the Python time per request at 32 clients, `py-spy`); half in the
    caller's thread (parsing, tokenising, encoding the answer), half of that before the model."""
    if cpu_s <= 0:
        return run
    event_loop = ThreadPoolExecutor(1, thread_name_prefix="serving-loop")

    def served(request: Batch) -> object:
        event_loop.submit(_python_work, cpu_s / 4).result()
        _python_work(cpu_s / 4)
        answer = run(request)
        _python_work(cpu_s / 4)
        event_loop.submit(_python_work, cpu_s / 4).result()
        return answer

    weakref.finalize(served, event_loop.shutdown, wait=False)
    return served


def _python_work(cpu_s: float) -> None:
    until = time.thread_time() + cpu_s
    while time.thread_time() < until:
        pass


def _closed_loop(
    run: Callable[[Batch], object], requests: Sequence[Batch], concurrency: int, seconds: float
) -> tuple[list[float], int, int]:
    """Latencies (s) of the requests answered from the end of the warm-up on (also those answered
    after the window: a request starved through the whole window still counts, with its whole wait),
    how many were answered inside the window, and the calls that raised."""
    window: list[float] = []
    start = threading.Barrier(concurrency + 1)
    calls: list[list[tuple[float, float]]] = [[] for _ in range(concurrency)]
    errors = [0] * concurrency

    def client(number: int) -> None:
        mine, index = calls[number], number
        start.wait()
        end = window[1]
        while (began := time.perf_counter()) < end:
            try:
                run(requests[index % len(requests)])
            except Exception:
                errors[number] += 1
            mine.append((began, time.perf_counter()))
            index += concurrency

    clients = [threading.Thread(target=client, args=(n,), name="serving-client") for n in range(concurrency)]
    for thread in clients:
        thread.start()
    now = time.perf_counter()
    window[:] = [now + WARM_UP_S, now + WARM_UP_S + seconds]
    start.wait()
    for thread in clients:
        thread.join()
    counted_from, end = window
    answered = [(began, done) for mine in calls for began, done in mine if done >= counted_from]
    return (
        [done - began for began, done in answered],
        sum(1 for _, done in answered if done <= end),
        sum(errors),
    )


def choose(trials: Sequence[ServingTrial], target: ServingTarget) -> tuple[ServingTrial, str]:
    """The winning trial and one sentence on why (see the module docstring). Raises ValueError when
    every trial had errors."""
    working = [t for t in trials if _answered(t)]
    if not working:
        raise ValueError("every serving setting failed under load")
    bound = target.p99_bound_ms
    within = [t for t in working if _within(t, target)]
    at = f"at concurrency {target.concurrency}"
    if not within:
        best = min(working, key=lambda t: t.latency_p99_ms)
        return best, (
            f"no setting kept p99 within {bound:g} ms {at}; the lowest p99: "
            f"{best.latency_p99_ms:.1f} ms at {best.requests_per_s:,.0f} req/s"
        )
    most = max(t.requests_per_s for t in within)
    tied = [t for t in within if t.requests_per_s >= most * (1 - TIE_SHARE)]
    best = min(tied, key=lambda t: t.latency_p99_ms)
    limit = f" with p99 <= {bound:g} ms" if bound is not None else ""
    sentence = f"most requests/s {at}{limit}: {best.requests_per_s:,.0f}/s, p99 {best.latency_p99_ms:.1f} ms"
    if len(tied) > 1:
        sentence += f" (lowest p99 of {len(tied)} within {TIE_SHARE:.0%} of the most)"
    return best, sentence


def best_of(trials: Sequence[ServingTrial], choice: ServingChoice) -> ServingTrial | None:
    """The trial `choose` picks from `trials` under the stage's own target; None when none answered."""
    if not any(_answered(t) for t in trials):
        return None
    return choose(trials, target_of(choice))[0]


def target_of(choice: ServingChoice) -> ServingTarget:
    """The target the stage that made `choice` measured under."""
    return ServingTarget(
        choice.concurrency,
        choice.p99_bound_ms,
        choice.seconds_per_trial,
        request_cores=choice.request_cores,
        request_cpu_ms=choice.request_cpu_ms,
    )


def best_unbatched(choice: ServingChoice) -> ServingSettings | None:
    """The best setting without batching the stage measured for the variant it chose for: what
    serves that variant when batching is turned off (`LEANSERVE_BATCH_MAX_ROWS=1`); None if none."""
    unbatched = [t for t in trials_of(choice.trials, choice.variant_id) if not t.settings.batching]
    best = best_of(unbatched, choice)
    return best.settings if best is not None else None


def _answered(trial: ServingTrial) -> bool:
    return trial.errors == 0 and trial.requests_per_s > 0


def _within(trial: ServingTrial, target: ServingTarget) -> bool:
    return target.p99_bound_ms is None or trial.latency_p99_ms <= target.p99_bound_ms
