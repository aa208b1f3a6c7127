from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import REGISTRY
from sklearn.datasets import load_digits

from monitoring.drift import DriftReport
from monitoring.monitor import DriftMonitor, MonitorConfig
from monitoring.policy import WindowState
from optimise.artefact import ModelKind

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    data = load_digits()
    order = np.random.default_rng(0).permutation(len(data.target))  # the file is grouped by writer
    pixels = (data.images[order] / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    logits = np.eye(10, dtype=np.float32)[data.target[order]] * 5
    return pixels, logits


@pytest.fixture
def reference(digits: tuple[np.ndarray, np.ndarray], tmp_path: Path) -> Path:
    pixels, logits = digits
    path = tmp_path / "reference.npz"
    np.savez_compressed(path, input__pixels=pixels[:800], output=logits[:800])
    return path


def _monitor(reference: Path, name: str) -> DriftMonitor:
    monitor = DriftMonitor(MonitorConfig(sample_rate=1.0, window_size=300, min_samples=100, interval_s=0.1))
    monitor.watch(name, reference, ModelKind.TENSOR)
    return monitor


def test_reference_like_traffic_is_calm_and_shifted_traffic_drifts(
    reference: Path, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    pixels, logits = digits
    monitor = _monitor(reference, "digits-mon")
    seen: list[tuple[str, WindowState, DriftReport]] = []
    monitor.subscribe(lambda model, state, report: seen.append((model, state, report)))

    assert monitor.evaluate("digits-mon") is None  # too few samples yet
    monitor.record("digits-mon", pixels[800:1100], logits[800:1100])
    calm = monitor.evaluate("digits-mon")
    assert calm is not None and not calm.dataset_drift and calm.share_drifted < 0.2

    shifted = np.clip(pixels[1100:1400] + 0.4, 0.0, 1.4)
    monitor.record("digits-mon", shifted, logits[1100:1400])
    drifted = monitor.evaluate("digits-mon")
    assert drifted is not None and drifted.dataset_drift and drifted.share_drifted > 0.5
    assert [s.share_drifted for _, s, _ in seen] == [calm.share_drifted, drifted.share_drifted]
    gauge = REGISTRY.get_sample_value("leanserve_drift_share_drifted_features", {"model": "digits-mon"})
    assert gauge == pytest.approx(drifted.share_drifted)
    assert REGISTRY.get_sample_value("leanserve_dataset_drift", {"model": "digits-mon"}) == 1.0
    assert monitor.latest("digits-mon") is drifted


def test_a_failing_evaluation_is_counted_not_raised(
    tmp_path: Path, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    broken = tmp_path / "reference.npz"
    broken.write_bytes(b"not a zip file")
    failures = "leanserve_drift_evaluation_failures_total"
    monitor = _monitor(broken, "digits-broken")
    assert REGISTRY.get_sample_value(failures, {"model": "digits-broken"}) == 0  # exported before any
    monitor.record("digits-broken", digits[0][:200], digits[1][:200])
    monitor.evaluate_all()
    assert REGISTRY.get_sample_value(failures, {"model": "digits-broken"}) == 1
    assert monitor.latest("digits-broken") is None


def test_the_background_thread_evaluates_new_traffic(
    reference: Path, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    monitor = _monitor(reference, "digits-thread")
    monitor.record("digits-thread", digits[0][800:1000], digits[1][800:1000])
    monitor.start()
    try:
        for _ in range(100):
            if monitor.latest("digits-thread") is not None:
                break
            import time

            time.sleep(0.1)
    finally:
        monitor.stop()
    assert monitor.latest("digits-thread") is not None


def test_start_loads_the_drift_engine_before_serving_begins() -> None:
    # A fresh interpreter: this test process has imported Evidently already.
    script = (
        "import sys\n"
        "from monitoring.monitor import DriftMonitor, MonitorConfig\n"
        "monitor = DriftMonitor(MonitorConfig(interval_s=60))\n"
        "assert 'evidently' not in sys.modules, 'imported before start'\n"
        "monitor.start()\n"
        "assert 'evidently.legacy.calculations.stattests' in sys.modules\n"
        "assert 'evidently.metrics.embeddings' in sys.modules\n"
        "monitor.stop()\n"
    )
    subprocess.run([sys.executable, "-c", script], cwd=REPO, check=True, timeout=120)


def test_unwatched_models_are_ignored(reference: Path) -> None:
    monitor = _monitor(reference, "digits-a")
    monitor.record("other", np.zeros((3, 1, 8, 8)), np.zeros((3, 10)))
    assert monitor.samples("other") == 0


def test_one_input_repeated_is_not_judged(reference: Path, digits: tuple[np.ndarray, np.ndarray]) -> None:
    """A load test replaying one request is one client, not drift: no verdict, no drift fed to the policy."""
    pixels, logits = digits
    monitor = _monitor(reference, "digits-replayed")
    states: list[WindowState] = []
    monitor.subscribe(lambda model, state, report: states.append(state))
    shifted = np.clip(pixels[900:901] + 0.4, 0.0, 1.4)  # would drift, were it judged
    for _ in range(300):
        monitor.record("digits-replayed", shifted, logits[900:901])
    report = monitor.evaluate("digits-replayed")
    assert report is not None and not report.judged and report.distinct_inputs == 1
    assert report.not_judged == "window has 1 distinct input; at least 50 needed"
    assert report.features == {} and not report.drifted and report.to_dict()["drifted"] is None
    assert states[-1].not_judged == report.not_judged and states[-1].distinct_inputs == 1
    distinct = REGISTRY.get_sample_value(
        "leanserve_drift_window_distinct_inputs", {"model": "digits-replayed"}
    )
    assert distinct == 1.0
    assert REGISTRY.get_sample_value("leanserve_dataset_drift", {"model": "digits-replayed"}) is None
    assert "not judged" in (monitor.html("digits-replayed") or "")

    monitor.record("digits-replayed", pixels[1000:1300], logits[1000:1300])  # varied traffic again
    judged = monitor.evaluate("digits-replayed")
    assert judged is not None and judged.judged and judged.distinct_inputs == 300
    assert states[-1].not_judged is None


def test_text_inputs_are_counted_by_their_texts(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    path = tmp_path / "reference.npz"
    np.savez_compressed(path, output=rng.normal(size=(400, 16)).astype(np.float32))
    monitor = DriftMonitor(MonitorConfig(sample_rate=1.0, window_size=200, min_samples=100, min_distinct=20))
    monitor.watch("text-replayed", path, ModelKind.EMBEDDING)
    texts = np.array(["hello world"] * 150, dtype=object)  # padding noise: embeddings differ slightly
    monitor.record("text-replayed", texts, rng.normal(size=(150, 16)).astype(np.float32))
    report = monitor.evaluate("text-replayed")
    assert report is not None and report.distinct_inputs == 1 and not report.judged
    assert report.not_judged == "window has 1 distinct input; at least 20 needed"


def test_min_distinct_is_validated_and_capped_at_the_window(
    reference: Path, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    with pytest.raises(ValueError, match="min_distinct"):
        MonitorConfig(min_distinct=-1)
    small = DriftMonitor(MonitorConfig(sample_rate=1.0, window_size=10, min_samples=10))  # min_distinct 50
    small.watch("digits-small", reference, ModelKind.TENSOR)
    small.record("digits-small", digits[0][1000:1010], digits[1][1000:1010])
    report = small.evaluate("digits-small")
    assert report is not None and report.judged and report.distinct_inputs == 10


def test_rows_recorded_while_an_evaluation_runs_are_evaluated_next_round(
    reference: Path, digits: tuple[np.ndarray, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    from monitoring import monitor as monitor_module

    pixels, logits = digits
    monitor = _monitor(reference, "digits-race")
    monitor.record("digits-race", pixels[800:975], logits[800:975])
    real = monitor_module.compute_drift

    def slow_compute(*args: object) -> DriftReport:
        report = real(*args)  # type: ignore[arg-type]
        monitor.record("digits-race", pixels[975:1000], logits[975:1000])  # a request lands meanwhile
        return report

    monkeypatch.setattr(monitor_module, "compute_drift", slow_compute)
    monitor.evaluate_all()
    assert monitor.latest("digits-race").window_size == 175  # type: ignore[union-attr]
    monkeypatch.setattr(monitor_module, "compute_drift", real)
    monitor.evaluate_all()  # before the fix: skipped, as if nothing new had been seen
    assert monitor.latest("digits-race").window_size == 200  # type: ignore[union-attr]
