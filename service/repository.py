"""Load model versions from the BentoML model store, checked before they can serve.

A version loads only if every file matches its sha256 in the manifest and a
smoke inference on the stored reference sample reproduces the stored outputs.
Anything else raises `SwapRefused`, and whatever was live stays live.
"""

from __future__ import annotations

import logging

import numpy as np

from monitoring import metrics
from optimise import store
from optimise.artefact import ModelKind, StoredArtefact
from optimise.errors import OptimiseError, VersionNotFound
from optimise.evaluate import cosine_per_sample, predict_rows
from optimise.runtimes import RuntimeUnavailable
from service.errors import ModelNotFound, SwapRefused
from service.served_model import ServedModel, TensorModel, TextEmbeddingModel
from service.sessions import ServingSession
from service.settings import ServiceSettings

logger = logging.getLogger(__name__)

SMOKE_ROWS = 4
SMOKE_MIN_COSINE = 0.999


def versions(name: str) -> list[str]:
    """Stored versions of a model that can be loaded, oldest first (`store.versions` lists the rest too)."""
    return [v.version for v in store.versions(name) if v.ok]


def load(tag: str, settings: ServiceSettings) -> ServedModel:
    """Load `tag` (a bare NAME is the version `store.resolve` picks: the recorded live one, else the
    newest usable one), checked before it can serve.

    Raises ModelNotFound when the store holds no such version, SwapRefused when it is broken, differs
    from its manifest's hashes, does not open, or fails its smoke inference.
    """
    try:
        model = store.get_model(store.resolve(tag))
        artefact = store.artefact(model)
        broken = artefact.modified_files()
    except VersionNotFound as exc:
        raise ModelNotFound(f"cannot load {tag}: {exc}") from exc
    except (OptimiseError, OSError, ValueError) as exc:
        raise SwapRefused(f"cannot load {tag}: {exc}") from exc
    if broken:
        raise SwapRefused(f"{model.tag}: files differ from their sha256 in the manifest: {', '.join(broken)}")
    try:
        served = _open(model.tag.name, model.tag.version or "", artefact, settings)
    except RuntimeUnavailable as exc:  # e.g. an OpenVINO variant on a machine without openvino
        raise SwapRefused(
            f"{model.tag}: its runtime {artefact.manifest.selected.runtime!r} cannot run here: {exc}"
        ) from exc
    except Exception as exc:  # ORT or the tokenizer refusing the artefact: it never goes live
        raise SwapRefused(f"{model.tag}: cannot open the model: {type(exc).__name__}: {exc}") from exc
    smoke_test(served)
    return served


def _open(name: str, version: str, artefact: StoredArtefact, settings: ServiceSettings) -> ServedModel:
    manifest = artefact.manifest
    threads = settings.threads or manifest.selected.intra_op_threads
    selected = manifest.selected
    # Rows of concurrent requests run together only where that changes no answer.
    batch_rows = settings.batch_max_rows if selected.batch_invariant else 1
    session = ServingSession(
        artefact.model_path,
        threads,
        manifest.profile.execution_providers,
        selected.runtime,
        selected.runtime_settings,
        batch_max_rows=batch_rows,
        batch_wait_s=settings.batch_wait_ms / 1e3,
        on_batch=metrics.batch_observer(name),
    )
    if manifest.kind is ModelKind.EMBEDDING:
        return TextEmbeddingModel(name, version, artefact, session, settings.text_overflow == "reject")
    served = TensorModel(name, version, artefact, session)
    served.max_rows_per_run = settings.max_rows_per_run
    return served


def smoke_test(served: ServedModel) -> None:
    """Run the stored reference inputs through the session; the outputs must match those stored."""
    try:
        reference = served.artefact.reference().head(SMOKE_ROWS)
    except OptimiseError as exc:
        raise SwapRefused(f"{served.name}:{served.version}: {exc}") from exc
    if reference.outputs is None or not reference.inputs:
        raise SwapRefused(f"{served.name}:{served.version}: the reference sample has no inputs and outputs")
    feeds, expected = dict(reference.inputs), reference.outputs
    try:
        actual = predict_rows(served.session, feeds)  # as the reference was made
    except Exception as exc:
        raise SwapRefused(
            f"{served.name}:{served.version}: smoke inference failed: {type(exc).__name__}: {exc}"
        ) from exc
    if actual.shape != expected.shape:
        raise SwapRefused(
            f"{served.name}:{served.version}: smoke output shape {actual.shape} != {expected.shape}"
        )
    agreement = float(cosine_per_sample(actual, expected).min())
    if not np.isfinite(actual).all() or agreement < SMOKE_MIN_COSINE:
        raise SwapRefused(
            f"{served.name}:{served.version}: smoke outputs differ from the stored reference ({agreement:.4f})"
        )
    logger.info("loaded %s:%s (smoke cosine %.5f)", served.name, served.version, agreement)
