"""Drift of digits-like tensor windows and of 384-dim embedding windows against a reference."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_digits

from monitoring.drift import ReferenceSample, Window, compute_drift, read_npz, render_html
from monitoring.drift_embeddings import auc_threshold

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning", "ignore::UserWarning")


class Digits:
    """sklearn's digits as the demo model sees them, with stand-in logits (right class, noisy)."""

    def __init__(self) -> None:
        data = load_digits()
        rng = np.random.default_rng(0)
        self.pixels = (data.images / 16.0).astype(np.float32)[:, None]
        self.labels = data.target
        self.logits = (3 * np.eye(10)[self.labels] + rng.normal(0, 0.3, (len(self.labels), 10))).astype(
            np.float32
        )
        # A stratified half/half split: same class mix on both sides.
        halves = [rng.permutation(np.flatnonzero(self.labels == c)) for c in range(10)]
        self.ref = np.concatenate([h[: len(h) // 2] for h in halves])
        self.cur = np.concatenate([h[len(h) // 2 :] for h in halves])

    def window(self, rows: np.ndarray, pixels: np.ndarray | None = None) -> Window:
        return Window(inputs=self.pixels[rows] if pixels is None else pixels, outputs=self.logits[rows])

    def reference(self) -> ReferenceSample:
        return ReferenceSample(name="digits", inputs=self.pixels[self.ref], outputs=self.logits[self.ref])


@pytest.fixture(scope="module")
def digits() -> Digits:
    return Digits()


@pytest.fixture(scope="module")
def baseline(digits: Digits) -> float:
    report = compute_drift(digits.reference(), digits.window(digits.cur))
    return report.share_drifted


def test_another_split_does_not_drift(digits: Digits) -> None:
    report = compute_drift(digits.reference(), digits.window(digits.cur))
    assert (report.model, report.kind, report.reference_size, report.window_size) == (
        "digits",
        "tensor",
        896,
        901,
    )
    assert list(report.features)[:2] == ["px_0", "px_1"] and len(report.features) == 64
    assert report.share_drifted < 0.2
    assert not report.dataset_drift
    assert report.prediction_drift is not None
    assert report.prediction_drift.method == "chi-square p_value"
    assert report.prediction_drift.score > 0.5 and not report.prediction_drift.drifted
    assert report.embedding_drift is None
    assert not report.drifted


def test_brightness_shift_drifts_most_pixels(digits: Digits) -> None:
    brighter = np.clip(digits.pixels[digits.cur] + 0.15, 0, 1)
    report = compute_drift(digits.reference(), digits.window(digits.cur, brighter))
    assert report.share_drifted > 0.9
    assert report.dataset_drift and report.drifted


def test_zeroed_pixels_are_the_drifted_ones(digits: Digits, baseline: float) -> None:
    flat = digits.pixels[digits.cur].reshape(len(digits.cur), -1).copy()
    busiest = np.argsort(-digits.pixels[digits.ref].reshape(len(digits.ref), -1).mean(axis=0))[:8]
    flat[:, busiest] = 0
    report = compute_drift(digits.reference(), digits.window(digits.cur, flat.reshape(-1, 1, 8, 8)))
    assert {f"px_{i}" for i in busiest} <= set(report.drifted_features)
    assert report.share_drifted >= baseline + 0.1
    assert not report.dataset_drift  # 8 of 64 features: a local fault, not a shifted data set


def test_class_skew_is_prediction_drift(digits: Digits) -> None:
    skewed = digits.cur[digits.labels[digits.cur] < 3]
    report = compute_drift(digits.reference(), digits.window(skewed))
    assert report.prediction_drift is not None
    assert report.prediction_drift.drifted and report.prediction_drift.score < 1e-10


def test_report_engine_gives_the_same_verdicts(digits: Digits) -> None:
    """The default engine calls the tests that a `Report` of `ValueDrift` metrics runs, without plots."""
    brighter = digits.pixels[digits.cur].copy()
    brighter[:, :, :4] = np.clip(brighter[:, :, :4] + 0.1, 0, 1)
    ref, cur = digits.reference(), digits.window(digits.cur, brighter)
    fast = compute_drift(ref, cur, max_features=12)
    slow = compute_drift(ref, cur, max_features=12, engine="report")
    print(
        f"\n12 columns + prediction: stattests {fast.seconds:.3f} s, Report/ValueDrift {slow.seconds:.3f} s"
    )
    assert len(fast.features) == 12 and 0 < fast.share_drifted < 1
    assert fast.features.keys() == slow.features.keys()
    for name, drift in {**fast.features, **fast.predictions}.items():
        other = {**slow.features, **slow.predictions}[name]
        assert (drift.drifted, drift.method, drift.threshold) == (
            other.drifted,
            other.method,
            other.threshold,
        )
        assert drift.score == pytest.approx(other.score, rel=1e-9, abs=1e-12)
    assert (fast.share_drifted, fast.dataset_drift) == (slow.share_drifted, slow.dataset_drift)


def test_wasserstein_can_be_forced(digits: Digits) -> None:
    report = compute_drift(digits.reference(), digits.window(digits.cur), method="wasserstein")
    assert {d.method for d in report.features.values()} == {"Wasserstein distance (normed)"}
    assert report.prediction_drift is not None and report.prediction_drift.method == "chi-square p_value"


def test_inputs_of_another_size_are_refused(digits: Digits) -> None:
    with pytest.raises(ValueError, match="differ in size"):
        compute_drift(digits.reference(), Window(inputs=np.zeros((5, 1, 4, 4)), outputs=np.zeros((5, 10))))


def _embeddings(seed: int, rows: int, shift: float = 0.0) -> np.ndarray:
    data = np.random.default_rng(seed).normal(size=(rows, 384)).astype(np.float32)
    data[:, :40] += shift
    return data


@pytest.mark.parametrize("seed", [1, 2])
def test_embeddings_of_the_same_distribution_do_not_drift(seed: int) -> None:
    reference = ReferenceSample.text(_embeddings(0, 1000), name="minilm")
    report = compute_drift(reference, Window.text(_embeddings(seed, 500)))
    assert report.kind == "embedding" and report.features == {}
    assert report.embedding_drift is not None
    assert report.embedding_drift.score < 0.55 and not report.embedding_drift.drifted
    assert report.embedding_drift.threshold == pytest.approx(auc_threshold(1000, 500))


def test_embeddings_shifted_on_40_dims_drift() -> None:
    reference = ReferenceSample.text(_embeddings(0, 1000), name="minilm")
    report = compute_drift(reference, Window.text(_embeddings(1, 500, shift=0.3)))
    assert report.embedding_drift is not None
    assert report.embedding_drift.score > 0.65 and report.embedding_drift.drifted
    assert report.drifted


def test_distance_method_detects_the_shift_and_keeps_numpy_global_state() -> None:
    reference = ReferenceSample.text(_embeddings(0, 1000))
    np.random.seed(1234)
    before = np.random.get_state()[1].copy()
    same = compute_drift(reference, Window.text(_embeddings(1, 500)), embedding_method="distance")
    shifted = compute_drift(reference, Window.text(_embeddings(1, 500, 0.3)), embedding_method="distance")
    assert np.array_equal(np.random.get_state()[1], before)
    assert same.embedding_drift is not None and not same.embedding_drift.drifted
    assert shifted.embedding_drift is not None and shifted.embedding_drift.drifted
    assert shifted.embedding_drift.score > 1.5 * same.embedding_drift.score


def test_text_lengths_are_features() -> None:
    rng = np.random.default_rng(3)
    reference = ReferenceSample.text(_embeddings(0, 600), token_counts=rng.integers(5, 40, 600))
    longer = Window.text(_embeddings(1, 300), token_counts=rng.integers(60, 120, 300))
    report = compute_drift(reference, longer)
    assert list(report.features) == ["n_tokens"]
    assert report.features["n_tokens"].drifted and report.dataset_drift
    assert set(report.predictions) == {"emb_norm", "emb_pc_0", "emb_pc_1", "emb_pc_2"}


def test_reference_npz_of_a_stored_tensor_model(tmp_path: Path, digits: Digits) -> None:
    np.savez_compressed(
        tmp_path / "reference.npz",
        input__pixels=digits.pixels[:300],
        output=digits.logits[:300],
        labels=digits.labels[:300],
    )
    (tmp_path / "manifest.json").write_text(json.dumps({"name": "digits"}), encoding="utf-8")
    reference = ReferenceSample.from_npz(tmp_path / "reference.npz")
    assert (reference.name, reference.kind, len(reference)) == ("digits", "tensor", 300)
    assert reference.inputs is not None and reference.inputs.shape == (300, 64)
    report = compute_drift(reference, digits.window(np.arange(300, 600)))
    assert len(report.features) == 64 and report.prediction_drift is not None


def test_reference_npz_of_a_text_model_keeps_token_counts(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    lengths = rng.integers(4, 100, 200)
    mask = (np.arange(128)[None, :] < lengths[:, None]).astype(np.int64)
    np.savez_compressed(
        tmp_path / "reference.npz",
        input__input_ids=mask * 7,
        input__attention_mask=mask,
        output=_embeddings(0, 200),
    )
    reference = ReferenceSample.from_npz(tmp_path / "reference.npz", name="minilm")
    assert reference.kind == "embedding" and reference.inputs is None
    assert np.array_equal(reference.features["n_tokens"], lengths)
    window = Window.text(_embeddings(1, 100), texts=["a b"] * 100, token_counts=rng.integers(4, 100, 100))
    window.save_npz(tmp_path / "window.npz")
    report = compute_drift(reference, Window(**read_npz(tmp_path / "window.npz")))
    assert list(report.features) == ["n_tokens"]  # text_chars has no reference counterpart
    assert report.embedding_drift is not None and not report.embedding_drift.drifted


def test_report_is_json(digits: Digits) -> None:
    rows = np.random.default_rng(6).choice(digits.cur, 200, replace=False)
    report = compute_drift(digits.reference(), digits.window(rows))
    data = json.loads(json.dumps(report.to_dict()))
    assert data["model"] == "digits" and data["window_size"] == 200 and data["drifted"] is False
    assert data["features"]["px_10"].keys() == {"score", "drifted", "method", "threshold"}
    assert data["prediction_drift"]["method"] == "chi-square p_value"
    assert data["embedding_drift"] is None


def test_html_has_evidently_report_and_summary(digits: Digits) -> None:
    start = time.perf_counter()
    html = render_html(digits.reference(), digits.window(digits.cur), max_features=6)
    print(
        f"\nHTML, 6 pixel columns + prediction: {time.perf_counter() - start:.2f} s, {len(html) / 1e6:.1f} MB"
    )
    assert html.index("<body") < html.index("leanserve-drift-summary") < html.index("</body>")
    assert "Drift summary: digits" in html and "Share of Drifted Columns" in html


def test_html_for_embeddings_has_no_tsne() -> None:
    reference = ReferenceSample.text(_embeddings(0, 400), name="minilm")
    html = render_html(reference, Window.text(_embeddings(1, 200, shift=0.3)))
    assert "embedding drift" in html and "DRIFT" in html
    assert "t-SNE" not in html and "tsne" not in html.lower()


# -- bad input is an error, never a quiet "no drift" ---------------------------------------------
def test_missing_or_infinite_values_are_errors_naming_the_column_and_rows(digits: Digits) -> None:
    pixels = digits.pixels[digits.cur].reshape(len(digits.cur), -1).copy()
    pixels[[4, 9], 20] = np.nan
    with pytest.raises(ValueError, match=r"the window: column px_20 has 2 missing .*\(rows 5, 10\)"):
        compute_drift(digits.reference(), digits.window(digits.cur, pixels))
    pixels[:, 20] = np.nan
    with pytest.raises(ValueError, match="column px_20 is empty"):
        compute_drift(digits.reference(), digits.window(digits.cur, pixels))
    logits = digits.logits[digits.cur].copy()
    logits[7, 3] = np.inf
    window = Window(inputs=digits.pixels[digits.cur], outputs=logits)
    with pytest.raises(ValueError, match=r"column out_3 has 1 infinite value \(row 8\)"):
        compute_drift(digits.reference(), window)


def test_outputs_of_another_size_are_refused(digits: Digits) -> None:
    window = Window(inputs=digits.pixels[digits.cur], outputs=digits.logits[digits.cur][:, :5])
    with pytest.raises(ValueError, match=r"outputs differ in size: \[5, 10\]"):
        compute_drift(digits.reference(), window)


def test_columns_only_one_side_has_are_skipped_and_listed(digits: Digits) -> None:
    report = compute_drift(digits.reference(), Window(inputs=digits.pixels[digits.cur]))
    assert report.skipped == {"outputs": "not in the window"} and report.prediction_drift is None
    assert len(report.features) == 64
    with pytest.raises(ValueError, match="nothing to compare"):
        compute_drift(digits.reference(), Window(features={"n_tokens": np.ones(10)}))


def test_a_test_without_a_score_is_an_error_not_a_pass(
    digits: Digits, monkeypatch: pytest.MonkeyPatch
) -> None:
    import monitoring.drift as drift_module
    from monitoring.drift import ColumnDrift

    real = drift_module._stattest_drift

    def unscored(*args: object, **kwargs: object) -> dict[str, ColumnDrift]:
        scores = real(*args, **kwargs)  # type: ignore[arg-type]
        scores["px_12"] = ColumnDrift(float("nan"), False, "K-S p_value", 0.05)
        return scores

    monkeypatch.setattr(drift_module, "_stattest_drift", unscored)
    with pytest.raises(ValueError, match=r"no drift score \(NaN\) for column\(s\) px_12"):
        compute_drift(digits.reference(), digits.window(digits.cur))


def test_the_report_counts_distinct_inputs(digits: Digits) -> None:
    rows = np.repeat(digits.cur[:3], 100)
    report = compute_drift(digits.reference(), digits.window(rows))
    assert report.distinct_inputs == 3 and report.window_size == 300 and report.judged
    texts = Window.text(_embeddings(1, 100), texts=["a", "b"] * 50)
    assert texts.distinct_rows() == 2


def test_a_window_that_was_not_judged_says_why_and_has_no_verdict(digits: Digits) -> None:
    from monitoring.drift import DriftReport

    reference, window = digits.reference(), digits.window(np.repeat(digits.cur[:1], 300))
    report = DriftReport.withheld(reference, window, "window has 1 distinct input; at least 50 needed", 1)
    data = json.loads(json.dumps(report.to_dict()))
    assert data["judged"] is False and data["drifted"] is None and data["distinct_inputs"] == 1
    assert data["not_judged"] == "window has 1 distinct input; at least 50 needed"
    html = render_html(reference, window, report)
    assert "not judged" in html and "1 distinct input" in html and "DRIFT" not in html
