"""The data plane: which model versions are live, readiness, validation, inference, swaps.

REST (native and OIP v2) and gRPC call these methods and only translate. A
swap replaces the live entry under a lock; a request takes its model reference
once at the start, so requests in flight finish on the old session while new
ones use the new. A version that fails to load never becomes live.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from monitoring import metrics
from monitoring.monitor import DriftMonitor
from optimise import store
from optimise.errors import OptimiseError
from optimise.runtimes import NonFiniteActivations
from service import repository
from service.errors import (
    InvalidInput,
    ModelNotFound,
    ModelNotReady,
    NonFiniteOutput,
    ServingError,
    SwapRefused,
)
from service.served_model import ServedModel, TextEmbeddingModel
from service.settings import ServiceSettings
from service.shadow import ShadowRun
from service.types import InferenceRequest, InferenceResponse, ModelMetadata, Tensor, TensorSpec
from service.validation import validate

logger = logging.getLogger(__name__)


@dataclass
class ModelSlots:
    live: ServedModel | None = None
    previous: ServedModel | None = None
    staged: ServedModel | None = None
    load_error: str | None = None


class DataPlane:
    def __init__(self, settings: ServiceSettings, monitor: DriftMonitor | None = None) -> None:
        self.settings = settings
        self.monitor = monitor
        self._slots = {tag.split(":")[0]: ModelSlots() for tag in settings.models}
        for name in self._slots:
            metrics.set_model_ready(name, False)
        self._swap_lock = threading.Lock()
        self._shadows: dict[str, ShadowRun] = {}
        self._live_listeners: list[Callable[[], None]] = []

    # -- lifecycle -------------------------------------------------------------------------
    def load_configured(self) -> None:
        """Load every configured model; one that fails is reported and leaves the server not ready."""
        for tag in self.settings.models:
            name = tag.split(":")[0]
            slot = self._slots[name]
            try:
                loaded = repository.load(tag, self.settings)
            except (SwapRefused, ModelNotFound) as exc:
                slot.load_error = str(exc)
                logger.error("model %s not loaded: %s", tag, exc)
                continue
            with self._swap_lock:
                slot.live = loaded
                self._went_live(name, slot)

    def on_live_changed(self, listener: Callable[[], None]) -> None:
        """Call `listener()` after every change of a live version (load, promotion, rollback), from the
        thread that made it. Readiness publishers (the gRPC health service) follow the data plane so."""
        self._live_listeners.append(listener)

    def _went_live(self, name: str, slot: ModelSlots) -> None:
        """The one path after a live version changes: every readiness signal follows it here."""
        assert slot.live is not None
        slot.load_error = None
        metrics.set_live_version(name, slot.live.labels(), slot.previous.labels() if slot.previous else None)
        metrics.set_model_ready(name, True)
        self._watch(slot.live)
        for listener in self._live_listeners:
            try:
                listener()
            except Exception:  # a publisher's failure must not undo or fail the swap itself
                logger.exception("a readiness listener failed after %s went live", name)

    def is_ready(self) -> bool:
        return all(slot.live is not None for slot in self._slots.values())

    def model_names(self) -> list[str]:
        return list(self._slots)

    # -- reads -----------------------------------------------------------------------------
    def model_label(self, name: str) -> str:
        """`name` if this server serves it, else one shared value: metric labels stay bounded."""
        return name if name in self._slots else metrics.UNKNOWN_MODEL

    def model(self, name: str, version: str | None = None) -> ServedModel:
        slot = self._slots.get(name)
        if slot is None:
            raise ModelNotFound(f"no model {name!r}; this server serves {sorted(self._slots)}")
        live = slot.live
        if live is None:
            raise ModelNotReady(f"model {name!r} is not loaded: {slot.load_error or 'still loading'}")
        if version and version != live.version:
            raise ModelNotFound(f"version {version!r} of {name!r} is not live (live: {live.version})")
        return live

    def metadata(self, name: str, version: str | None = None) -> ModelMetadata:
        model = self.model(name, version)
        return model.metadata((model.version,))

    def infer(self, request: InferenceRequest) -> InferenceResponse:
        model = self.model(request.model, request.version)
        wanted = _wanted_outputs(model, request.outputs)
        outputs = self._predict(model, validate(request, model.inputs, self.settings))
        return InferenceResponse(
            model=model.name,
            version=model.version,
            outputs=[Tensor(n, outputs[n]) for n in wanted],
            id=request.id,
        )

    def embed(self, texts: list[str], model_name: str) -> tuple[ServedModel, np.ndarray]:
        model = self.model(model_name)
        if not isinstance(model, TextEmbeddingModel):
            raise InvalidInput(f"model {model_name!r} does not take text")
        request = InferenceRequest(model_name, [Tensor("text", np.array(texts, dtype=object))])
        inputs = validate(request, model.inputs, self.settings, shown_as={"text": "texts"})
        return model, next(iter(self._predict(model, inputs).values()))

    def classify(self, pixels: np.ndarray, model_name: str) -> tuple[ServedModel, np.ndarray]:
        """Class probabilities [N, classes] for N images given in the model's own row shape (e.g.
        [N, 1, 8, 8]), without its unit axes ([N, 8, 8]) or flat ([N, 64]); any other shape is refused."""
        model = self.model(model_name)
        spec = model.inputs[0]
        batch = _as_rows_of(pixels, spec)
        request = InferenceRequest(model_name, [Tensor(spec.name, batch)])
        inputs = validate(request, model.inputs, self.settings, shown_as={spec.name: "images"})
        logits = next(iter(self._predict(model, inputs).values()))
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        return model, shifted / shifted.sum(axis=1, keepdims=True)

    def _predict(self, model: ServedModel, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        start = time.perf_counter()
        try:
            outputs, features = model.predict_with_features(inputs)
        except NonFiniteActivations as exc:  # raised where a runtime cannot carry NaN on to the outputs
            raise NonFiniteOutput(f"model {model.name!r} could not answer: {exc}") from None
        seconds = time.perf_counter() - start
        rows = len(next(iter(inputs.values())))
        metrics.observe_inference(model.name, model.version, rows, seconds)
        _check_finite(model, outputs)  # before anything is recorded, shadowed or sent
        first_output = next(iter(outputs.values()))
        if self.monitor is not None:
            self.monitor.record(model.name, next(iter(inputs.values())), first_output, features)
            self.monitor.record_latency(model.name, seconds)  # the latency rule of the policy
        shadow = self._shadows.get(model.name)
        if shadow is not None:
            shadow.offer(inputs, first_output)
        return outputs

    def _watch(self, model: ServedModel) -> None:
        if self.monitor is not None:
            self.monitor.watch(model.name, model.artefact.reference_path, model.kind)

    # -- swaps -----------------------------------------------------------------------------
    def slots(self, name: str) -> ModelSlots:
        if name not in self._slots:
            raise ModelNotFound(f"no model {name!r}; this server serves {sorted(self._slots)}")
        return self._slots[name]

    def stage(self, name: str, version: str) -> ServedModel:
        """Load, hash-check and smoke-test a version without serving it.

        Raises ModelNotFound for a model this server does not serve or a version the store does not
        hold (`repository.load`), SwapRefused for one that is stored but cannot serve."""
        slot = self.slots(name)
        candidate = repository.load(f"{name}:{version}", self.settings)
        with self._swap_lock:
            slot.staged = candidate
        return candidate

    def promote(self, name: str) -> ServedModel:
        slot = self.slots(name)
        self.stop_shadow(name)
        with self._swap_lock:
            if slot.staged is None:
                raise SwapRefused(f"no staged version of {name!r} to promote; load one first")
            if slot.live is not None and slot.live.version == slot.staged.version:
                slot.live, slot.staged = slot.staged, None  # the same version again: nothing to roll back to
            else:
                slot.previous, slot.live, slot.staged = slot.live, slot.staged, None
            self._went_live(name, slot)
            logger.info("promoted %s:%s", name, slot.live.version)
            _record_live(name, slot.live.version, slot.previous.version if slot.previous else None)
            return slot.live

    def rollback(self, name: str) -> ServedModel:
        """Serve the version live before the current one again. After a restart that is the one the
        store recorded as live before the current one: it is loaded, hash-checked and smoke-tested
        first (this call then takes as long as a load).

        Raises SwapRefused when there is none, when it no longer loads, or when the live version
        changed while it loaded; ModelNotFound for a model this server does not serve."""
        slot = self.slots(name)
        with self._swap_lock:
            live, previous = slot.live, slot.previous
        if live is None:
            raise SwapRefused(f"{name!r} has no live version to roll back from")
        if previous is None:
            previous = self._load_recorded_previous(name, live.version)
        else:
            _still_stored(name, previous.version)
        with self._swap_lock:
            if slot.live is not live:
                raise SwapRefused(
                    f"the live version of {name!r} changed during the rollback; nothing was changed"
                )
            slot.previous, slot.live = live, previous
            self._went_live(name, slot)
            logger.info("rolled %s back to %s", name, previous.version)
            _record_live(name, previous.version, live.version)
            return previous

    def previous_version(self, name: str) -> str | None:
        """The version a rollback of `name` would serve: the one live before the current one in this
        process, else the one the store recorded as live before it (None: no rollback possible)."""
        slot = self.slots(name)
        if slot.previous is not None:
            return slot.previous.version
        return _recorded_previous(name, slot.live.version) if slot.live is not None else None

    def _load_recorded_previous(self, name: str, live: str) -> ServedModel:
        version = _recorded_previous(name, live)
        if version is None:
            raise SwapRefused(f"{name!r} has no previous version to roll back to")
        try:
            return repository.load(f"{name}:{version}", self.settings)
        except (SwapRefused, ModelNotFound) as exc:
            raise SwapRefused(
                f"cannot roll {name!r} back to {version}, the version live before {live}: {exc}"
            ) from None

    def start_shadow(self, name: str) -> ShadowRun:
        """Mirror live requests of `name` to its staged version from now on."""
        staged = self.slots(name).staged
        if staged is None:
            raise SwapRefused(f"no staged version of {name!r} to shadow")
        run = self._shadows[name] = ShadowRun(staged)
        return run

    def stop_shadow(self, name: str) -> None:
        run = self._shadows.pop(name, None)
        if run is not None:
            run.stop()

    def discard_staged(self, name: str) -> None:
        self.stop_shadow(name)
        with self._swap_lock:
            self.slots(name).staged = None


def _as_rows_of(pixels: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """`pixels` as [N, *row] for the input `spec`: N rows in, N rows out, never a silent regrouping."""
    row = tuple(spec.shape[1:])
    if -1 in row:  # a dynamic row shape: only the model's own layout can be meant
        return pixels
    accepted = {row, tuple(d for d in row if d != 1), (int(np.prod(row)),)}
    if pixels.ndim < 2 or tuple(pixels.shape[1:]) not in accepted:
        shapes = " or ".join(f"[N, {', '.join(map(str, shape))}]" for shape in sorted(accepted, key=len))
        raise InvalidInput(
            f"images of shape {list(pixels.shape)} do not fit the model's input {list(spec.shape)}: send {shapes}"
        )
    return pixels.reshape((len(pixels), *row))


def _wanted_outputs(model: ServedModel, requested: list[str] | None) -> list[str]:
    """The outputs to answer with, checked before the model runs: known names, each named once."""
    names = [spec.name for spec in model.outputs]
    if not requested:
        return names
    repeated = sorted({n for n in requested if requested.count(n) > 1})
    if repeated:
        raise InvalidInput(f"output {repeated[0]!r} is asked for more than once; name each output once")
    unknown = [n for n in requested if n not in names]
    if unknown:
        raise InvalidInput(
            f"model {model.name!r} has no output {unknown[0]!r}; its outputs are {sorted(names)}"
        )
    return requested


def _check_finite(model: ServedModel, outputs: dict[str, np.ndarray]) -> None:
    """NaN or infinity is never an answer: JSON cannot carry it and an arg-max over it is noise."""
    for name, value in outputs.items():
        if value.dtype.kind != "f" or np.isfinite(value).all():
            continue
        bad_rows = np.flatnonzero(~np.isfinite(value.reshape(len(value), -1)).all(axis=1))
        raise NonFiniteOutput(
            f"model {model.name!r} answered NaN or infinity in output {name!r} for rows {bad_rows[:5].tolist()}:"
            " the inputs are outside the range the model can represent"
        )


def _still_stored(name: str, version: str) -> None:
    """Raise SwapRefused when NAME:VERSION is gone from the store (or broken there): serving it from
    memory would be a live choice no restart could keep."""
    try:
        store.get_model(f"{name}:{version}")
    except OptimiseError as exc:
        raise SwapRefused(f"cannot roll {name!r} back to {version}: {exc}") from None


def _recorded_previous(name: str, live: str) -> str | None:
    """The version the store recorded as live before `live`, when the record's live version is `live`
    (a server started on a pinned NAME:VERSION serves what the record does not describe)."""
    try:
        return store.previous_live_version(name, of=live)
    except (OptimiseError, OSError) as exc:  # no readable store: nothing to roll back to
        logger.warning("could not read the live record of %s: %s", name, exc)
        return None


def _record_live(name: str, version: str, previous: str | None) -> None:
    """The live choice survives a restart: the store records it, and the version live before it (what
    a rollback after a restart goes back to); a read-only store only warns."""
    try:
        store.record_live(name, version, previous)
    except (OptimiseError, OSError) as exc:
        logger.warning("%s:%s is live but could not be recorded as the live version: %s", name, version, exc)


__all__ = ["DataPlane", "ModelSlots", "ServingError"]
