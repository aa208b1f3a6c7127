from __future__ import annotations

import logging

import numpy as np
import pytest

from service import repository
from service.served_model import ServedModel
from service.settings import ServiceSettings
from service.shadow import ShadowResult, ShadowRun


def _candidate(tiny_tags: list[str]) -> ServedModel:
    """The second tiny version, loaded as a staged candidate is."""
    return repository.load(tiny_tags[1], ServiceSettings(models=[tiny_tags[1]]))


def _shadowed(candidate: ServedModel, inputs: np.ndarray, live: np.ndarray) -> ShadowResult:
    """One mirrored request (`inputs` answered `live` by the live model) through a shadow run of
    `candidate`, waited for (every row) and stopped."""
    run = ShadowRun(candidate)
    try:
        run.offer({"features": inputs}, live)
        return run.wait(len(live), timeout_s=30)
    finally:
        run.stop()


def test_a_shadow_agrees_with_the_same_model(tiny_tags: list[str]) -> None:
    candidate = _candidate(tiny_tags)
    features = np.random.default_rng(0).normal(size=(3, 16)).astype(np.float32)
    live = next(iter(candidate.predict({"features": features}).values()))
    result = _shadowed(candidate, features, live)
    assert (result.compared_rows, result.agreement, result.metric) == (3, 1.0, "argmax agreement")


def test_a_shadow_that_fails_counts_as_disagreement_and_logs_below_error_level(
    tiny_tags: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    live = np.eye(2, 4, dtype=np.float32)
    with caplog.at_level(logging.DEBUG, logger="service.shadow"):
        # A row of the wrong width reaches the runtime, which refuses it quoting the request's shape.
        result = _shadowed(_candidate(tiny_tags), np.full((2, 5), 7.25, np.float32), live)
    assert (result.compared_rows, result.agreement) == (2, 0.0)
    failures = [r for r in caplog.records if "failed on a mirrored request" in r.getMessage()]
    assert [r.levelno for r in failures] == [logging.WARNING]
    assert all(r.levelno < logging.ERROR for r in caplog.records)


def test_a_shadow_answering_non_finite_rows_does_not_agree_on_them(tiny_tags: list[str]) -> None:
    candidate = _candidate(tiny_tags)
    features = np.random.default_rng(1).normal(size=(2, 16)).astype(np.float32)
    features[1] = 3.0e38  # overflows in the first layer: a row of NaN or infinity, whose argmax is 0
    outputs = next(iter(candidate.predict({"features": features}).values()))
    assert np.isfinite(outputs[0]).all() and not np.isfinite(outputs[1]).all()
    live = np.zeros_like(outputs)
    live[:, 0] = 1.0  # the live model said class 0 for both
    live[0] = outputs[0]
    result = _shadowed(candidate, features, live)
    assert (result.compared_rows, result.agreement) == (2, 0.5)
