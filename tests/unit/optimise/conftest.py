"""A private model store per test, for tests that break versions on purpose, and quick fake versions."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import pytest
from bentoml._internal.configuration.containers import BentoMLContainer
from bentoml._internal.models.model import ModelContext, ModelInfo, ModelOptions, ModelStore
from bentoml._internal.tag import Tag
from manifests import small_manifest
from tiny_models import NormedClassifier, make_tiny_bundle, make_tiny_text_bundle

from optimise.artefact import (
    sha256_of,
    write_manifest,
)
from optimise.passes import build_pass
from optimise.passes.base import PassContext
from optimise.profiles import get_profile
from optimise.source import ModelBundle
from optimise.store_index import OWNER_LABEL
from optimise.types import PassSpec


@pytest.fixture
def private_store(tmp_path: Path) -> Iterator[Path]:
    """An empty model store of this test's own (BentoML and leanserve both use it); yields its folder.

    The session's store is shared by every test: a version broken there would break BentoML's own
    listing for the rest of the session.
    """
    models = tmp_path / "bentoml" / "models"
    models.mkdir(parents=True)
    shared = BentoMLContainer.model_store.get()
    BentoMLContainer.model_store.set(ModelStore(models))
    try:
        yield models
    finally:
        BentoMLContainer.model_store.set(shared)


@pytest.fixture
def make_version(private_store: Path) -> Callable[..., Path]:
    """Writes a small, complete version into the private store without a build; returns its folder."""

    def make(name: str, owner: str = OWNER_LABEL, created: datetime | None = None) -> Path:
        tag = Tag(name, None).make_new_version()
        folder = private_store / name / str(tag.version)
        folder.mkdir(parents=True)
        (folder / "model.onnx").write_bytes(b"onnx bytes")
        write_manifest(folder, small_manifest(name, {"model.onnx": sha256_of(folder / "model.onnx")}))
        context = ModelContext(framework_name="", framework_versions={})
        info = ModelInfo(tag, "", {"owner": owner}, ModelOptions(), {}, context, {}, "v1", created)
        with (folder / "model.yaml").open("w") as out:
            info.dump(out)
        return folder

    return make


# --- converted TFLite files, shared: each conversion runs the converter environment for seconds ---


def convert(bundle: ModelBundle, workdir: Path, **settings: object) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    context = PassContext(bundle=bundle, profile=get_profile("edge"), workdir=workdir)
    return build_pass(PassSpec("export_tflite", dict(settings))).apply(bundle.module, context)


@pytest.fixture(scope="session")
def tiny_tflite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny classifier as an FP32 .tflite (one batch-1 signature)."""
    return convert(make_tiny_bundle(), tmp_path_factory.mktemp("tflite"))


@pytest.fixture(scope="session")
def normed_dynamic_tflite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`NormedClassifier` (Linear, LayerNorm, Linear) as a dynamic-range int8 .tflite (int8 weights,
    activations quantised at run time), through the export and LiteRT quantisation passes."""
    import torch

    bundle = make_tiny_bundle()
    torch.manual_seed(0)
    bundle.module = NormedClassifier().eval()
    workdir = tmp_path_factory.mktemp("tflite-normed")
    fp32 = convert(bundle, workdir / "fp32")
    context = PassContext(bundle=bundle, profile=get_profile("edge"), workdir=workdir)
    return build_pass(PassSpec("quantise_litert", {"mode": "dynamic"})).apply(fp32, context)


@pytest.fixture(scope="session")
def tiny_text_tflite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny text model as an FP32 .tflite with signatures for 4, 8 and 12 tokens."""
    return convert(make_tiny_text_bundle(), tmp_path_factory.mktemp("tflite-text"), lengths="4,8,12")
