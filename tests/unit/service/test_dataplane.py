from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from builds import served_answer
from prometheus_client import REGISTRY
from tiny_models import normed_int8_torchscript

from optimise import store
from optimise.passes.base import PassContext
from optimise.runtimes import TORCHSCRIPT, open_session
from optimise.runtimes.serving import ServingSession
from optimise.types import ServingSettings
from service.dataplane import DataPlane
from service.errors import InvalidInput, ModelNotFound, ModelNotReady, NonFiniteOutput, SwapRefused
from service.settings import ServiceSettings
from service.types import InferenceRequest, Tensor


def _request(data: np.ndarray, model: str = "tiny-served", name: str = "features") -> InferenceRequest:
    return InferenceRequest(model, [Tensor(name, data)])


def test_infer_matches_the_session(dataplane: DataPlane) -> None:
    features = np.random.default_rng(0).normal(size=(5, 16)).astype(np.float32)
    response = dataplane.infer(_request(features))
    expected = served_answer(dataplane.model("tiny-served"), {"features": features})
    np.testing.assert_array_equal(response.outputs[0].data, expected)
    assert response.outputs[0].name == "logits"


def test_embeddings_do_not_depend_on_batch_company(dataplane: DataPlane) -> None:
    texts = [
        "tiny",
        "a considerably longer sentence that needs many more tokens than the first one",
        "mid length text",
    ]
    _, together = dataplane.embed(texts, "minilm-served")
    alone = np.concatenate([dataplane.embed([t], "minilm-served")[1] for t in texts])
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_texts_over_the_token_limit_are_truncated_or_rejected(dataplane: DataPlane, text_tag: str) -> None:
    long_text = "word " * 500
    assert dataplane.embed([long_text], "minilm-served")[1].shape == (1, 384)
    strict = DataPlane(ServiceSettings(models=[text_tag], text_overflow="reject"))
    strict.load_configured()
    with pytest.raises(InvalidInput, match="token limit"):
        strict.embed([long_text], "minilm-served")


@pytest.mark.parametrize(
    ("request_", "error", "message"),
    [
        (_request(np.zeros((1, 16), np.float32), model="nope"), ModelNotFound, "no model"),
        (_request(np.zeros((1, 16), np.float64)), InvalidInput, "FP64"),
        (_request(np.zeros((1, 15), np.float32)), InvalidInput, "shape"),
        (_request(np.zeros((0, 16), np.float32)), InvalidInput, "empty batch"),
        (_request(np.full((1, 16), np.inf, np.float32)), InvalidInput, "NaN or infinity"),
        (_request(np.zeros((1, 16), np.float32), name="other"), InvalidInput, "no input 'other'"),
    ],
)
def test_invalid_requests(
    dataplane: DataPlane, request_: InferenceRequest, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        dataplane.infer(request_)


def test_unknown_output_and_version(dataplane: DataPlane) -> None:
    request = _request(np.zeros((1, 16), np.float32))
    request.outputs = ["nope"]
    with pytest.raises(InvalidInput, match="no output"):
        dataplane.infer(request)
    with pytest.raises(ModelNotFound, match="not live"):
        dataplane.model("tiny-served", version="v0")


def test_a_model_missing_from_the_store_leaves_the_plane_not_ready(tiny_tags: list[str]) -> None:
    plane = DataPlane(ServiceSettings(models=[tiny_tags[0], "absent:v1"]))
    plane.load_configured()
    assert not plane.is_ready()
    with pytest.raises(ModelNotReady, match="absent"):
        plane.model("absent")
    assert plane.infer(_request(np.zeros((1, 16), np.float32))).outputs  # the loaded one still serves
    ready = "leanserve_model_ready"
    assert REGISTRY.get_sample_value(ready, {"model": "absent"}) == 0
    assert REGISTRY.get_sample_value(ready, {"model": tiny_tags[0].split(":")[0]}) == 1


@pytest.mark.parametrize("shape", [(2, 5), (1, 32), (2, 8), (32,), (1, 4, 4), (2, 2, 8), (0,)])
def test_classify_refuses_shapes_it_would_have_to_regroup(
    dataplane: DataPlane, shape: tuple[int, ...]
) -> None:
    with pytest.raises(InvalidInput, match=r"do not fit.*send \[N, 16\]"):
        dataplane.classify(np.zeros(shape, np.float32), "tiny-served")


def test_classify_answers_one_row_per_image(dataplane: DataPlane) -> None:
    for count in (1, 2, 7):
        _, probabilities = dataplane.classify(np.zeros((count, 16), np.float32), "tiny-served")
        assert probabilities.shape == (count, 4)
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_non_finite_outputs_are_refused_and_never_recorded(tiny_tags: list[str]) -> None:
    from monitoring.monitor import DriftMonitor, MonitorConfig

    monitor = DriftMonitor(MonitorConfig(sample_rate=1.0, window_size=100, min_samples=20, interval_s=60))
    plane = DataPlane(ServiceSettings(models=[tiny_tags[0]]), monitor)
    plane.load_configured()
    huge = np.full((3, 16), 3e38, np.float32)  # finite FP32 inputs that overflow the model
    huge[0] = 0.0
    for call in (
        lambda: plane.infer(_request(huge)),
        lambda: plane.classify(huge, "tiny-served"),
    ):
        with pytest.raises(NonFiniteOutput, match=r"output 'logits' for rows \[1, 2\]"):
            call()
    assert monitor.samples("tiny-served") == 0
    assert plane.infer(_request(huge[:1])).outputs[0].data.shape == (1, 4)  # and it serves on


def test_non_finite_outputs_map_to_422_and_out_of_range() -> None:
    import grpc

    assert NonFiniteOutput.http_status == 422 and NonFiniteOutput.grpc_code is grpc.StatusCode.OUT_OF_RANGE


def test_duplicate_output_names_are_refused_before_the_model_runs(dataplane: DataPlane) -> None:
    request = _request(np.zeros((1, 16), np.float32))
    request.outputs = ["logits"] * 500
    with pytest.raises(InvalidInput, match="more than once"):
        dataplane.infer(request)
    request.outputs = ["logits"]
    assert [t.name for t in dataplane.infer(request).outputs] == ["logits"]


def test_a_large_batch_runs_in_slices_with_the_same_answer(tiny_tags: list[str]) -> None:
    features = np.random.default_rng(5).normal(size=(1000, 16)).astype(np.float32)
    whole = DataPlane(ServiceSettings(models=[tiny_tags[0]], max_rows_per_run=10_000))
    sliced = DataPlane(ServiceSettings(models=[tiny_tags[0]], max_rows_per_run=64))
    for plane in (whole, sliced):
        plane.load_configured()
    np.testing.assert_allclose(
        sliced.infer(_request(features)).outputs[0].data,
        whole.infer(_request(features)).outputs[0].data,
        atol=1e-5,
    )


def test_the_drift_monitor_sees_inputs_and_inference_latency(tiny_tags: list[str]) -> None:
    from monitoring.monitor import DriftMonitor, MonitorConfig
    from monitoring.policy import WindowState

    monitor = DriftMonitor(MonitorConfig(sample_rate=1.0, window_size=100, min_samples=20, interval_s=60))
    plane = DataPlane(ServiceSettings(models=[tiny_tags[0]]), monitor)
    plane.load_configured()
    states: list[WindowState] = []
    monitor.subscribe(lambda model, state, report: states.append(state))
    features = np.random.default_rng(3).normal(size=(30, 16)).astype(np.float32)
    for row in features:
        plane.infer(_request(row[None, :]))
    assert monitor.samples("tiny-served") == 30
    monitor.evaluate("tiny-served")
    assert states and states[0].latency_p95_ms is not None and states[0].latency_p95_ms > 0


def test_text_requests_give_the_monitor_token_counts_from_the_same_encoding(text_tag: str) -> None:
    from monitoring.monitor import DriftMonitor, MonitorConfig

    monitor = DriftMonitor(MonitorConfig(sample_rate=1.0, window_size=10, min_samples=10, interval_s=60))
    plane = DataPlane(ServiceSettings(models=[text_tag]), monitor)
    plane.load_configured()
    texts = ["short", "a somewhat longer sentence with more tokens", "word " * 400]
    _, embeddings = plane.embed(texts, "minilm-served")
    model = plane.model("minilm-served")
    expected = [len(model.tokenizer.encode(t).ids) for t in texts]  # type: ignore[attr-defined]
    window = monitor.snapshot("minilm-served")
    assert window is not None and window.features["n_tokens"].tolist() == expected and expected[-1] == 128
    np.testing.assert_allclose(window.outputs, embeddings)


def test_nan_a_runtime_cannot_carry_to_the_outputs_is_a_non_finite_output_too(
    tiny_tags: list[str], tiny_context: PassContext
) -> None:
    # PyTorch's dynamic int8 Linear raises on NaN inputs where other runtimes answer NaN: the same 422.
    plane = DataPlane(ServiceSettings(models=[tiny_tags[0]]))
    plane.load_configured()
    int8 = open_session(TORCHSCRIPT, normed_int8_torchscript(tiny_context))
    plane.model("tiny-served").session = ServingSession(
        lambda threads, streams: int8, ServingSettings(threads=1)
    )
    huge = np.full((2, 16), 3.4e38, np.float32)
    for call in (lambda: plane.infer(_request(huge)), lambda: plane.classify(huge, "tiny-served")):
        with pytest.raises(NonFiniteOutput, match=r"could not answer: .*NaN or infinity"):
            call()
    assert plane.infer(_request(np.ones((1, 16), np.float32))).outputs[0].data.shape == (1, 4)


def _promoted_second(tiny_tags: list[str]) -> DataPlane:
    """A data plane started on the first tiny version that then promoted the second."""
    plane = DataPlane(ServiceSettings(models=[tiny_tags[0]]))
    plane.load_configured()
    plane.stage("tiny-served", tiny_tags[1].split(":")[1])
    plane.promote("tiny-served")
    return plane


def test_a_restarted_server_rolls_back_to_the_version_recorded_before_the_live_one(
    tiny_tags: list[str],
) -> None:
    name, (first, second) = "tiny-served", [tag.split(":")[1] for tag in tiny_tags]
    _promoted_second(tiny_tags)  # the promotion records both versions in the store
    assert (store.live_version(name), store.previous_live_version(name)) == (second, first)

    restarted = DataPlane(ServiceSettings(models=[name]))  # a bare name: the recorded live version
    restarted.load_configured()
    assert (restarted.model(name).version, restarted.previous_version(name)) == (second, first)
    assert restarted.rollback(name).version == first  # loaded from the store first
    assert restarted.model(name).version == first and restarted.previous_version(name) == second
    assert (store.live_version(name), store.previous_live_version(name)) == (first, second)
    assert restarted.rollback(name).version == second  # and back, from memory

    pinned = DataPlane(ServiceSettings(models=[tiny_tags[0]]))  # serves what the record does not describe
    pinned.load_configured()
    assert pinned.previous_version(name) is None
    with pytest.raises(SwapRefused, match="no previous version"):
        pinned.rollback(name)


def test_a_rollback_to_a_recorded_version_that_no_longer_loads_changes_nothing(tiny_tags: list[str]) -> None:
    name, (first, second) = "tiny-served", [tag.split(":")[1] for tag in tiny_tags]
    store.record_live(name, second, previous="0" * 12)  # a version the store never held
    plane = DataPlane(ServiceSettings(models=[name]))
    plane.load_configured()
    with pytest.raises(
        SwapRefused, match=f"cannot roll 'tiny-served' back to 000000000000, the version live before {second}"
    ):
        plane.rollback(name)
    assert plane.model(name).version == second and store.live_version(name) == second
    store.record_live(name, first)


def test_a_rollback_to_a_version_removed_from_the_store_is_refused(
    tiny_tags: list[str], tmp_path: Path
) -> None:
    name, (first, second) = "tiny-served", [tag.split(":")[1] for tag in tiny_tags]
    plane = _promoted_second(tiny_tags)
    folder = store.store_dir() / name / first
    moved = shutil.move(folder, tmp_path / first)  # as a user deleting it would leave the store
    try:
        with pytest.raises(SwapRefused, match=f"cannot roll 'tiny-served' back to {first}"):
            plane.rollback(name)
        assert plane.model(name).version == second and store.live_version(name) == second
    finally:
        shutil.move(moved, folder)
    assert plane.rollback(name).version == first
    store.record_live(name, first)
