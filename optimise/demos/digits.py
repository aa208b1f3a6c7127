"""The bundled "digits" demo: a small CNN on scikit-learn's 8x8 handwritten digits.

It is also the reference `pkg.mod:fn` factory: `build()` returns a ModelBundle in
eval mode with a held-out evaluation split, a disjoint calibration split and a
`fine_tune` hook that structured pruning uses to recover accuracy. Training is
deterministic, so the trained weights are cached on disk keyed by the settings.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from itertools import chain, islice, repeat
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch.utils.data import DataLoader, TensorDataset

from optimise.atomic import replacing
from optimise.cache import CACHE_ENV, cache_root  # noqa: F401  (CACHE_ENV: tests set it)
from optimise.distillation.data import tensor_data
from optimise.source import ModelBundle

logger = logging.getLogger(__name__)

# Everything that decides the weights goes into the cache key; bump on any other change.
CACHE_FORMAT = 1
CONV_CHANNELS = (32, 64)
HIDDEN = 128
SPLIT_SEED = 0
EVAL_SHARE = 0.3
CALIBRATION_SHARE = 0.1


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 15
    batch_size: int = 32
    lr: float = 2e-3
    dropout: float = 0.25
    seed: int = 0
    threads: int = 1  # CPU reductions may split differently per thread count
    fine_tune_lr: float = 3e-4  # gentler than training: recovery, not relearning


@dataclass(frozen=True)
class Split:
    indices: np.ndarray  # rows of load_digits(), to check disjointness
    pixels: np.ndarray  # float32 [N, 1, 8, 8] in [0, 1]
    labels: np.ndarray  # int64 [N]


@dataclass(frozen=True)
class Splits:
    train: Split
    calibration: Split
    evaluation: Split


class DigitsCNN(torch.nn.Module):
    def __init__(self, dropout: float) -> None:
        super().__init__()
        c1, c2 = CONV_CHANNELS
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(1, c1, 3, padding=1), torch.nn.ReLU(),
            torch.nn.Conv2d(c1, c2, 3, padding=1), torch.nn.ReLU(),
            torch.nn.MaxPool2d(2), torch.nn.Dropout(dropout),
        )  # fmt: skip
        self.classifier = torch.nn.Sequential(
            torch.nn.Flatten(), torch.nn.Linear(c2 * 4 * 4, HIDDEN), torch.nn.ReLU(),
            torch.nn.Dropout(dropout), torch.nn.Linear(HIDDEN, 10),
        )  # fmt: skip

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.classifier(self.features(pixels))
        return logits


def load_splits() -> Splits:
    """Stratified train / calibration / evaluation splits, the same on every call."""
    digits = load_digits()
    pixels = (digits.images / 16.0).astype(np.float32)[:, None]
    labels = digits.target.astype(np.int64)
    rest, evaluation = train_test_split(
        np.arange(len(labels)), test_size=EVAL_SHARE, stratify=labels, random_state=SPLIT_SEED
    )
    train, calibration = train_test_split(
        rest, test_size=CALIBRATION_SHARE / (1 - EVAL_SHARE), stratify=labels[rest], random_state=SPLIT_SEED
    )
    return Splits(*(Split(idx, pixels[idx], labels[idx]) for idx in (train, calibration, evaluation)))


@contextlib.contextmanager
def _deterministic(config: TrainConfig) -> Iterator[None]:
    """Seed and pin torch for a reproducible run; the caller's global state is restored."""
    threads = torch.get_num_threads()
    strict = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        torch.set_num_threads(config.threads)
        torch.use_deterministic_algorithms(True)
        try:
            yield
        finally:
            torch.set_num_threads(threads)
            torch.use_deterministic_algorithms(strict, warn_only=warn_only)


def _train(module: torch.nn.Module, split: Split, steps: int, lr: float, config: TrainConfig) -> None:
    """Adam on cross-entropy for `steps` mini-batches, reshuffling every pass."""
    data = TensorDataset(torch.from_numpy(split.pixels), torch.from_numpy(split.labels))
    with _deterministic(config):
        shuffle = torch.Generator().manual_seed(config.seed)
        loader = DataLoader(data, batch_size=config.batch_size, shuffle=True, generator=shuffle)
        optimiser = torch.optim.Adam(module.parameters(), lr=lr)
        module.train()
        try:
            for pixels, labels in islice(chain.from_iterable(repeat(loader)), steps):
                optimiser.zero_grad()
                torch.autograd.backward(torch.nn.functional.cross_entropy(module(pixels), labels))
                optimiser.step()
        finally:
            module.eval()


def fine_tune(module: torch.nn.Module, steps: int, config: TrainConfig | None = None) -> None:
    """Train `module` (possibly pruned) in place on the train split; leaves it in eval mode."""
    config = config or TrainConfig()
    _train(module, load_splits().train, steps, config.fine_tune_lr, config)


def _new_module(config: TrainConfig) -> DigitsCNN:
    with _deterministic(config):  # seeded init, without consuming the caller's RNG
        return DigitsCNN(config.dropout)


def train_module(config: TrainConfig) -> DigitsCNN:
    """Train from scratch (no cache)."""
    module = _new_module(config)
    train = load_splits().train
    steps = config.epochs * math.ceil(len(train.labels) / config.batch_size)
    _train(module, train, steps, config.lr, config)
    return module


def cache_path(config: TrainConfig) -> Path:
    root = cache_root()
    spec = {
        "format": CACHE_FORMAT,
        "config": asdict(config),
        "architecture": [CONV_CHANNELS, HIDDEN],
        "split": [SPLIT_SEED, EVAL_SHARE, CALIBRATION_SHARE],
        "torch": torch.__version__,  # kernels may change between releases
    }
    key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
    return root / "digits" / f"{key}.pt"


def _load_cached(path: Path, config: TrainConfig) -> DigitsCNN | None:
    if not path.exists():
        return None
    module = _new_module(config)
    try:
        module.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    except Exception as exc:  # torn or foreign file: retraining is always possible
        logger.warning("ignoring unreadable cache %s: %s", path, exc)
        return None
    return module


def _write_cache(path: Path, module: torch.nn.Module) -> None:
    """Write atomically so a concurrent reader never sees a half-written file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with replacing(path, "wb") as handle:
            torch.save(module.state_dict(), handle)
    except OSError as exc:  # a cache is an optimisation; a read-only home must not fail the build
        logger.warning("could not write cache %s: %s", path, exc)


def build(config: TrainConfig | None = None) -> ModelBundle:
    """The digits demo bundle, trained (or loaded from the cache) and in eval mode."""
    config = config or TrainConfig()
    path = cache_path(config)
    module = _load_cached(path, config)
    if module is None:
        module = train_module(config)
        _write_cache(path, module)
    splits = load_splits()
    n_params = sum(p.numel() for p in module.parameters())
    return ModelBundle(
        name="digits",
        module=module.eval(),
        input_names=("pixels",),
        output_names=("logits",),
        dynamic_axes={"pixels": {0: "batch"}, "logits": {0: "batch"}},
        latency_inputs={"pixels": splits.evaluation.pixels[:1]},
        eval_inputs={"pixels": splits.evaluation.pixels},
        eval_labels=splits.evaluation.labels,
        calibration_inputs={"pixels": splits.calibration.pixels},
        fine_tune=functools.partial(fine_tune, config=config),
        distillation_data=functools.partial(
            tensor_data, {"pixels": splits.train.pixels}, splits.train.labels, "digits train split"
        ),
        opset=17,
        description=(
            f"{n_params:,}-parameter CNN on scikit-learn's 8x8 handwritten digits "
            f"({len(splits.train.labels)} train / {len(splits.calibration.labels)} calibration / "
            f"{len(splits.evaluation.labels)} held-out)"
        ),
    )
