"""Loading from the store: broken versions are refused (409) without taking the rest down; a bare
name loads the recorded live version, else the newest usable one."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from bentoml._internal.configuration.containers import BentoMLContainer
from bentoml._internal.models.model import ModelStore
from builds import FP32_ONLY, openvino_int8_build, with_more_calibration_rows
from tiny_models import make_tiny_bundle

from optimise import store
from optimise.artefact import Manifest
from optimise.build import BuildResult, optimise
from optimise.profiles import get_profile
from optimise.search import SearchSettings
from optimise.types import Constraints, ServingChoice, ServingSettings, ServingTrial
from service import repository
from service.errors import SwapRefused
from service.settings import ServiceSettings

SETTINGS = ServiceSettings(models=["tiny"], grpc_port=0)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> BuildResult:
    scratch = tmp_path_factory.mktemp("build")  # kept for the module: the saves copy from it
    settings = SearchSettings(sampler="grid")
    return optimise(
        make_tiny_bundle(), get_profile("cpu"), Constraints(), settings, scratch, FP32_ONLY, rounds=1
    )


@pytest.fixture
def private_service_store(tmp_path: Path) -> Iterator[Path]:
    """A model store of this test's own (tests here break versions on purpose)."""
    shared = BentoMLContainer.model_store.get()
    models = tmp_path / "bentoml" / "models"
    models.mkdir(parents=True)
    BentoMLContainer.model_store.set(ModelStore(models))
    try:
        yield models
    finally:
        BentoMLContainer.model_store.set(shared)


@pytest.fixture
def versions(built: BuildResult, private_service_store: Path) -> list[str]:
    """Three stored versions of 'tiny', oldest first, in a store of this test's own."""
    return [store.save(built, "tiny_models:build").split(":")[1] for _ in range(3)]


def break_yaml(version: str) -> None:
    (store.store_dir() / "tiny" / version / "model.yaml").write_text("name: [unclosed\n")


def test_a_broken_version_is_refused_and_the_others_load(versions: list[str]) -> None:
    break_yaml(versions[1])
    with pytest.raises(SwapRefused, match="is broken: invalid YAML") as refused:
        repository.load(f"tiny:{versions[1]}", SETTINGS)
    assert refused.value.http_status == 409
    assert repository.load(f"tiny:{versions[0]}", SETTINGS).version == versions[0]
    assert repository.versions("tiny") == [versions[0], versions[2]]
    assert [v.version for v in store.versions("tiny") if not v.ok] == [versions[1]]


def test_a_bare_name_skips_a_broken_newest_version(versions: list[str]) -> None:
    break_yaml(versions[2])
    assert repository.load("tiny", SETTINGS).version == versions[1]


def test_a_bare_name_loads_the_recorded_live_version(versions: list[str]) -> None:
    store.record_live("tiny", versions[0])
    assert repository.load("tiny", SETTINGS).version == versions[0]


def test_nothing_usable_is_refused(versions: list[str]) -> None:
    for version in versions:
        break_yaml(version)
    with pytest.raises(SwapRefused, match="no usable version"):
        repository.load("tiny", SETTINGS)
    with pytest.raises(SwapRefused, match="no usable version"):
        repository.load("never-stored", SETTINGS)


def _record_runtime(version: str, runtime: str) -> None:
    """What a build that measured the variant on `runtime` records (OpenVINO reads the ONNX file)."""
    path = store.store_dir() / "tiny" / version / "manifest.json"
    manifest = json.loads(path.read_text(encoding="utf-8"))
    manifest["selected"]["runtime"] = runtime
    path.write_text(json.dumps(manifest), encoding="utf-8")


def test_a_variant_is_served_on_the_runtime_its_manifest_records(versions: list[str]) -> None:
    _record_runtime(versions[0], "openvino")
    on_openvino = repository.load(f"tiny:{versions[0]}", SETTINGS)
    on_ort = repository.load(f"tiny:{versions[1]}", SETTINGS)
    assert on_openvino.session.runtime == "openvino" and on_ort.session.runtime == "onnxruntime"
    features = np.random.default_rng(0).normal(size=(5, 16)).astype(np.float32)
    name = on_ort.inputs[0].name
    np.testing.assert_allclose(
        on_openvino.predict({name: features})["logits"],
        on_ort.predict({name: features})["logits"],
        rtol=1e-4,
        atol=1e-5,
    )


def test_a_variant_whose_runtime_is_missing_is_refused_naming_it(
    versions: list[str], without_openvino: None
) -> None:
    _record_runtime(versions[0], "openvino")
    with pytest.raises(
        SwapRefused, match="runtime 'openvino' cannot run here: the openvino package"
    ) as refused:
        repository.load(f"tiny:{versions[0]}", SETTINGS)
    assert refused.value.http_status == 409
    assert repository.load(f"tiny:{versions[1]}", SETTINGS).version == versions[1]  # the rest load


@pytest.fixture(scope="module")
def built_openvino(tmp_path_factory: pytest.TempPathFactory) -> BuildResult:
    return openvino_int8_build(with_more_calibration_rows(make_tiny_bundle()), tmp_path_factory.mktemp("ov"))


@pytest.fixture
def openvino_version(built_openvino: BuildResult, private_service_store: Path) -> str:
    return store.save(built_openvino, "tiny_models:build").split(":")[1]


def test_a_stored_openvino_ir_is_served_batched_and_answers_as_measured(openvino_version: str) -> None:
    served = repository.load(f"tiny:{openvino_version}", SETTINGS)
    assert served.session.runtime == "openvino"
    assert served.metadata((openvino_version,)).platform == "openvino"  # OIP v2 / Triton's name
    assert served.batch_invariant  # measured at build time: static int8 scales
    reference = served.artefact.reference()
    rows = {name: array[:7] for name, array in reference.inputs.items()}
    np.testing.assert_allclose(served.predict(rows)["logits"], reference.outputs[:7], rtol=1e-4, atol=1e-5)


def test_a_stored_openvino_ir_without_the_runtime_is_refused_naming_the_package(
    openvino_version: str, without_openvino: None
) -> None:
    with pytest.raises(
        SwapRefused, match="runtime 'openvino' cannot run here: the openvino package"
    ) as refused:
        repository.load(f"tiny:{openvino_version}", SETTINGS)
    assert refused.value.http_status == 409


def _with_stage(
    manifest: Manifest,
    settings: ServingSettings,
    variant_id: str | None = None,
    trials: tuple[ServingTrial, ...] = (),
) -> Manifest:
    choice = ServingChoice(variant_id or manifest.selected.id, settings, 32, 100.0, 1.0, "measured", trials)
    return dataclasses.replace(manifest, serving=choice)


def _invariant(manifest: Manifest, invariant: bool) -> Manifest:
    selected = dataclasses.replace(manifest.selected, batch_invariant=invariant, intra_op_threads=2)
    return dataclasses.replace(manifest, selected=selected)


def test_the_build_s_serving_settings_apply_unless_a_leanserve_setting_overrides_each(
    versions: list[str],
) -> None:
    manifest = _invariant(store.artefact(store.get_model(f"tiny:{versions[0]}")).manifest, True)
    chosen = ServingSettings(threads=1, parallel_sessions=2, batch_max_rows=8, batch_wait_ms=0.5)
    stored = _with_stage(manifest, chosen)
    assert repository.serving_settings(stored, SETTINGS) == chosen
    overrides = SETTINGS.model_copy(update={"parallel_sessions": 3, "batch_wait_ms": 0.0})
    assert repository.serving_settings(stored, overrides) == ServingSettings(1, 3, 8, 0.0)
    # Batching stays off for a variant whose answers change in a batch, whatever is set.
    varying = _with_stage(_invariant(manifest, False), chosen)
    batching = SETTINGS.model_copy(update={"batch_max_rows": 64})
    assert repository.serving_settings(varying, batching).batch_max_rows == 1


def test_with_batching_turned_off_the_stage_s_best_setting_without_batching_serves(
    versions: list[str],
) -> None:
    manifest = _invariant(store.artefact(store.get_model(f"tiny:{versions[0]}")).manifest, True)
    vid, chosen = manifest.selected.id, ServingSettings(2, 1, 8)
    trials = (
        ServingTrial(vid, chosen, 1000.0, 30.0, 50.0),
        ServingTrial(vid, ServingSettings(1, 2), 700.0, 40.0, 60.0),
        ServingTrial(vid, ServingSettings(2, 1), 450.0, 70.0, 90.0),
        ServingTrial("another", ServingSettings(1, 1), 5000.0, 5.0, 9.0),  # not this variant's
    )
    stored = _with_stage(manifest, chosen, trials=trials)
    off = SETTINGS.model_copy(update={"batch_max_rows": 1})
    assert repository.serving_settings(stored, off) == ServingSettings(1, 2)
    pinned = off.model_copy(update={"parallel_sessions": 3})
    assert repository.serving_settings(stored, pinned) == ServingSettings(1, 3)


def test_without_a_serving_stage_for_the_stored_variant_the_unmeasured_defaults_apply(
    versions: list[str],
) -> None:
    manifest = store.artefact(store.get_model(f"tiny:{versions[0]}")).manifest
    assert manifest.serving is None  # built without the stage
    for invariant, expected in ((True, ServingSettings(2, 1, 32)), (False, ServingSettings(2, 2))):
        plain = _invariant(manifest, invariant)
        assert repository.serving_settings(plain, SETTINGS) == expected
        # Settings chosen for another variant (the winner was replaced after the stage) are not used.
        elsewhere = _with_stage(plain, ServingSettings(1, 2, 8), variant_id="another")
        assert repository.serving_settings(elsewhere, SETTINGS) == expected


def test_a_loaded_version_runs_with_its_resolved_serving_settings(openvino_version: str) -> None:
    overrides = SETTINGS.model_copy(update={"threads": 1, "parallel_sessions": 2, "batch_max_rows": 4})
    served = repository.load(f"tiny:{openvino_version}", overrides)
    assert served.session.serving == ServingSettings(1, 2, 4)
    assert served.session.batcher is not None and len(served.session.batcher._threads) == 2
