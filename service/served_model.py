"""A model version loaded for serving: its ONNX Runtime session and its public signature.

Two kinds: a tensor model exposes its ONNX signature as is (digits, user
models); a text embedding model exposes one BYTES input of texts and does the
tokenisation here, so clients send text (OIP v2 BYTES tensors) rather than
token ids.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from monitoring.metrics import VersionLabels
from optimise.artefact import Manifest, ModelKind, StoredArtefact
from optimise.runtimes.serving import ServingSession
from service.errors import InvalidInput
from service.text_encoding import encode_bounded
from service.types import DATATYPES, ModelMetadata, TensorSpec

TEXT_INPUT = "text"
# Texts of similar length are run together: padding a 5-token text to 128 wastes 25x the work.
LENGTH_BUCKET = 16


def _session_specs(infos: Any) -> tuple[TensorSpec, ...]:
    return tuple(
        TensorSpec(
            i.name, DATATYPES[np.dtype(i.dtype)], tuple(d if isinstance(d, int) else -1 for d in i.shape)
        )
        for i in infos
    )


# The OIP v2 / Triton platform name of each runtime ("<backend>_<format>" for ONNX Runtime).
OIP_PLATFORMS = {
    "onnxruntime": "onnxruntime_onnx",
    "openvino": "openvino",
    "torchscript": "pytorch_libtorch",
    "litert": "litert_tflite",
}


class ServedModel(ABC):
    kind = ModelKind.TENSOR

    # Rows of one runtime call at most (tensor models); `repository` sets it from the settings.
    max_rows_per_run = 256

    def __init__(self, name: str, version: str, artefact: StoredArtefact, session: ServingSession) -> None:
        self.name = name
        self.version = version
        self.artefact = artefact  # the stored version: manifest, reference sample, report
        self.session = session

    @property
    def manifest(self) -> Manifest:
        return self.artefact.manifest

    @property
    def batch_invariant(self) -> bool:
        """Models that answer a row differently in a batch (dynamic int8) run one request row at a time."""
        return self.manifest.selected.batch_invariant

    @property
    @abstractmethod
    def inputs(self) -> tuple[TensorSpec, ...]: ...

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return _session_specs(self.session.outputs)

    @abstractmethod
    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run validated inputs (named as `inputs` says) and return every output by name."""

    def predict_with_features(
        self, inputs: dict[str, np.ndarray]
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray] | None]:
        """The outputs, plus per-row scalars the drift monitor compares with the reference."""
        return self.predict(inputs), None

    def labels(self) -> VersionLabels:
        selected = self.manifest.selected
        return VersionLabels(self.version, selected.id, selected.precision.value, self.manifest.profile.name)

    def metadata(self, versions: tuple[str, ...]) -> ModelMetadata:
        return ModelMetadata(
            self.name, versions, OIP_PLATFORMS[self.session.runtime], self.inputs, self.outputs
        )

    def run_onnx(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self._named(self.session.run(feeds))

    def run_onnx_many(self, feeds: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        """Independent runs (rows, length buckets) in parallel; outputs concatenated in order."""
        runs = [self._named(outputs) for outputs in self.session.run_many(feeds)]
        return {name: np.concatenate([run[name] for run in runs]) for name in runs[0]}

    def _named(self, outputs: list[np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self.session.output_names, outputs, strict=True))


def _texts(inputs: dict[str, np.ndarray]) -> list[str]:
    return [t.decode("utf-8") if isinstance(t, bytes) else str(t) for t in inputs[TEXT_INPUT].reshape(-1)]


class TensorModel(ServedModel):
    """A model that takes tensors as its ONNX signature says.

    A batch runs in slices of at most `max_rows_per_run` rows (one row for models that are not
    batch-invariant), in parallel: the runtime's working memory grows with the rows of one run
    and its arena keeps its peak, so a huge request must not become one huge run.
    """

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return _session_specs(self.session.inputs)

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        count = len(next(iter(inputs.values())))
        step = self.max_rows_per_run if self.batch_invariant else 1
        if count <= step:
            return self.run_onnx(inputs)
        slices = [{k: v[i : i + step] for k, v in inputs.items()} for i in range(0, count, step)]
        return self.run_onnx_many(slices)


class TextEmbeddingModel(ServedModel):
    kind = ModelKind.EMBEDDING

    def __init__(
        self,
        name: str,
        version: str,
        artefact: StoredArtefact,
        session: ServingSession,
        reject_overflow: bool,
    ) -> None:
        """Raises ValueError when the artefact holds no tokenizer."""
        from tokenizers import Tokenizer

        super().__init__(name, version, artefact, session)
        tokenizer = artefact.manifest.tokenizer
        if tokenizer is None:
            raise ValueError("a text model stored without its tokenizer")
        self.max_tokens = tokenizer.max_tokens
        self.reject_overflow = reject_overflow
        self.tokenizer = Tokenizer.from_file(str(artefact.root / tokenizer.file))
        self.tokenizer.enable_truncation(self.max_tokens)
        self.tokenizer.no_padding()  # padded per length bucket below
        self.pad_id = self.tokenizer.token_to_id("[PAD]") or 0

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return (TensorSpec(TEXT_INPUT, "BYTES", (-1,)),)

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.embed(_texts(inputs))

    def predict_with_features(
        self, inputs: dict[str, np.ndarray]
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray] | None]:
        encodings = self._encode(_texts(inputs))
        # The reference counts tokens as the model saw them: special tokens in, capped at the limit.
        counts = np.array([len(e.ids) for e in encodings], dtype=np.float64)
        return self._embed(encodings), {"n_tokens": counts}

    def embed(self, texts: list[str]) -> dict[str, np.ndarray]:
        return self._embed(self._encode(texts))

    def _encode(self, texts: list[str]) -> list[Any]:
        """Token encodings truncated to the limit, reading each text only as far as needed."""
        bounded = encode_bounded(self.tokenizer, texts, self.max_tokens)
        if self.reject_overflow:
            too_long = [i for i, b in enumerate(bounded) if b.truncated]
            if too_long:
                raise InvalidInput(f"texts {too_long[:5]} exceed the {self.max_tokens}-token limit")
        return [b.encoding for b in bounded]

    def _embed(self, encodings: list[Any]) -> dict[str, np.ndarray]:
        order = np.argsort([len(e.ids) for e in encodings], kind="stable")
        bucket = LENGTH_BUCKET if self.batch_invariant else 1
        chunks = [[encodings[i] for i in order[s : s + bucket]] for s in range(0, len(order), bucket)]
        outputs = self.run_onnx_many([self._feeds(chunk) for chunk in chunks])
        inverse = np.empty_like(order)
        inverse[order] = np.arange(len(order))
        return {name: value[inverse] for name, value in outputs.items()}

    def _feeds(self, encodings: list[Any]) -> dict[str, np.ndarray]:
        width = max(len(e.ids) for e in encodings)

        def padded(field: str, fill: int) -> np.ndarray:
            array = np.full((len(encodings), width), fill, dtype=np.int64)
            for row, encoding in zip(array, encodings, strict=True):
                values = getattr(encoding, field)
                row[: len(values)] = values
            return array

        columns = {
            "input_ids": ("ids", self.pad_id),
            "attention_mask": ("attention_mask", 0),
            "token_type_ids": ("type_ids", 0),
        }
        return {name: padded(*columns[name]) for name in self.session.input_names}
