"""Hardware profiles: deployment targets as values, selectable by name.

The CPU profile reads the instruction set once, searches OpenVINO beside ONNX
Runtime on x86 with AVX2 or newer, and picks quantisation settings that are fast on it: VNNI/AMX run signed 8-bit weights at full speed, AVX2
without VNNI needs 7-bit weights (reduce_range) to avoid saturation, ARM64
takes signed per-channel weights.
"""

from __future__ import annotations

import importlib.util
import os
import platform
from collections.abc import Callable
from functools import cache
from pathlib import Path

from optimise.errors import ProfileError
from optimise.runtimes import LITERT, ONNX_RUNTIME, OPENVINO, TORCHSCRIPT
from optimise.types import HardwareProfile, Precision, QuantisationDefaults

EDGE_SIZE_BUDGET_BYTES = 32 * 1024 * 1024


def _cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def detect_isa(machine: str | None = None, flags: set[str] | None = None) -> str:
    """Name the fastest int8 instruction set family of this CPU."""
    machine = (machine or platform.machine()).lower()
    if machine in {"aarch64", "arm64"}:
        return "arm64"
    flags = _cpu_flags() if flags is None else flags
    if "amx_int8" in flags:
        return "amx"
    if "avx512_vnni" in flags or "avx_vnni" in flags:
        return "avx512-vnni"
    if "avx512f" in flags:
        return "avx512"
    if "avx2" in flags:
        return "avx2"
    return "generic"


def quantisation_defaults(isa: str) -> QuantisationDefaults:
    if isa in {"amx", "avx512-vnni", "arm64"}:
        return QuantisationDefaults(per_channel=True, reduce_range=False, signed_weights=True)
    # Without VNNI the u8*s8 multiply-add can saturate; 7-bit weights avoid it.
    return QuantisationDefaults(per_channel=True, reduce_range=True, signed_weights=True)


def _usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def has_bf16(flags: set[str] | None = None) -> bool:
    """Whether the CPU computes bf16 natively (AVX512_BF16 or AMX_BF16)."""
    flags = _cpu_flags() if flags is None else flags
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def openvino_choice(isa: str, installed: bool | None = None) -> tuple[bool, str | None]:
    """Whether to search OpenVINO candidates on this ISA, and why not when not.

    OpenVINO's CPU plugin is Intel's x86 runtime: its int8 kernels need AVX2 at least and come
    into their own with VNNI and AMX; on ARM ONNX Runtime's kernels are the better-kept path.
    """
    if isa not in {"avx2", "avx512", "avx512-vnni", "amx"}:
        return False, f"openvino: not searched on {isa} (its CPU plugin targets x86 with AVX2 or newer)"
    if installed is None:
        installed = importlib.util.find_spec("openvino") is not None
    if not installed:
        return False, "openvino: not searched, the openvino package is not installed"
    return True, None


def litert_choice(installed: bool | None = None) -> tuple[bool, str | None]:
    """Whether to search TFLite candidates (LiteRT runs them; litert-torch converts them in its own
    environment, made on first use), and why not when not."""
    if installed is None:
        installed = importlib.util.find_spec("ai_edge_litert") is not None
    if not installed:
        return False, "litert: not searched, the ai-edge-litert package is not installed"
    return True, None


def _cpu() -> HardwareProfile:
    isa = detect_isa()
    with_openvino, note = openvino_choice(isa)
    # TorchScript (PyTorch's own runtime) is searched for the comparison: what a PyTorch server runs.
    runtimes = (ONNX_RUNTIME, OPENVINO, TORCHSCRIPT) if with_openvino else (ONNX_RUNTIME, TORCHSCRIPT)
    return HardwareProfile(
        name="cpu",
        description=f"server CPU ({isa}), {' and '.join(runtimes)} on all usable cores",
        execution_providers=("CPUExecutionProvider",),
        precisions=(Precision.FP32, Precision.INT8_DYNAMIC, Precision.INT8_STATIC),
        intra_op_threads=min(_usable_cores(), 8),
        isa=isa,
        quantisation=quantisation_defaults(isa),
        runtimes=runtimes,
        runtime_notes=(note,) if note else (),
        bf16=has_bf16(),
    )


def _gpu() -> HardwareProfile:
    return HardwareProfile(
        name="gpu",
        description="NVIDIA GPU, ONNX Runtime CUDA provider, FP16",
        execution_providers=("CUDAExecutionProvider",),
        precisions=(Precision.FP32, Precision.FP16),
        intra_op_threads=1,
        throughput_batch_size=64,
        isa="cuda",
    )


def _edge() -> HardwareProfile:
    isa = detect_isa()
    with_litert, note = litert_choice()
    runtimes = (ONNX_RUNTIME, LITERT) if with_litert else (ONNX_RUNTIME,)
    return HardwareProfile(
        name="edge",
        description=f"small device: one thread, int8, at most {EDGE_SIZE_BUDGET_BYTES // 2**20} MiB, "
        f"{' and '.join(runtimes)}",
        execution_providers=("CPUExecutionProvider",),
        precisions=(Precision.FP32, Precision.INT8_DYNAMIC, Precision.INT8_STATIC),
        intra_op_threads=1,
        throughput_batch_size=8,
        max_size_bytes=EDGE_SIZE_BUDGET_BYTES,
        isa=isa,
        quantisation=quantisation_defaults(isa),
        runtimes=runtimes,
        runtime_notes=(note,) if note else (),
    )


_BUILDERS: dict[str, Callable[[], HardwareProfile]] = {"cpu": _cpu, "gpu": _gpu, "edge": _edge}


@cache
def get_profile(name: str) -> HardwareProfile:
    try:
        return _BUILDERS[name]()
    except KeyError:
        raise ProfileError(f"unknown profile {name!r}; known: {', '.join(_BUILDERS)}") from None


def list_profiles() -> list[HardwareProfile]:
    return [get_profile(name) for name in _BUILDERS]
