"""Memory under large payloads: worker RSS before, at peak and after, and the largest request served
at a steady rate.

    .venv/bin/python benchmarks/memory_bench.py --bentoml-home DIR [--quick]

One `leanserve serve` (both demos; built into DIR first if the store has none) takes, in turn:
- phases of N clients each sending 256 texts of 20,000 characters to /v2/models/minilm/infer
  (about 5 MB of JSON a request), drained between phases: RSS after each phase must stay flat;
- the same on native /embed;
- gRPC digits batches of 30,000 rows (7.7 MB of raw FP32 contents, under the 8 MiB limit);
then a sweep of request sizes at 4 clients for 10 s each: requests/s, MB/s and the share answered
200 (the rest refused with 503 by the in-flight budget, never queued). RSS is the server worker's,
sampled every 0.2 s. The load generator shares the 2 cores: read rates as rates of this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests"), str(REPO / "tests" / "integration")]
TEXT_CHARS = 20_000
MiB = 2**20


@dataclass(frozen=True)
class Outcome:
    ok: int = 0
    refused: int = 0  # 503 / RESOURCE_EXHAUSTED: the budget's deliberate load shedding
    failed: int = 0
    seconds: float = 0.0


def long_texts(count: int) -> list[str]:
    from optimise.demos.minilm import DATA_DIR, read_lines

    lines = read_lines(DATA_DIR / "minilm_fidelity.txt")
    rng = np.random.default_rng(0)
    return [" ".join(rng.choice(lines, 400))[:TEXT_CHARS] for _ in range(count)]


def stored_demos() -> list[str]:
    from optimise import store

    tags = []
    for name in ("minilm", "digits"):
        existing = store.list_models(name)
        if existing:
            tags.append(name)
            continue
        from builds import FP32_AND_INT8
        from servers import build_demo

        print(f"building {name} into {os.environ['BENTOML_HOME']} ...", file=sys.stderr)
        tags.append(build_demo(name, FP32_AND_INT8))
    return tags


class RssSampler:
    """The worker's RSS every `interval_s` in a thread; `peak` since the last `reset`."""

    def __init__(self, server_pid: int, interval_s: float = 0.2) -> None:
        self.server = psutil.Process(server_pid)
        self.interval_s = interval_s
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def now_mb(self) -> float:
        workers = self.server.children(recursive=True)
        return max((p.memory_info().rss for p in workers), default=0) / MiB

    def reset(self) -> float:
        self.peak = self.now_mb()
        return self.peak

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.peak = max(self.peak, self.now_mb())
            except psutil.Error:
                return

    def stop(self) -> None:
        self._stop.set()


def run_clients(call_factory: Callable[[], Callable[[], int]], clients: int, seconds: float) -> Outcome:
    """`clients` threads send back to back for `seconds`; each call returns an HTTP-like status."""
    counts = {"ok": 0, "refused": 0, "failed": 0}
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def worker() -> None:
        call = call_factory()
        while time.perf_counter() < deadline:
            status = call()
            key = "ok" if status == 200 else "refused" if status == 503 else "failed"
            with lock:
                counts[key] += 1

    start = time.perf_counter()
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=seconds + 300)
    return Outcome(counts["ok"], counts["refused"], counts["failed"], time.perf_counter() - start)


def http_poster(base_url: str, path: str, body: bytes) -> Callable[[], Callable[[], int]]:
    def factory() -> Callable[[], int]:
        client = httpx.Client(base_url=base_url, timeout=300)
        headers = {"content-type": "application/json"}
        return lambda: client.post(path, content=body, headers=headers).status_code

    return factory


def grpc_digits(address: str, rows: int) -> Callable[[], Callable[[], int]]:
    import tritonclient.grpc as triton
    from tritonclient.utils import InferenceServerException

    pixels = np.random.default_rng(0).random((rows, 1, 8, 8), dtype=np.float32)

    def factory() -> Callable[[], int]:
        client = triton.InferenceServerClient(address)
        tensor = triton.InferInput("pixels", list(pixels.shape), "FP32")
        tensor.set_data_from_numpy(pixels)

        def call() -> int:
            try:
                client.infer("digits", [tensor], client_timeout=300)
            except InferenceServerException as exc:
                return 503 if "RESOURCE_EXHAUSTED" in str(exc.status()) else 500
            return 200

        return call

    return factory


def v2_texts(count: int) -> bytes:
    body = {"inputs": [{"name": "text", "shape": [count], "datatype": "BYTES", "data": long_texts(count)}]}
    return json.dumps(body).encode()


def phases(server: Any, sampler: RssSampler, clients: int, seconds: float, rounds: int) -> list[str]:
    http, grpc_address = server.http, server.grpc
    loads = [
        ("OIP v2 REST, 256 texts x 20k chars", http_poster(http, "/v2/models/minilm/infer", v2_texts(256))),
        ("native /embed, 256 texts x 20k chars", http_poster(http, "/embed", json.dumps({"texts": long_texts(256)}).encode())),
        ("OIP v2 gRPC, digits 30,000 rows", grpc_digits(grpc_address, 30_000)),
    ]  # fmt: skip
    rows = [
        "| load | phase | ok | refused (503) | failed | RSS before MB | peak MB | after drain MB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, factory in loads:
        for phase in range(1, rounds + 1):
            before = sampler.reset()
            outcome = run_clients(factory, clients, seconds)
            peak = sampler.peak
            time.sleep(3)  # drained: the clients have their answers
            after = sampler.now_mb()
            rows.append(
                f"| {name} | {phase} | {outcome.ok} | {outcome.refused} | {outcome.failed} "
                f"| {before:.0f} | {peak:.0f} | {after:.0f} |"
            )
            print(rows[-1], file=sys.stderr)
    return rows


def sweep(server: Any, seconds: float) -> list[str]:
    http, grpc_address = server.http, server.grpc
    rows = [
        "| request | MB each | req/s | MB/s | answered 200 |",
        "|---|---|---|---|---|",
    ]
    sizes: list[tuple[str, float, Callable[[], Callable[[], int]]]] = []
    for count in (16, 64, 256):
        body = v2_texts(count)
        sizes.append((f"REST v2, {count} texts x 20k chars", len(body) / MiB, http_poster(http, "/v2/models/minilm/infer", body)))  # fmt: skip
    for rows_per_request in (1_000, 8_000, 30_000):
        sizes.append((f"gRPC digits, {rows_per_request} rows", rows_per_request * 256 / MiB, grpc_digits(grpc_address, rows_per_request)))  # fmt: skip
    for name, megabytes, factory in sizes:
        outcome = run_clients(factory, 4, seconds)
        total = outcome.ok + outcome.refused + outcome.failed
        rate = outcome.ok / outcome.seconds
        rows.append(
            f"| {name} | {megabytes:.2f} | {rate:.2f} | {rate * megabytes:.1f} | {outcome.ok}/{total} |"
        )
        print(rows[-1], file=sys.stderr)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bentoml-home", type=Path, default=None, help="model store (default: a temp dir)")
    parser.add_argument("--quick", action="store_true", help="short phases (a smoke run, not figures)")
    parser.add_argument("--clients", type=int, default=16)
    args = parser.parse_args()
    home = args.bentoml_home or Path(tempfile.mkdtemp(prefix="leanserve-memory-bench-"))
    os.environ["BENTOML_HOME"] = str(home)
    import servers

    seconds, rounds, sweep_s = (6.0, 2, 4.0) if args.quick else (30.0, 5, 10.0)
    tags = stored_demos()
    serve_home = Path(tempfile.mkdtemp(prefix="leanserve-memory-serve-")) / "bentoml"
    server = servers.start_server(serve_home, tags, via_cli=True)
    sampler = RssSampler(server.process.pid)
    try:
        idle = sampler.now_mb()
        load_rows = phases(server, sampler, args.clients, seconds, rounds)
        sweep_rows = sweep(server, sweep_s)
        settled = sampler.now_mb()
    finally:
        sampler.stop()
        servers.stop_server(server)
    print(f"\nworker RSS idle after start-up: {idle:.0f} MB; after everything: {settled:.0f} MB")
    print(f"\n{args.clients} clients, {seconds:.0f} s phases, 3 s drain between phases\n")
    print("\n".join(load_rows))
    print(f"\nRequest sizes at 4 clients, {sweep_s:.0f} s each\n")
    print("\n".join(sweep_rows))


if __name__ == "__main__":
    main()
