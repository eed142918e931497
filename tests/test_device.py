import os
import sys

import pytest
import torch

from cifarbudget.device import (FORCE_PRECISION, autocast, autocast_dtype, exact_float32,
                                pick_device, precision, seed_everything, stateless_generator)
from cifarbudget.errors import UserError
from cifarbudget import device as device_module


def test_stateless_generator_depends_only_on_keys():
    a = torch.rand(4, generator=stateless_generator(0, 5))
    torch.rand(100)  # global RNG use in between must not matter
    b = torch.rand(4, generator=stateless_generator(0, 5))
    c = torch.rand(4, generator=stateless_generator(0, 6))
    d = torch.rand(4, generator=stateless_generator(1, 5))
    assert torch.equal(a, b)
    assert not torch.equal(a, c) and not torch.equal(a, d)


def test_autocast_disabled_keeps_fp32():
    device = pick_device()
    x = torch.randn(4, 4, device=device)
    with autocast(device, enabled=False):
        assert (x @ x).dtype == torch.float32


GPUS = {"T4": (7, 5), "V100": (7, 0), "A100": (8, 0), "H100": (9, 0)}


@pytest.mark.parametrize("gpu, expected", [("T4", None), ("V100", None),
                                           ("A100", torch.bfloat16), ("H100", torch.bfloat16)])
def test_bf16_autocast_only_on_gpus_that_compute_bf16_natively(gpu, expected, monkeypatch):
    """By compute capability, as torch reports it (patched: no GPU here); below 8.0 fp32."""
    monkeypatch.delenv(FORCE_PRECISION, raising=False)  # the hardware decides
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: GPUS[gpu])
    cuda = torch.device("cuda")
    assert autocast_dtype(cuda) == expected
    assert autocast_dtype(cuda, enabled=False) is None  # the bf16 params force fp32
    words = precision(cuda)
    assert words.startswith("bf16" if expected else f"fp32 (no native bf16: compute "
                                                      f"capability {GPUS[gpu][0]}.{GPUS[gpu][1]}")


CPUS = {"AMX": {"avx512f", "amx_tile", "amx_bf16", "avx512_bf16"},
        "AVX512-BF16": {"avx2", "avx512f", "avx512_bf16"}, "AVX2 only": {"avx", "avx2", "fma"}}


@pytest.mark.parametrize("cpu, expected", [("AMX", torch.bfloat16),
                                           ("AVX512-BF16", torch.bfloat16), ("AVX2 only", None)])
def test_bf16_autocast_only_on_cpus_with_bf16_matrix_units(cpu, expected, monkeypatch):
    """By the flags the OS reports for the CPU (patched: the suite runs on any kind)."""
    monkeypatch.delenv(FORCE_PRECISION, raising=False)
    monkeypatch.setattr(device_module, "cpu_flags", lambda: CPUS[cpu])
    cpu_device = torch.device("cpu")
    assert autocast_dtype(cpu_device) == expected
    assert autocast_dtype(cpu_device, enabled=False) is None
    assert precision(cpu_device) == ("bf16 autocast" if expected else
                                     "fp32 (no native bf16 on this CPU: no AMX, no AVX512-BF16)")


def test_the_cpu_flags_are_those_the_os_reports():
    flags = device_module.cpu_flags()
    assert {"sse2", "fpu"} <= flags or not os.path.exists("/proc/cpuinfo")


@pytest.mark.parametrize("forced, expected", [("bf16", torch.bfloat16), ("fp32", None)])
def test_the_precision_can_be_forced_whatever_the_machine(forced, expected, monkeypatch):
    monkeypatch.setenv(FORCE_PRECISION, forced)
    for device in (torch.device("cpu"), torch.device("cuda")):
        assert autocast_dtype(device) == expected
        assert autocast_dtype(device, enabled=False) is None  # params' bf16: false still wins
        assert precision(device).endswith(f"(forced by {FORCE_PRECISION})")
    x = torch.randn(4, 4)
    with autocast(torch.device("cpu")):
        assert (x @ x).dtype == (expected or torch.float32)


def test_a_bad_forced_precision_is_one_clear_error(monkeypatch):
    monkeypatch.setenv(FORCE_PRECISION, "fp16")
    with pytest.raises(UserError, match=f"{FORCE_PRECISION}='fp16': expected bf16, fp32 or empty"):
        autocast_dtype(torch.device("cpu"))


def test_sampling_and_evaluation_turn_tf32_off():
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        exact_float32()
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


@pytest.mark.parametrize("deterministic", [True, False])
def test_deterministic_kernels_are_a_switch(deterministic, monkeypatch, torch_determinism_restored):
    """On: torch raises, not warns, where an op has no deterministic kernel, cuDNN does not
    benchmark and cuBLAS gets a fixed workspace. Off: none of it."""
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    torch.use_deterministic_algorithms(not deterministic, warn_only=True)
    torch.backends.cudnn.benchmark = deterministic
    seed_everything(0, deterministic)
    assert torch.are_deterministic_algorithms_enabled() == deterministic
    assert not torch.is_deterministic_algorithms_warn_only_enabled()
    assert torch.backends.cudnn.benchmark == (not deterministic)
    assert os.environ.get("CUBLAS_WORKSPACE_CONFIG") == (":4096:8" if deterministic else None)


def test_the_test_helpers_hide_any_gpu(tmp_path):
    """Tests compare with CPU results byte for byte: their processes never see a GPU."""
    from tests.conftest import run

    shown = run([sys.executable, "-c", "import os, torch; print(repr(os.environ["
                 "'CUDA_VISIBLE_DEVICES']), torch.cuda.is_available())"], tmp_path)
    assert shown.stdout.split() == ["''", "False"]
    assert os.environ["CUDA_VISIBLE_DEVICES"] == ""
