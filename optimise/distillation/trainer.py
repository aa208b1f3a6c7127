"""The training loop of a student: bounded by time and steps, checkpointed, resumable, cached.

A student is cached under a key made of everything that decides its weights (the
teacher's weights, the data, the family and the student's settings, the seed and
the torch release), so a second build or a re-optimisation reuses it. The loop
writes a checkpoint (student, optimiser, step, seconds trained) every
`CHECKPOINT_EVERY_S` and at its end; a run that was stopped resumes from the last
one. The learning rate falls to zero over the last `DECAY_SHARE` of the budget, so
the run also keeps the checkpoint from just before that fall: a longer budget
continues a shorter run from there, not from its annealed end. Batches and initial
weights come from the seed, so a run bounded by steps (`max_steps`) gives the same
student every time; under a time budget the machine's speed decides how many steps
that is, and where the fall begins. Runs on CUDA when the
machine has it, and in bfloat16 mixed precision where the device computes it
natively (`resolve_precision`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from optimise.atomic import replacing
from optimise.distillation.data import DistillationData
from optimise.distillation.students import Family, batches_forever

logger = logging.getLogger(__name__)

CACHE_FORMAT = 3  # 2: layer choice by fidelity, inverse square-root rate; 3: decay to zero at the end
KEEP_STUDENTS = 8
"""Students kept in the cache (the most recently trained or used); a MiniLM checkpoint, with the
optimiser state it resumes from, is ~200 MB (two of them per student: the end and the one before
the decay), so older ones are removed."""
CHECKPOINT_EVERY_S = 60.0
REPORT_EVERY_S = 30.0
WARMUP_STEPS = 100
DECAY_SHARE = 0.3
"""Share of the budget (seconds, or steps where they bound the run first) at its end over which the
learning rate falls linearly to zero (`learning_rate`)."""
PRECISIONS = ("auto", "bf16", "fp32")
"""Arithmetic of a training step: "bf16" autocasts matrix products to bfloat16 (weights, optimiser and
loss stay float32), "fp32" does not, "auto" picks bf16 where the device has it natively."""
Progress = Callable[["TrainingState"], None]


@dataclass(frozen=True)
class TrainingPlan:
    """How long and how to train. `time_s` and `max_steps` both bound the run (None: unbounded)."""

    time_s: float
    max_steps: int | None
    batch_size: int
    lr: float
    seed: int
    precision: str = "fp32"
    """"bf16" or "fp32" (`resolve_precision` turns "auto" into one of them)."""


@dataclass(frozen=True)
class TrainingState:
    """Where a run stands: steps and seconds trained (across resumes), last loss, held-out quality."""

    steps: int
    seconds: float
    loss: float
    held_out: float | None
    resumed_from: int


def teacher_digest(module: torch.nn.Module) -> str:
    """sha256 over the teacher's parameter names, shapes and values."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(f"{name}{tuple(tensor.shape)}{tensor.dtype}".encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def student_key(teacher: str, data: DistillationData, family: str, settings: dict[str, Any]) -> str:
    """The cache key of a student: teacher digest, data digest, family and settings (no budget)."""
    spec = {
        "format": CACHE_FORMAT,
        "teacher": teacher,
        "data": data.digest,
        "family": family,
        "settings": settings,
        "torch": torch.__version__,
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:20]


def learning_rate(peak: float, step: int, progress: float = 0.0) -> float:
    """The rate of optimiser step `step` (from 0) taken at `progress` (share of the budget spent,
    0..1): a linear warm-up to `peak` over `WARMUP_STEPS`, then inverse square-root decay
    (`peak * sqrt(WARMUP_STEPS / (step + 1))`), times a linear fall to zero over the last
    `DECAY_SHARE` of the budget.

    The square-root part needs no horizon (a time budget does not fix the number of steps in
    advance); the fall needs only the share spent, which a time budget knows. Measured on MiniLM
    4-layer students at 300 steps (mean cosine to the teacher on the held-out texts): constant 1e-4
    0.869, constant 3e-4 0.874, 3e-4 with linear decay to the 300th step 0.876, the square-root
    schedule at 3e-4 0.879; at 1,000 steps (batch 64): the square-root schedule at 3e-4 0.9167, with
    the fall over the last 30 % 0.9183, and at 6e-4 with the fall 0.9197 (6e-4 without it: 0.9117 at
    933 steps, behind)."""
    warm = step + 1
    rate = peak * min(warm / WARMUP_STEPS, (WARMUP_STEPS / warm) ** 0.5)
    return rate * min(1.0, max(0.0, (1.0 - progress) / DECAY_SHARE))


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_precision(requested: str, where: torch.device) -> str:
    """ "bf16" or "fp32" for a requested precision (one of `PRECISIONS`) on `where`: "auto" is bf16 on a
    CUDA device that supports it and on a CPU whose oneDNN computes bf16 natively (AVX512-BF16 or AMX),
    fp32 elsewhere (emulated bf16 would be slower). Raises ValueError for anything else."""
    if requested not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {requested!r}")
    if requested != "auto":
        return requested
    if where.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if where.type == "cpu" and torch.ops.mkldnn._is_mkldnn_bf16_supported() else "fp32"


@contextmanager
def computing_in(precision: str, where: torch.device) -> Iterator[None]:
    """The forward passes of a training step in `precision` ("bf16": autocast; "fp32": as they are).

    On the CPU, bf16 attention runs on PyTorch's math kernel: the fused flash-attention kernel's bf16
    backward took 46 ms per MiniLM layer and batch (44 % of the step) on this machine's 2 cores, the
    math kernel's matrix products a few. Measured on a 4-layer MiniLM student, batch 64, 300 steps: fp32
    2.17 steps/s, bf16 3.18 steps/s, mean cosine to the teacher 0.8964 and 0.8963."""
    if precision == "fp32":
        yield
        return
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with torch.autocast(where.type, dtype=torch.bfloat16):
        if where.type == "cpu":
            with sdpa_kernel(SDPBackend.MATH):
                yield
        else:
            yield


class StudentTrainer:
    """Trains one student against its teacher, resuming from and writing to `checkpoint`."""

    def __init__(
        self,
        family: Family,
        teacher: torch.nn.Module,
        student: torch.nn.Module,
        data: DistillationData,
        plan: TrainingPlan,
        checkpoint: Path,
        held_out: Callable[[torch.nn.Module], float] | None = None,
        progress: Progress | None = None,
    ) -> None:
        self.family, self.data, self.plan = family, data, plan
        self.checkpoint = checkpoint
        self.held_out = held_out
        self.progress = progress
        self.device = device()
        self.teacher = teacher.to(self.device).eval()
        self.student = student.to(self.device)
        # The fused kernel updates every parameter in one pass: 1.27x the steps/s of the default
        # (foreach) AdamW on a 4-layer MiniLM student here, the embedding table's 11.7 M weights included.
        self.optimiser = torch.optim.AdamW(
            self.student.parameters(),
            lr=plan.lr,
            weight_decay=0.01,
            fused=self.device.type in ("cpu", "cuda"),
        )
        self.steps, self.seconds, self.loss = 0, 0.0, float("nan")
        self.resumed_from = self._resume()

    def done(self) -> bool:
        return self.progress_made() >= 1.0

    def progress_made(self) -> float:
        """Share of the plan spent: seconds of the time budget, or steps of the step bound if more."""
        return _share_spent(self.seconds, self.steps, self.plan.time_s, self.plan.max_steps)

    @property
    def stable_checkpoint(self) -> Path:
        """Beside the checkpoint (`checkpoint.stable.pt`): the state where the learning rate began to fall."""
        return self.checkpoint.with_suffix(".stable" + self.checkpoint.suffix)

    def run(self) -> TrainingState:
        """Train until the plan's time or steps are spent; returns the final state (student in eval mode,
        on the CPU)."""
        if not self.done():
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.plan.seed)
                self._loop()
        self.student.cpu().eval()
        self.teacher.cpu()
        return self.state(self._held_out())

    def state(self, held_out: float | None = None) -> TrainingState:
        return TrainingState(self.steps, self.seconds, self.loss, held_out, self.resumed_from)

    def _loop(self) -> None:
        # Dropout off: the teacher's targets are exact, and a run is then a function of its batches.
        self.student.eval()
        started = time.perf_counter() - self.seconds
        saved = reported = self.seconds
        before_decay = self.progress_made() < 1.0 - DECAY_SHARE
        batches = batches_forever(self.family, self.data, self.plan.batch_size, self.plan.seed, self.steps)
        for batch in batches:
            batch = {name: tensor.to(self.device) for name, tensor in batch.items()}
            progress = self.progress_made()
            if before_decay and progress >= 1.0 - DECAY_SHARE:
                self._save(self.stable_checkpoint)  # what a longer budget continues from
                before_decay = False
            for group in self.optimiser.param_groups:
                group["lr"] = learning_rate(self.plan.lr, self.steps, progress)
            self.optimiser.zero_grad(set_to_none=True)
            with torch.enable_grad():
                with computing_in(self.plan.precision, self.device):
                    loss = self.family.loss(self.student, self.teacher, batch)
                loss.backward()
            self.optimiser.step()
            self.steps += 1
            self.loss = float(loss.detach())
            self.seconds = time.perf_counter() - started
            if self.done():
                break
            if self.seconds - saved >= CHECKPOINT_EVERY_S:
                self._save()
                saved = self.seconds
            if self.progress is not None and self.seconds - reported >= REPORT_EVERY_S:
                self.progress(self.state(self._held_out()))
                reported = self.seconds
        self._save()

    def _held_out(self) -> float | None:
        if self.held_out is None:
            return None
        with torch.inference_mode():
            return self.held_out(self.student)

    def _horizon(self) -> list[float | None]:
        """The bounds the learning rate's fall is laid over: a checkpoint taken under other bounds
        is not on this run's schedule."""
        return [self.plan.time_s, self.plan.max_steps]

    def _save(self, path: Path | None = None) -> None:
        path = path or self.checkpoint
        payload = {
            "student": self.student.state_dict(),
            "optimiser": self.optimiser.state_dict(),
            "steps": self.steps,
            "seconds": self.seconds,
            "loss": self.loss,
            "horizon": self._horizon(),
        }
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with replacing(path, "wb") as handle:
                torch.save(payload, handle)
        except OSError as exc:  # a cache is an optimisation: a read-only home must not fail the build
            logger.warning("could not write the student checkpoint %s: %s", path, exc)
            return
        prune_students(self.checkpoint.parent.parent, KEEP_STUDENTS)

    def _reached(self, payload: dict[str, Any]) -> bool:
        """Whether a checkpoint has trained as long as this plan asks (it is then used as it is)."""
        seconds, steps = float(payload["seconds"]), int(payload["steps"])
        return _share_spent(seconds, steps, self.plan.time_s, self.plan.max_steps) >= 1.0

    def _load(self, path: Path) -> dict[str, Any] | None:
        try:
            payload: dict[str, Any] = torch.load(path, map_location=self.device, weights_only=True)
            self.student.load_state_dict(payload["student"])
            self.optimiser.load_state_dict(payload["optimiser"])
        except Exception as exc:  # a torn or foreign file: training again is always possible
            logger.warning("ignoring unreadable student checkpoint %s: %s", path, exc)
            return None
        return payload

    def _resume(self) -> int:
        """Load the checkpoint to go on from (`_checkpoint_to_resume`) and return its step (0: none)."""
        found = self._checkpoint_to_resume()
        if found is None:
            return 0
        loaded, payload = found
        self.steps, self.seconds, self.loss = (
            int(payload["steps"]),
            float(payload["seconds"]),
            float(payload["loss"]),
        )
        logger.info(
            "resuming the student from %s at step %d (%.0f s trained)",
            loaded,
            self.steps,
            self.seconds,
        )
        return self.steps

    def _checkpoint_to_resume(self) -> tuple[Path, dict[str, Any]] | None:
        """The checkpoint loaded into the student and optimiser, and its payload: the last one, unless
        it went into the learning rate's fall of another plan and falls short of this one (then the one
        from before that fall, if it was kept and reads); None when neither reads."""
        # A run stopped after its fall began but before its first minute's checkpoint has only the stable
        # one; a last checkpoint that cannot be read falls back to it too, not to step 0.
        for path in (self.checkpoint, self.stable_checkpoint):
            payload = self._load(path) if path.is_file() else None
            if payload is None:
                continue
            path.touch()  # used now: the last to be pruned
            annealed = _own_share(payload) >= 1.0 - DECAY_SHARE and payload.get("horizon") != self._horizon()
            if path == self.stable_checkpoint or not annealed or self._reached(payload):
                return path, payload
            if not self.stable_checkpoint.is_file():
                return path, payload
            stable = self._load(self.stable_checkpoint)
            if stable is not None:
                return self.stable_checkpoint, stable
            return path, self._load(path) or payload  # a torn stable file may have been loaded in part
        return None


def _share_spent(seconds: float, steps: int, time_s: float, max_steps: int | None) -> float:
    """Share of a plan (`time_s`, `max_steps`) that `seconds` and `steps` spend: the larger of the two."""
    share = seconds / time_s
    return max(share, steps / max_steps) if max_steps else share


def _own_share(payload: dict[str, Any]) -> float:
    """Share of its own plan a checkpoint had spent (0 for one from before plans were recorded)."""
    horizon = payload.get("horizon")
    if not horizon:
        return 0.0
    time_s, max_steps = horizon
    return _share_spent(float(payload["seconds"]), int(payload["steps"]), float(time_s), max_steps)


def prune_students(root: Path, keep: int) -> list[Path]:
    """Remove all but the `keep` student folders under `root` whose checkpoints (the last one or the
    one from before the fall, whichever is newer) were written or loaded last; returns the folders
    removed. Folders without a checkpoint (another run's, still training its first minute) are left
    alone; a folder that cannot be removed is logged and kept."""
    import shutil

    checkpoints = []
    for folder in root.iterdir() if root.is_dir() else ():
        # A run stopped between its stable checkpoint and its first minute's has only the stable one.
        times = [_modified(folder / name) for name in ("checkpoint.pt", "checkpoint.stable.pt")]
        known = [t for t in times if t is not None]
        if known:
            checkpoints.append((max(known), folder))
    removed = []
    for _, folder in sorted(checkpoints, reverse=True)[keep:]:
        try:
            shutil.rmtree(folder)
        except OSError as exc:
            logger.warning("could not remove the old student %s: %s", folder, exc)
            continue
        removed.append(folder)
    if removed:
        logger.info("removed %d older students from the cache %s", len(removed), root)
    return removed


def _modified(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None
