from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from monitoring import metrics


def _value(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


class _BadInput(Exception):
    http_status = 400


def test_track_request_times_and_counts_by_outcome() -> None:
    labels = {"model": "m-track", "protocol": "grpc"}
    before_ok = _value("leanserve_requests_total", {**labels, "code": "200"})
    with metrics.track_request("m-track", "grpc") as record:
        record.version = "v7"
    with pytest.raises(_BadInput), metrics.track_request("m-track", "grpc"):
        raise _BadInput
    with pytest.raises(RuntimeError), metrics.track_request("m-track", "grpc"):
        raise RuntimeError
    assert _value("leanserve_requests_total", {**labels, "code": "200"}) == before_ok + 1
    assert _value("leanserve_requests_total", {**labels, "code": "400"}) >= 1
    assert _value("leanserve_requests_total", {**labels, "code": "500"}) >= 1
    count = _value(
        "leanserve_request_duration_seconds_count", {"model": "m-track", "version": "v7", "protocol": "grpc"}
    )
    assert count == 1
    assert _value("leanserve_requests_in_flight", {"protocol": "grpc"}) == 0


def test_live_version_marks_the_old_one_past() -> None:
    old = metrics.VersionLabels("v1", "abc", "fp32", "cpu")
    new = metrics.VersionLabels("v2", "def", "int8-dynamic", "cpu")
    metrics.set_live_version("m-info", old)
    metrics.set_live_version("m-info", new, replaced=old)
    info = "leanserve_model_info"
    assert (
        _value(
            info,
            {
                "model": "m-info",
                "version": "v2",
                "variant": "def",
                "precision": "int8-dynamic",
                "profile": "cpu",
            },
        )
        == 1
    )
    assert (
        _value(
            info,
            {"model": "m-info", "version": "v1", "variant": "abc", "precision": "fp32", "profile": "cpu"},
        )
        == 0
    )
    assert _value("leanserve_last_swap_timestamp_seconds", {"model": "m-info"}) > 0


def test_one_version_per_model_is_live_whichever_plane_marked_it() -> None:
    first, second = (metrics.VersionLabels(v, "abc", "fp32", "cpu") for v in ("v1", "v2"))
    metrics.set_live_version("m-planes", first)
    metrics.set_live_version("m-planes", second)  # another data plane, knowing nothing it replaced
    live = [
        s.labels["version"]
        for m in REGISTRY.collect()
        if m.name == "leanserve_model_info"
        for s in m.samples
        if s.labels["model"] == "m-planes" and s.value == 1
    ]
    assert live == ["v2"]


def test_every_metric_follows_the_naming_rules() -> None:
    names = [m.name for m in REGISTRY.collect() if m.name.startswith("leanserve_")]
    assert len(names) >= 14
    for metric in REGISTRY.collect():
        if not metric.name.startswith("leanserve_"):
            continue
        if metric.type == "counter":
            assert any(s.name.endswith("_total") for s in metric.samples) or not metric.samples
        if metric.type == "histogram":
            assert metric.name.endswith(("_seconds", "_size")), metric.name


def test_a_request_is_timed_from_when_the_server_received_it() -> None:
    import time

    labels = {"model": "m-started", "version": "v1", "protocol": "rest"}
    with metrics.track_request("m-started", "rest", started=time.perf_counter() - 0.25) as record:
        record.version = "v1"
    assert _value("leanserve_request_duration_seconds_sum", labels) >= 0.25
