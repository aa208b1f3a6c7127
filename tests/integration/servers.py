"""Real servers for integration tests: the demos built into the session's model store, then
`bentoml serve` subprocesses, each with its own BENTOML_HOME (a server wipes its home's
Prometheus directory at start) sharing the session's models, on free loopback ports."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from builds import build_and_save

from optimise.sources import load_source
from optimise.space import SearchSpace

REPO = Path(__file__).resolve().parents[2]
ADMIN_TOKEN = "integration-test-token"
# The closed loop, fast: one-second drift windows of 150 rows, acting after two drifted windows.
FAST_CLOSED_LOOP = {
    "LEANSERVE_DRIFT_INTERVAL_S": "1",
    "LEANSERVE_DRIFT_MIN_SAMPLES": "100",
    "LEANSERVE_DRIFT_WINDOW_SIZE": "150",
    "LEANSERVE_DRIFT_SAMPLE_RATE": "1.0",
    "LEANSERVE_REOPTIMISE_ENABLED": "true",
    "LEANSERVE_REOPTIMISE_WINDOWS": "2",
    "LEANSERVE_REOPTIMISE_COOLDOWN_S": "0",
}


def build_demo(name: str, space: SearchSpace, runtime: str | None = None, profile: str = "cpu") -> str:
    return build_and_save(load_source(name), space, name, runtime, profile)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    http: str
    grpc: str
    process: subprocess.Popen[bytes]
    log: Path

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.http, timeout=60)


def start_server(
    home: Path,
    models: list[str],
    extra_env: dict[str, str] | None = None,
    target: str = "service.app:LeanServe",
    via_cli: bool = False,
    new_session: bool = False,
    ports: tuple[int, int] | None = None,
    wait_for: str = "/readyz",
) -> Server:
    """Serve `target` (leanserve by default; a benchmark's baseline service too) until `wait_for` is 200
    (`/livez` for a server that is not meant to be ready).

    `via_cli` starts it as users do, with `leanserve serve` (else `bentoml serve`); `new_session`
    starts it in a session and process group of its own (as `setsid` would); `home` may be shared
    by several servers (it links the session's model store once).
    """
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "models").exists():
        (home / "models").symlink_to(Path(os.environ["BENTOML_HOME"]) / "models")
    http_port, grpc_port = ports or (free_port(), free_port())
    env = dict(
        os.environ,
        BENTOML_HOME=str(home),
        LEANSERVE_GRPC_PORT=str(grpc_port),
        LEANSERVE_ADMIN_TOKEN=ADMIN_TOKEN,
    )
    env["LEANSERVE_MODELS"] = ",".join(models)
    env["LEANSERVE_REOPTIMISE_ENABLED"] = "false"  # only the closed-loop test turns it on
    env.update(extra_env or {})
    log = home / f"server-{http_port}.log"
    bin_dir = Path(sys.executable).parent
    if via_cli:
        command = [str(bin_dir / "leanserve"), "serve", "--grpc-port", str(grpc_port)]
    else:
        command = [str(bin_dir / "bentoml"), "serve", target]
    command += ["--host", "127.0.0.1", "--port", str(http_port)]
    process = subprocess.Popen(
        command,
        cwd=REPO,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=new_session,
    )
    server = Server(f"http://127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}", process, log)
    _wait_ready(server, wait_for)
    return server


def _wait_ready(server: Server, path: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"server exited: {server.log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{server.http}{path}", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    stop_server(server)
    raise RuntimeError(f"server not ready after {timeout} s: {server.log.read_text()[-3000:]}")


def stop_server(server: Server) -> None:
    """SIGTERM, as Kubernetes stops a pod; the shutdown hooks (gRPC, drift monitor) must succeed."""
    server.process.terminate()
    try:
        server.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.process.kill()
        raise AssertionError(f"the server ignored SIGTERM for 30 s; log: {server.log}") from None
    log = server.log.read_text(errors="replace")
    if "shutdown failed" in log:
        raise AssertionError(f"the server's shutdown failed:\n{log[-3000:]}")


def digits_infer_body(pixels: Any) -> dict[str, Any]:
    """An OIP v2 JSON request for the digits model: a [N, 1, 8, 8] float array as one FP32 tensor."""
    return {
        "inputs": [
            {
                "name": "pixels",
                "shape": list(pixels.shape),
                "datatype": "FP32",
                "data": pixels.ravel().tolist(),
            }
        ]
    }
