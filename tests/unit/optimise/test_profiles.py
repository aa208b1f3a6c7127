from __future__ import annotations

from pathlib import Path

import pytest

from optimise import profiles
from optimise.errors import OptimiseError, ProfileError
from optimise.profiles import (
    EDGE_SIZE_BUDGET_BYTES,
    detect_isa,
    get_profile,
    has_bf16,
    list_profiles,
    openvino_choice,
    quantisation_defaults,
)
from optimise.types import Precision


@pytest.mark.parametrize(
    ("flags", "isa"),
    [
        ({"sse4_2", "avx2", "avx512f", "avx512_vnni", "amx_bf16", "amx_int8"}, "amx"),
        ({"avx2", "avx512f", "avx512_vnni"}, "avx512-vnni"),
        ({"avx2", "avx_vnni"}, "avx512-vnni"),
        ({"avx2", "avx512f"}, "avx512"),
        ({"sse4_2", "avx", "avx2", "fma"}, "avx2"),
        ({"sse4_2"}, "generic"),
        (set(), "generic"),
    ],
)
def test_detect_isa_on_x86(flags: set[str], isa: str) -> None:
    assert detect_isa("x86_64", flags) == isa


@pytest.mark.parametrize("machine", ["aarch64", "arm64", "AArch64"])
def test_detect_isa_on_arm(machine: str) -> None:
    # ARM never reads x86 flags, even when some are given.
    assert detect_isa(machine, {"amx_int8"}) == "arm64"


def test_vnni_amx_and_arm_keep_full_range_weights() -> None:
    for isa in ("amx", "avx512-vnni", "arm64"):
        defaults = quantisation_defaults(isa)
        assert defaults.reduce_range is False
        assert defaults.per_channel is True and defaults.signed_weights is True


@pytest.mark.parametrize("isa", ["avx2", "avx512", "generic"])
def test_without_vnni_weights_use_reduce_range(isa: str) -> None:
    defaults = quantisation_defaults(isa)
    assert defaults.reduce_range is True
    assert defaults.per_channel is True and defaults.signed_weights is True


def test_avx2_only_machine_gets_reduce_range() -> None:
    assert quantisation_defaults(detect_isa("x86_64", {"avx", "avx2"})).reduce_range is True


def test_cpu_flags_are_read_from_cpuinfo(tmp_path: Path) -> None:
    x86 = tmp_path / "cpuinfo-x86"
    x86.write_text("processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu sse avx2 avx512_vnni\n")
    assert profiles._cpu_flags(x86) == {"fpu", "sse", "avx2", "avx512_vnni"}
    arm = tmp_path / "cpuinfo-arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd sve\n")
    assert profiles._cpu_flags(arm) == {"fp", "asimd", "sve"}
    assert profiles._cpu_flags(tmp_path / "missing") == set()


def test_unknown_profile_lists_the_known_names() -> None:
    with pytest.raises(ProfileError) as info:
        get_profile("nope")
    assert isinstance(info.value, OptimiseError)
    message = str(info.value)
    assert "'nope'" in message
    for name in ("cpu", "gpu", "edge"):
        assert name in message


def test_profiles_are_listed_by_name() -> None:
    assert [p.name for p in list_profiles()] == ["cpu", "gpu", "edge"]
    for profile in list_profiles():
        assert get_profile(profile.name) is profile


def test_edge_profile_is_one_thread_with_a_size_budget() -> None:
    edge = get_profile("edge")
    assert edge.intra_op_threads == 1
    assert edge.max_size_bytes == EDGE_SIZE_BUDGET_BYTES == 32 * 1024 * 1024
    assert edge.execution_providers == ("CPUExecutionProvider",)
    assert Precision.INT8_DYNAMIC in edge.precisions
    assert edge.quantisation == quantisation_defaults(edge.isa)


def test_gpu_profile_uses_cuda_and_fp16() -> None:
    gpu = get_profile("gpu")
    assert gpu.execution_providers == ("CUDAExecutionProvider",)
    assert Precision.FP16 in gpu.precisions
    assert not {Precision.INT8_DYNAMIC, Precision.INT8_STATIC} & set(gpu.precisions)
    assert gpu.max_size_bytes is None


def test_cpu_profile_matches_this_machine() -> None:
    cpu = get_profile("cpu")
    assert cpu.execution_providers == ("CPUExecutionProvider",)
    assert cpu.isa == detect_isa()
    assert cpu.quantisation == quantisation_defaults(cpu.isa)
    assert 1 <= cpu.intra_op_threads <= 8
    assert cpu.intra_op_threads <= profiles._usable_cores()
    assert cpu.max_size_bytes is None
    assert Precision.FP16 not in cpu.precisions


def test_profile_to_dict_uses_plain_values() -> None:
    data = get_profile("gpu").to_dict()
    assert data["precisions"] == ["fp32", "fp16"]
    assert data["execution_providers"] == ("CUDAExecutionProvider",)
    assert data["quantisation"] == {"per_channel": True, "reduce_range": False, "signed_weights": True}


@pytest.mark.parametrize("isa", ["avx2", "avx512", "avx512-vnni", "amx"])
def test_openvino_is_searched_on_x86_with_avx2_or_newer(isa: str) -> None:
    assert openvino_choice(isa, installed=True) == (True, None)


@pytest.mark.parametrize("isa", ["arm64", "generic"])
def test_openvino_is_skipped_elsewhere_and_the_reason_says_why(isa: str) -> None:
    searched, note = openvino_choice(isa, installed=True)
    assert not searched and note is not None and isa in note and "AVX2" in note


def test_openvino_is_skipped_without_the_package_and_the_reason_names_it() -> None:
    searched, note = openvino_choice("amx", installed=False)
    assert not searched and note is not None and "openvino package is not installed" in note


def test_bf16_needs_avx512_bf16_or_amx() -> None:
    assert has_bf16({"avx512f", "avx512_bf16"}) and has_bf16({"amx_bf16"})
    assert not has_bf16({"avx512f", "avx512_vnni", "avx2"})


def test_the_cpu_profile_names_its_runtimes_and_why_any_is_missing() -> None:
    profile = get_profile("cpu")
    assert profile.runtimes[0] == "onnxruntime"
    assert ("openvino" in profile.runtimes) != bool(profile.runtime_notes)
