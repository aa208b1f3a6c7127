"""Session fixtures: the demos built once into the session's store, and a served instance."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from builds import FP32_AND_INT8
from servers import Server, build_demo, start_server, stop_server


@pytest.fixture(scope="session")
def demo_tags() -> dict[str, str]:
    """minilm and digits, built once per session into the session's store."""
    return {name: build_demo(name, FP32_AND_INT8) for name in ("digits", "minilm")}


@pytest.fixture(scope="module")
def server(demo_tags: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = start_server(tmp_path_factory.mktemp("home") / "bentoml", list(demo_tags.values()))
    yield running
    stop_server(running)
