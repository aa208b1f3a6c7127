"""Load from C programs, so the client does not eat the server's CPU: wrk for HTTP/1.1, h2load for gRPC.

Both are Debian packages (`make tools` installs them with the test tools). Each run
sends one fixed request body at a fixed concurrency (connections, one request in flight on each) for
a fixed time, and reports requests/s, p50/p99 latency and what was not answered 2xx.

h2load sees HTTP/2 statuses, not gRPC's (a gRPC error is HTTP 200 with `grpc-status` in the
trailers), so gRPC errors are counted by the server (`leanserve_requests_total` by code), as the
caller of these functions does for every protocol.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

INSTALL = "make tools, or apt-get install wrk nghttp2-client"


@dataclass(frozen=True)
class LoadResult:
    per_s: float
    p50_ms: float
    p99_ms: float
    requests: int
    not_2xx: int  # HTTP statuses outside 2xx, plus socket errors and timeouts
    seconds: float


def available() -> str | None:
    """None when wrk and h2load are installed; else what is missing and how to install it."""
    missing = [tool for tool in ("wrk", "h2load") if shutil.which(tool) is None]
    return f"{', '.join(missing)} not installed ({INSTALL})" if missing else None


def _lua_string(text: str) -> str:
    level = "=" * 4
    while f"]{level}]" in text:
        level += "="
    return f"[{level}[{text}]{level}]"


def wrk_post(
    url: str, body: bytes, concurrency: int, seconds: float, content_type: str = "application/json"
) -> LoadResult:
    """POST `body` to `url` from `concurrency` connections for `seconds` with wrk (one thread)."""
    script = "\n".join(
        [
            'wrk.method = "POST"',
            f"wrk.body = {_lua_string(body.decode())}",
            f'wrk.headers["Content-Type"] = "{content_type}"',
        ]
    )
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as lua:
        lua.write(script)
        lua.flush()
        command = ["wrk", "-t1", f"-c{concurrency}", f"-d{seconds:.0f}s", "--latency", "--timeout", "10s"]
        output = subprocess.run(
            [*command, "-s", lua.name, url], capture_output=True, text=True, check=True
        ).stdout
    return parse_wrk(output, seconds)


_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(value: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value.strip()).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS_MS[unit]


def parse_wrk(output: str, seconds: float) -> LoadResult:
    """wrk's --latency report as a LoadResult; ValueError naming what is missing."""

    def find(pattern: str) -> re.Match[str]:
        match = re.search(pattern, output)
        if match is None:
            raise ValueError(f"wrk printed no {pattern!r}:\n{output}")
        return match

    requests = int(find(r"(\d+) requests in")[1])
    not_2xx = int(m[1]) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", output)) else 0
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output):
        not_2xx += sum(int(g) for g in m.groups())
    return LoadResult(
        per_s=float(find(r"Requests/sec:\s+([\d.]+)")[1]),
        p50_ms=_ms(find(r"\n\s+50%\s+(\S+)")[1]),
        p99_ms=_ms(find(r"\n\s+99%\s+(\S+)")[1]),
        requests=requests,
        not_2xx=not_2xx,
        seconds=seconds,
    )


def grpc_frame(message: bytes) -> bytes:
    """A gRPC length-prefixed message: no compression, 4-byte big-endian length, the message."""
    return b"\x00" + len(message).to_bytes(4, "big") + message


def h2load_grpc(address: str, method: str, message: bytes, concurrency: int, seconds: float) -> LoadResult:
    """Call the unary gRPC `method` ("/package.Service/Method") at `address` (host:port) with the
    serialised `message`, from `concurrency` HTTP/2 connections (one stream each) for `seconds`."""
    with tempfile.TemporaryDirectory() as scratch:
        body, log = Path(scratch) / "body", Path(scratch) / "log.tsv"
        body.write_bytes(grpc_frame(message))
        command = [
            "h2load",
            f"-c{concurrency}",
            "-m1",
            "-t1",
            f"-D{seconds:.0f}",
            "--warm-up-time=1",
            f"--data={body}",
            "--header=content-type: application/grpc",
            "--header=te: trailers",
            f"--log-file={log}",
            f"http://{address}{method}",
        ]
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        rows = [line.split("\t") for line in log.read_text().splitlines() if line.strip()]
    return parse_h2load(output, rows, seconds)


def parse_h2load(output: str, log_rows: list[list[str]], seconds: float) -> LoadResult:
    """h2load's summary and per-request log (start µs, status, elapsed µs) as a LoadResult."""
    match = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", output)
    done = re.search(
        r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored", output
    )
    if match is None or done is None:
        raise ValueError(f"h2load printed no summary:\n{output}")
    elapsed_ms = (
        np.array([int(r[2]) / 1e3 for r in log_rows if len(r) >= 3]) if log_rows else np.array([np.nan])
    )
    not_2xx = sum(1 for r in log_rows if len(r) >= 2 and not r[1].startswith("2")) + int(done[4])
    return LoadResult(
        per_s=float(match[1]),
        p50_ms=float(np.percentile(elapsed_ms, 50)),
        p99_ms=float(np.percentile(elapsed_ms, 99)),
        requests=int(done[1]),
        not_2xx=not_2xx,
        seconds=seconds,
    )
