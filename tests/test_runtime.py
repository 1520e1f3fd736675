"""Precision `auto` follows the hardware: bf16 only where it is native, never by emulation."""

from __future__ import annotations

import warnings

import pytest

from cyclestyle.runtime import available_cores, choose_precision, cpu_has_native_bf16, limit_threads

BF16_FLAGS = {"avx512f", "avx512_bf16", "avx2"}
AVX512_NO_BF16 = {"avx512f", "avx512bw", "avx2"}
AVX2_ONLY = {"avx2", "fma"}


@pytest.mark.parametrize(("capability", "flags", "expected"), [
    ("AVX512", BF16_FLAGS, "bf16"),  # e.g. Sapphire Rapids / Zen 4 hosts of this project
    ("AVX512", AVX512_NO_BF16, "fp32"),  # Skylake-X: AVX512 kernels, bf16 emulated
    ("AVX2", AVX2_ONLY, "fp32"),  # the AVX2-only hosts: 13-50 s/step in emulated bf16
    ("AVX2", BF16_FLAGS, "fp32"),  # ATEN_CPU_CAPABILITY=avx2 forces AVX2 kernels
    ("AMX", {"amx_bf16", "avx512_bf16"}, "bf16"),
    ("DEFAULT", set(), "fp32"),
    ("NO AVX", set(), "fp32"),
    ("SVE256", {"bf16"}, "fp32"),  # aarch64: torch's CPU bf16 path is not the fast one
    ("VSX", set(), "fp32"),
    ("ZVECTOR", set(), "fp32"),
])
def test_auto_on_cpu_follows_the_capability(capability, flags, expected):
    precision, reason = choose_precision("auto", "cpu", cpu_capability=capability,
                                         cpu_flags=flags)
    assert precision == expected
    assert reason.startswith(f"cpu {capability}")
    assert ("no native bf16" in reason) == (expected == "fp32")


def test_explicit_bf16_without_native_support_warns():
    with pytest.warns(UserWarning, match="many times slower"):
        assert choose_precision("bf16", "cpu", cpu_capability="AVX2", cpu_flags=AVX2_ONLY)[0] == "bf16"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        choose_precision("bf16", "cpu", cpu_capability="AVX512", cpu_flags=BF16_FLAGS)
        choose_precision("fp32", "cpu", cpu_capability="AVX2", cpu_flags=AVX2_ONLY)


@pytest.mark.parametrize(("cuda_bf16", "expected"), [(True, "bf16"), (False, "fp16")])
def test_auto_on_cuda(cuda_bf16, expected):
    assert choose_precision("auto", "cuda", cuda_bf16=cuda_bf16)[0] == expected


def test_explicit_choices_are_kept_and_unknown_ones_named():
    for p in ("fp32", "bf16", "fp16"):
        assert choose_precision(p, "cuda", cuda_bf16=True)[0] == p
    assert choose_precision("auto", "mps")[0] == "fp32"
    with pytest.raises(ValueError, match=r"precision: 'fp8' is invalid: not a known precision"):
        choose_precision("fp8", "cpu", cpu_capability="AVX2", cpu_flags=set())


def test_native_bf16_needs_both_kernels_and_flags():
    assert cpu_has_native_bf16("AVX512", BF16_FLAGS)
    assert not cpu_has_native_bf16("AVX512", AVX512_NO_BF16)
    assert not cpu_has_native_bf16("AVX2", BF16_FLAGS)


def test_threads_never_exceed_available_cores():
    import torch

    before = torch.get_num_threads()
    try:
        assert limit_threads(available_cores() + 7) == available_cores()
        assert torch.get_num_threads() <= available_cores()
    finally:
        torch.set_num_threads(before)
