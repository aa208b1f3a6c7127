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
from optimise.artefact import Manifest, ModelKind, StoredArtefact, VariantRecord
from optimise.errors import OptimiseError, VersionNotFound
from optimise.evaluate import cosine_per_sample, predict_rows
from optimise.runtimes import RuntimeUnavailable
from optimise.runtimes.serving import ServingSession
from optimise.serving_search import best_unbatched
from optimise.types import ServingSettings
from service.errors import ModelNotFound, SwapRefused
from service.served_model import ServedModel, TensorModel, TextEmbeddingModel
from service.settings import ServiceSettings

logger = logging.getLogger(__name__)

SMOKE_ROWS = 4
SMOKE_MIN_COSINE = 0.999
FALLBACK_BATCH_ROWS = 32


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


def serving_settings(manifest: Manifest, settings: ServiceSettings) -> ServingSettings:
    """How the service runs a stored version: each `LEANSERVE_*` serving setting that is set, else the
    build's serving stage's choice (with batching turned off, its best setting without batching),
    else `unmeasured_settings`. Rows of concurrent requests are merged only for batch-invariant
    variants, whatever is set."""
    selected = manifest.selected
    stage = manifest.serving
    built = stage.settings if stage is not None and stage.variant_id == selected.id else None
    built = built or unmeasured_settings(selected)
    rows = settings.batch_max_rows if settings.batch_max_rows is not None else built.batch_max_rows
    if rows == 1 and built.batching and stage is not None:  # batching turned off: its best without
        built = best_unbatched(stage) or built
    return ServingSettings(
        threads=settings.threads or built.threads,
        parallel_sessions=settings.parallel_sessions or built.parallel_sessions,
        batch_max_rows=rows if selected.batch_invariant else 1,
        batch_wait_ms=settings.batch_wait_ms if settings.batch_wait_ms is not None else built.batch_wait_ms,
    )


def unmeasured_settings(selected: VariantRecord) -> ServingSettings:
    """For a version whose build ran no serving stage (`--serve-concurrency 0`, or built before it):
    the build's threads for a lone request; a batch-invariant variant merges up to
    `FALLBACK_BATCH_ROWS` rows, without waiting, one batch at a time on one thread; any other runs two
    requests at once."""
    threads = selected.intra_op_threads
    if selected.batch_invariant:
        return ServingSettings(threads, 1, FALLBACK_BATCH_ROWS)
    return ServingSettings(threads, max(2, threads))


def _open(name: str, version: str, artefact: StoredArtefact, settings: ServiceSettings) -> ServedModel:
    manifest = artefact.manifest
    selected = manifest.selected
    session = ServingSession.for_file(
        artefact.model_path,
        manifest.profile.execution_providers,
        selected.runtime,
        selected.runtime_settings,
        serving_settings(manifest, settings),
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
