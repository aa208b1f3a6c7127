"""Faults of the model store with real processes: a build killed while it stores, and a server
started on a store holding a broken version (the newest, even) and a recorded live choice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from bentoml._internal.configuration.containers import BentoMLContainer
from bentoml._internal.models.model import ModelStore
from builds import FP32_ONLY
from servers import ADMIN_TOKEN, start_server, stop_server
from tiny_models import make_tiny_bundle

from optimise import store
from optimise.build import optimise
from optimise.profiles import get_profile
from optimise.search import SearchSettings
from optimise.types import Constraints

LEANSERVE = str(Path(sys.executable).parent / "leanserve")
BUILD = ["optimise", "--model", "digits", "--time-budget", "5", "--rounds", "1", "--serve-seconds", "0.1"]
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


FEATURES = {"inputs": [{"name": "features", "shape": [1, 16], "datatype": "FP32", "data": [0.5] * 16}]}


def leanserve(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [LEANSERVE, *args], env=env, capture_output=True, text=True, timeout=600, check=False
    )


def kill_when_staging_appears(command: list[str], env: dict[str, str], staging: Path, log: Path) -> None:
    """Run `command` and SIGKILL it the moment a staging folder appears (as an OOM kill would)."""
    with log.open("wb") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 600
    while process.poll() is None and time.monotonic() < deadline:
        if staging.is_dir() and any(staging.iterdir()):
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.002)
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL, (
        f"the build was not caught storing: {log.read_text()[-2000:]}"
    )


@pytest.mark.slow
def test_a_build_killed_while_storing_adds_nothing_and_the_next_run_cleans_up(tmp_path: Path) -> None:
    home, temp = tmp_path / "bentoml", tmp_path / "tmp"
    temp.mkdir()
    env = dict(
        os.environ, BENTOML_HOME=str(home), LEANSERVE_CACHE_DIR=str(tmp_path / "cache"), TMPDIR=str(temp)
    )
    staging = home / ".leanserve-staging"
    kill_when_staging_appears([LEANSERVE, *BUILD], env, staging, tmp_path / "killed.log")

    assert [p for p in (home / "models").glob("digits/*") if p.is_dir()] == []
    assert len(list(staging.iterdir())) == 1 and len(list(temp.glob("leanserve-build-*"))) == 1
    listed = leanserve(env, "models", "list")
    assert listed.returncode == 0 and "digits:" not in listed.stdout, listed.stderr

    second = leanserve(env, *BUILD)
    assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-2000:]
    assert list(staging.iterdir()) == [] and list(temp.glob("leanserve-build-*")) == []
    (version,) = [p for p in (home / "models" / "digits").iterdir() if p.is_dir()]
    listed = leanserve(env, "models", "list")
    assert listed.returncode == 0 and f"digits:{version.name}" in listed.stdout
    assert "broken" not in listed.stdout and " live " in listed.stdout
    exported = leanserve(env, "models", "export", "digits", str(tmp_path / "out"))
    assert exported.returncode == 0, exported.stderr
    assert (tmp_path / "out" / "model.onnx").is_file()


@pytest.fixture
def faulty_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, list[str]]]:
    """A store of its own with three versions of 'faulty' (oldest first): the oldest recorded as live,
    the newest with invalid YAML in its model.yaml."""
    home = tmp_path / "store"
    (home / "models").mkdir(parents=True)
    shared = BentoMLContainer.model_store.get()
    BentoMLContainer.model_store.set(ModelStore(home / "models"))
    monkeypatch.setenv("BENTOML_HOME", str(home))  # the servers' stores link to this one's models
    try:
        bundle = make_tiny_bundle()
        bundle.name = "faulty"
        result = optimise(
            bundle, get_profile("cpu"), Constraints(), SearchSettings(sampler="grid"), tmp_path, FP32_ONLY
        )
        tags = [store.save(result, "tiny_models:build") for _ in range(3)]
        store.record_live("faulty", tags[0].split(":")[1])
        (home / "models" / "faulty" / tags[2].split(":")[1] / "model.yaml").write_text("name: [unclosed\n")
        yield home, [t.split(":")[1] for t in tags]
    finally:
        BentoMLContainer.model_store.set(shared)


@pytest.mark.integration
def test_a_server_starts_around_a_broken_newest_version_and_serves_the_recorded_live_one(
    faulty_store: tuple[Path, list[str]], tmp_path: Path
) -> None:
    home, (live, newer, broken) = faulty_store
    listed = leanserve(dict(os.environ, BENTOML_HOME=str(home)), "models", "list")
    assert listed.returncode == 0 and f"broken faulty:{broken}: invalid YAML" in " ".join(
        listed.stdout.split()
    )

    server = start_server(tmp_path / "server" / "bentoml", ["faulty"])
    try:
        with httpx.Client(base_url=server.http, timeout=60, headers=AUTH) as client:
            described = client.get("/admin/models/faulty/versions").json()
            assert described["live"] == live and set(described["stored"]) == {live, newer}
            refused = client.post("/admin/models/faulty/load", json={"version": broken})
            assert refused.status_code == 409 and "is broken" in refused.text
            loaded = client.post("/admin/models/faulty/load", json={"version": newer, "promote": True})
            assert loaded.status_code == 200, loaded.text
    finally:
        stop_server(server)

    # The promotion was recorded in the store: a restart serves it, not what was live before, and can
    # still roll back to what was (recorded beside it), loading it first.
    restarted = start_server(tmp_path / "restarted" / "bentoml", ["faulty"])
    try:
        with httpx.Client(base_url=restarted.http, timeout=60, headers=AUTH) as client:
            described = client.get("/admin/models/faulty/versions").json()
            assert (described["live"], described["previous"]) == (newer, live)
            rolled = client.post("/admin/models/faulty/rollback")
            assert rolled.status_code == 200, rolled.text
            assert (rolled.json()["live"], rolled.json()["previous"]) == (live, newer)
            answer = client.post("/v2/models/faulty/infer", json=FEATURES)
            assert answer.status_code == 200 and answer.json()["model_version"] == live
    finally:
        stop_server(restarted)
    assert (store.live_version("faulty"), store.previous_live_version("faulty")) == (live, newer)
