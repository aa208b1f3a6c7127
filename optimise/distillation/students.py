"""Student models and what they learn to match, per model family.

A family knows how to make a smaller student from a teacher (initialised from the
teacher's weights), how to run either on a training batch so that the student's
outputs carry gradients, and the loss between the two:

- `BertEncoderFamily` (BERT-style encoders, plain or inside a sentence-transformers
  model): a subset of the teacher's layers (by default the subset whose untrained
  student is closest to the teacher on the training data, see `choose_layers`; or
  spread from the first to the last), optionally with a share of each kept layer's
  heads and FFN neurons pruned.
  Loss: the model's output (the pooled sentence embedding, or the token states) by
  cosine and MSE, plus token-level MSE of each student layer against the teacher
  layer it stands for (the layer mapping of TinyBERT-style distillation).
- `ClassifierFamily` (any module that outputs class logits): a narrower copy made by
  structured pruning, trained on the teacher's soft labels at a temperature plus
  the true labels where the data has them (Hinton et al., 2015).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from torch.nn import functional

from optimise.distillation.data import NO_LABEL, DistillationData
from optimise.errors import ConfigError
from optimise.source import ModelBundle

TensorBatch = dict[str, torch.Tensor]
LABELS = "labels"


DEFAULT_WIDTH = 0.5
"""Share of channels a classifier student keeps when its settings name no width."""


LAYER_CHOICES = ("fidelity", "spread")
"""How a transformer student's layers are picked: `choose_layers` on the training data, or `kept_layers`."""
PROBE_TEXTS = 256
"""Training texts the layer choice scores each candidate subset on."""


@dataclass(frozen=True)
class StudentShape:
    """The architecture a student takes (see `optimise.passes.distil.DistilConfig`)."""

    layers: int | None = None
    prune_ratio: float = 0.0
    width: float | None = None
    layer_choice: str = "fidelity"


@dataclass(frozen=True)
class LossWeights:
    hidden: float = 1.0
    temperature: float = 2.0
    label_weight: float = 0.5


class Family(Protocol):
    name: str

    def check(self, teacher: torch.nn.Module, shape: StudentShape) -> None:
        """Raise ConfigError naming why `teacher` cannot become a student of `shape` (before any work)."""
        ...

    def student(
        self, teacher: torch.nn.Module, shape: StudentShape, data: DistillationData
    ) -> torch.nn.Module: ...

    def batches(
        self, data: DistillationData, batch_size: int, seed: int, epoch: int
    ) -> list[TensorBatch]: ...

    def loss(
        self, student: torch.nn.Module, teacher: torch.nn.Module, batch: TensorBatch
    ) -> torch.Tensor: ...

    def outputs(self, module: torch.nn.Module, batch: TensorBatch) -> torch.Tensor: ...


def family_for(bundle: ModelBundle, weights: LossWeights) -> Family:
    """The family that can distil `bundle`'s model. Raises ConfigError naming what is unknown."""
    if bundle.transformer_type == "bert":
        if bundle.tokenizer is None:
            raise ConfigError(f"{bundle.name}: distilling a transformer needs its tokenizer")
        return BertEncoderFamily(bundle, weights)
    if isinstance(bundle.module, torch.jit.ScriptModule):
        raise ConfigError(
            f"no distillation recipe for {bundle.name}: a TorchScript module cannot be made smaller"
        )
    if bundle.transformer_type is None and bundle.eval_labels is not None:
        return ClassifierFamily(bundle, weights)
    kind = bundle.extra.get("model_type") or bundle.transformer_type or type(bundle.module).__name__
    raise ConfigError(
        f"no distillation recipe for {bundle.name} (model family {kind!r}): "
        "BERT-style encoders and classifiers are supported"
    )


def kept_layers(teacher_layers: int, student_layers: int) -> list[int]:
    """Teacher layers a student keeps: spread evenly, always the first and the last (6 -> 3: 0, 3, 5)."""
    if not 1 <= student_layers <= teacher_layers:
        raise ConfigError(f"a student of {student_layers} layers: the teacher has {teacher_layers}")
    if student_layers == 1:
        return [teacher_layers - 1]
    return sorted({int(i) for i in np.floor(np.linspace(0, teacher_layers - 1, student_layers) + 0.5)})


def choose_layers(score: Callable[[list[int]], float], teacher_layers: int, student_layers: int) -> list[int]:
    """The teacher layers a student keeps, by backward elimination: starting from all of them, drop
    the layer whose removal leaves the highest `score` (the untrained student's fidelity to the
    teacher; higher is better), until `student_layers` remain. `teacher_layers * (teacher_layers -
    student_layers)` calls at most, instead of one per subset.

    Why: which layers a student starts from decides where training starts. On MiniLM (6 layers) the
    untrained 4-layer students' mean cosine to the teacher on the held-out texts ranged from 0.37
    (layers 0-3) to 0.81 (0, 2, 4, 5), the evenly spread 0, 2, 3, 5 at 0.73; after 300 steps the
    choice 0, 2, 4, 5 led by 0.014. Raises ConfigError as `kept_layers` does."""
    if not 1 <= student_layers <= teacher_layers:
        raise ConfigError(f"a student of {student_layers} layers: the teacher has {teacher_layers}")
    kept = list(range(teacher_layers))
    while len(kept) > student_layers:
        candidates = [[layer for layer in kept if layer != dropped] for dropped in kept]
        kept = max(candidates, key=score)  # ties: the first, i.e. the lowest layer dropped
    return kept


def prune_in_place(student: torch.nn.Module, bundle: ModelBundle, ratio: float) -> None:
    """Structured pruning of `ratio` of the student's channels (heads and FFN neurons for BERT), with the
    recipe of the `prune_structured` pass and no recovery: distillation is the recovery."""
    from optimise.passes.prune_structured import PruneStructured, PruneStructuredConfig

    pruner = PruneStructured(PruneStructuredConfig(ratio=ratio, fine_tune_steps=0))
    with torch.enable_grad():  # Torch-Pruning traces the autograd graph
        pruner._prune(student, bundle)


def _encoder(module: torch.nn.Module) -> Any:
    """The BertModel inside `module` (itself, or the first module of a sentence-transformers model)."""
    inner = getattr(module[0], "auto_model", None) if isinstance(module, torch.nn.Sequential) else module
    if inner is None or not hasattr(getattr(inner, "encoder", None), "layer"):
        raise ConfigError(f"{type(module).__name__} has no BERT encoder (encoder.layer) to distil")
    return inner


class BertEncoderFamily:
    name = "bert-encoder"

    def __init__(self, bundle: ModelBundle, weights: LossWeights) -> None:
        self.bundle = bundle
        self.weights = weights
        self.pooled = isinstance(bundle.module, torch.nn.Sequential)  # sentence-transformers: modules after
        self.layer_map: list[int] = []
        self._ids: tuple[str, list[list[int]]] | None = None

    def check(self, teacher: torch.nn.Module, shape: StudentShape) -> None:
        if shape.width is not None:
            raise ConfigError("a transformer student takes layers (and a prune_ratio), not a width")
        if shape.layer_choice not in LAYER_CHOICES:
            raise ConfigError(f"layer_choice must be one of {LAYER_CHOICES}, got {shape.layer_choice!r}")
        encoder = _encoder(teacher)
        teacher_layers = len(encoder.encoder.layer)
        if shape.layers is not None and not 1 <= shape.layers <= teacher_layers:
            raise ConfigError(f"a student of {shape.layers} layers: the teacher has {teacher_layers}")
        heads = int(encoder.config.num_attention_heads)
        removed = shape.prune_ratio * heads
        if abs(removed - round(removed)) > 1e-6 or round(removed) >= heads:
            raise ConfigError(
                f"prune_ratio {shape.prune_ratio} of {heads} attention heads is not a whole number of heads "
                f"below {heads}"
            )

    def student(
        self, teacher: torch.nn.Module, shape: StudentShape, data: DistillationData
    ) -> torch.nn.Module:
        self.check(teacher, shape)
        student = copy.deepcopy(teacher).eval()
        encoder = _encoder(student)
        layers = list(encoder.encoder.layer)
        count = shape.layers or len(layers)
        if shape.layer_choice == "spread" or count == len(layers):
            keep = kept_layers(len(layers), count)
        else:
            keep = choose_layers(self._fidelity(teacher, student, layers, data), len(layers), count)
        self._keep(student, [layers[i] for i in keep])
        self.layer_map = [i + 1 for i in keep]  # hidden_states[0] is the embedding output
        if shape.prune_ratio:
            prune_in_place(student, self.bundle, shape.prune_ratio)
        return student

    @staticmethod
    def _keep(student: torch.nn.Module, layers: list[torch.nn.Module]) -> None:
        encoder = _encoder(student)
        encoder.encoder.layer = torch.nn.ModuleList(layers)
        encoder.config.num_hidden_layers = len(layers)

    def _fidelity(
        self,
        teacher: torch.nn.Module,
        student: torch.nn.Module,
        layers: list[torch.nn.Module],
        data: DistillationData,
    ) -> Callable[[list[int]], float]:
        """Mean cosine of the student made of a subset of `layers` to the teacher, per output row
        (the pooled embedding; token states per real token), on the first `PROBE_TEXTS` training
        texts: the data the student learns from, never the texts that judge it."""
        # Only the probe texts: a student found complete in the cache never tokenises the whole corpus.
        probe = self._tokenise((data.texts or ())[:PROBE_TEXTS])
        probe += [self._truncate(row) for row in (data.token_ids or ())[: PROBE_TEXTS - len(probe)]]
        batches = [self._pad(probe[i : i + 64]) for i in range(0, len(probe), 64)]
        with torch.inference_mode():
            targets = [self.outputs(teacher, batch) for batch in batches]

        def score(subset: list[int]) -> float:
            self._keep(student, [layers[i] for i in subset])
            with torch.inference_mode():
                cosines = [
                    _row_cosines(self.outputs(student, batch), target, batch["attention_mask"])
                    for batch, target in zip(batches, targets, strict=True)
                ]
            return float(torch.cat(cosines).mean())

        return score

    def batches(self, data: DistillationData, batch_size: int, seed: int, epoch: int) -> list[TensorBatch]:
        """Texts in batches of similar length (less padding), in a seeded order per epoch."""
        assert data.texts is not None or data.token_ids is not None
        ids = self._token_ids(data)
        order = np.random.default_rng([seed, epoch]).permutation(len(ids))
        chunk = batch_size * 50
        groups: list[list[int]] = []
        for start in range(0, len(order), chunk):
            part = sorted(order[start : start + chunk].tolist(), key=lambda i: len(ids[i]))
            groups.extend(part[k : k + batch_size] for k in range(0, len(part), batch_size))
        np.random.default_rng([seed, epoch, 1]).shuffle(groups)
        return [self._pad([ids[i] for i in group]) for group in groups]

    def _token_ids(self, data: DistillationData) -> list[list[int]]:
        """Token ids of every text, then of every tokenised row, truncated to the bundle's length;
        tokenised once per data set."""
        if self._ids is None or self._ids[0] != data.digest:
            rows = self._tokenise(data.texts or ())
            rows += [self._truncate(row) for row in data.token_ids or ()]
            self._ids = (data.digest, rows)
        return self._ids[1]

    def _truncate(self, row: tuple[int, ...]) -> list[int]:
        """A tokenised row cut to the bundle's length, keeping its last (separator) token."""
        limit = self.bundle.max_length or 128
        return list(row) if len(row) <= limit else [*row[: limit - 1], row[-1]]

    def _tokenise(self, texts: Sequence[str]) -> list[list[int]]:
        if not texts:  # the tokenizer raises on an empty list
            return []
        encoded = self.bundle.tokenizer(
            list(texts), truncation=True, max_length=self.bundle.max_length or 128
        )
        ids: list[list[int]] = encoded["input_ids"]
        return ids

    def _pad(self, rows: list[list[int]]) -> TensorBatch:
        length = max(len(r) for r in rows)
        input_ids = torch.zeros((len(rows), length), dtype=torch.long)
        mask = torch.zeros_like(input_ids)
        for i, row in enumerate(rows):
            input_ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1
        return {"input_ids": input_ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(input_ids)}

    def _run(
        self, module: torch.nn.Module, batch: TensorBatch
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """(the model's output, every layer's token states) for a batch."""
        out = _encoder(module)(**batch, output_hidden_states=True)
        if not self.pooled:
            return out.last_hidden_state, out.hidden_states
        features: dict[str, torch.Tensor] = {**batch, "token_embeddings": out.last_hidden_state}
        for stage in list(module.children())[1:]:  # pooling, normalisation: the model's own
            features = stage(features)
        return features["sentence_embedding"], out.hidden_states

    def outputs(self, module: torch.nn.Module, batch: TensorBatch) -> torch.Tensor:
        return self._run(module, batch)[0]

    def loss(self, student: torch.nn.Module, teacher: torch.nn.Module, batch: TensorBatch) -> torch.Tensor:
        with torch.no_grad():
            target, target_states = self._run(teacher, batch)
        output, states = self._run(student, batch)
        mask = batch["attention_mask"].unsqueeze(-1).to(output.dtype)
        cosine = _row_cosines(output, target, batch["attention_mask"]).mean()
        if output.dim() == 3:  # token states: compare real tokens only
            loss = 1 - cosine + _masked_mse(output, target, mask)
        else:
            loss = 1 - cosine + functional.mse_loss(output, target) * output.shape[-1]
        if self.weights.hidden:
            for student_layer, teacher_layer in enumerate(self.layer_map, start=1):
                loss = loss + self.weights.hidden * _masked_mse(
                    states[student_layer], target_states[teacher_layer], mask
                )
        return loss


def _row_cosines(output: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Cosine per row ([batch, dim]) or per real token ([batch, length, dim] under `mask`)."""
    cosines = functional.cosine_similarity(output, target, dim=-1)
    return cosines[mask.bool()] if cosines.dim() == 2 else cosines


def _masked_mse(actual: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (((actual - target) ** 2) * mask).sum() / (mask.sum() * actual.shape[-1])


class ClassifierFamily:
    name = "classifier"

    def __init__(self, bundle: ModelBundle, weights: LossWeights) -> None:
        self.bundle = bundle
        self.weights = weights

    def check(self, teacher: torch.nn.Module, shape: StudentShape) -> None:
        self._narrowed(teacher, shape)  # a width the pruner cannot honour fails here, before any training

    def student(
        self, teacher: torch.nn.Module, shape: StudentShape, data: DistillationData
    ) -> torch.nn.Module:
        return self._narrowed(teacher, shape)

    def _narrowed(self, teacher: torch.nn.Module, shape: StudentShape) -> torch.nn.Module:
        """A copy of `teacher` pruned to the shape's width. Raises ConfigError when the copy is no
        smaller: at widths that would leave a layer under one channel the pruner keeps the layers as
        they are (digits at width 0.001 stayed whole), which would be a student in name only. Raises
        ConfigError for a shape with layers, too."""
        from optimise.passes.prune_structured import count_parameters

        if shape.layers is not None or shape.prune_ratio or shape.layer_choice != "fidelity":
            raise ConfigError(
                "a classifier student takes a width (share of channels kept), not layers, prune_ratio or "
                "layer_choice"
            )
        width = shape.width if shape.width is not None else DEFAULT_WIDTH
        student = copy.deepcopy(teacher).eval()
        prune_in_place(student, self.bundle, 1 - width)
        if count_parameters(student) >= count_parameters(teacher):
            raise ConfigError(
                f"width {width:g} is too narrow for {self.bundle.name}: pruning to it leaves the model whole "
                "(a layer would keep no channel); use a larger width"
            )
        return student

    def batches(self, data: DistillationData, batch_size: int, seed: int, epoch: int) -> list[TensorBatch]:
        assert data.inputs is not None
        rows = data.size
        order = np.random.default_rng([seed, epoch]).permutation(rows)
        out = []
        for start in range(0, rows, batch_size):
            index = order[start : start + batch_size]
            batch = {
                name: torch.from_numpy(np.ascontiguousarray(data.inputs[name][index]))
                for name in self.bundle.input_names
            }
            if data.labels is not None:
                batch[LABELS] = torch.from_numpy(data.labels[index])
            out.append(batch)
        return out

    def outputs(self, module: torch.nn.Module, batch: TensorBatch) -> torch.Tensor:
        logits: torch.Tensor = module(*(batch[name] for name in self.bundle.input_names))
        return logits

    def loss(self, student: torch.nn.Module, teacher: torch.nn.Module, batch: TensorBatch) -> torch.Tensor:
        t = self.weights.temperature
        with torch.no_grad():
            soft = functional.softmax(self.outputs(teacher, batch) / t, dim=-1)
        logits = self.outputs(student, batch)
        loss = (
            functional.kl_div(functional.log_softmax(logits / t, dim=-1), soft, reduction="batchmean") * t * t
        )
        labelled = batch[LABELS] != NO_LABEL if LABELS in batch else None
        if labelled is not None and bool(labelled.any()):  # recorded rows added to the data have none
            alpha = self.weights.label_weight
            loss = (1 - alpha) * loss + alpha * functional.cross_entropy(
                logits[labelled], batch[LABELS][labelled]
            )
        return loss


def batches_forever(
    family: Family, data: DistillationData, batch_size: int, seed: int, start_step: int
) -> Iterator[TensorBatch]:
    """The batch sequence of a seeded run from `start_step` on: a resumed run sees what it would have."""
    epoch, seen = 0, 0
    while True:
        epoch_batches = family.batches(data, batch_size, seed, epoch)
        yield from epoch_batches[max(0, start_step - seen) :]
        seen += len(epoch_batches)
        epoch += 1
