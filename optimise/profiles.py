"""Hardware profiles: deployment targets as values, selectable by name.

The CPU profile reads the instruction set once and picks quantisation settings
that are fast on it: VNNI/AMX run signed 8-bit weights at full speed, AVX2
without VNNI needs 7-bit weights (reduce_range) to avoid saturation, ARM64
takes signed per-channel weights.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Callable
from functools import cache
from pathlib import Path

from optimise.errors import ProfileError
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


def _cpu() -> HardwareProfile:
    isa = detect_isa()
    return HardwareProfile(
        name="cpu",
        description=f"server CPU ({isa}), ONNX Runtime CPU provider, all usable cores",
        execution_providers=("CPUExecutionProvider",),
        precisions=(Precision.FP32, Precision.INT8_DYNAMIC, Precision.INT8_STATIC),
        intra_op_threads=min(_usable_cores(), 8),
        isa=isa,
        quantisation=quantisation_defaults(isa),
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
    return HardwareProfile(
        name="edge",
        description=f"small device: one thread, int8, at most {EDGE_SIZE_BUDGET_BYTES // 2**20} MiB",
        execution_providers=("CPUExecutionProvider",),
        precisions=(Precision.FP32, Precision.INT8_DYNAMIC, Precision.INT8_STATIC),
        intra_op_threads=1,
        throughput_batch_size=8,
        max_size_bytes=EDGE_SIZE_BUDGET_BYTES,
        isa=isa,
        quantisation=quantisation_defaults(isa),
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
