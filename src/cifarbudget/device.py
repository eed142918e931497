"""Device choice, mixed precision and seeding, in one place for every stage."""
from __future__ import annotations

import contextlib
import ctypes
import os
import random
import resource
from pathlib import Path

import numpy as np
import torch

from cifarbudget.errors import UserError

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters


def pick_device() -> torch.device:
    """CUDA when present, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


# cuDNN has bf16 convolution engines from Ampere (compute capability 8.0) on. Below it (T4,
# RTX 20xx, V100) bf16 is at best emulated, slower than fp32, and fp16 would need loss
# scaling in every loop (the adaptively weighted GAN loss divides gradient norms, where an
# fp16 overflow would go unnoticed): training there runs in fp32, correct on every GPU.
NATIVE_BF16_CAPABILITY = (8, 0)


# The precision decision can be forced, e.g. to run the tests in both precisions on any CPU:
# "bf16" takes the autocast path even where bf16 is emulated (slower, same code), "fp32" never
# does. Unset or empty: follow the hardware. The params' `bf16: false` always means fp32.
FORCE_PRECISION = "CIFARBUDGET_FORCE_PRECISION"


def forced_precision() -> str | None:
    """"bf16", "fp32" or None (follow the hardware), from the environment."""
    value = os.environ.get(FORCE_PRECISION, "")
    if value not in ("", "bf16", "fp32"):
        raise UserError(f"{FORCE_PRECISION}={value!r}: expected bf16, fp32 or empty; unset it "
                        f"to follow the hardware")
    return value or None


BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")  # /proc/cpuinfo names of bf16 matrix units


def cpu_flags() -> set[str]:
    """The instruction-set flags the OS reports for this CPU (empty where there is no
    /proc/cpuinfo: then nothing is assumed)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    return {flag for line in text.splitlines() if line.startswith("flags")
            for flag in line.split(":", 1)[1].split()}


def cpu_computes_bf16() -> bool:
    """Whether this CPU has bf16 matrix units (AMX or AVX512-BF16): elsewhere bf16 is emulated
    and slower than fp32."""
    return not cpu_flags().isdisjoint(BF16_CPU_FLAGS)


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes bf16 natively, so that bf16 autocast pays."""
    if device.type == "cuda":
        return torch.cuda.get_device_capability(device) >= NATIVE_BF16_CAPABILITY
    return cpu_computes_bf16()


def autocast_dtype(device: torch.device, enabled: bool = True) -> torch.dtype | None:
    """bf16 when asked for (the `bf16` params) and native on `device` (or forced); None means
    fp32."""
    if not enabled:
        return None
    forced = forced_precision()
    if forced is not None:
        return torch.bfloat16 if forced == "bf16" else None
    return torch.bfloat16 if native_bf16(device) else None


def precision(device: torch.device, enabled: bool = True) -> str:
    """The training precision on `device`, in words, for the log and the run's diagnostics."""
    if not enabled:
        return "fp32 (bf16 switched off in params.yaml)"
    forced = forced_precision()
    if forced is not None:
        return f"{'bf16 autocast' if forced == 'bf16' else 'fp32'} (forced by {FORCE_PRECISION})"
    if autocast_dtype(device, enabled) is not None:
        return "bf16 autocast"
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        return f"fp32 (no native bf16: compute capability {major}.{minor} < 8.0)"
    return "fp32 (no native bf16 on this CPU: no AMX, no AVX512-BF16)"


def memory_format(channels_last: bool) -> torch.memory_format:
    """channels_last (the `channels_last` params): faster convolutions on CPUs and recent GPUs."""
    return torch.channels_last if channels_last else torch.contiguous_format


def autocast(device: torch.device, enabled: bool = True):
    """Autocast to `autocast_dtype(device, enabled)`, or a no-op context for fp32."""
    dtype = autocast_dtype(device, enabled)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def exact_float32() -> None:
    """fp32 matrix products and convolutions in full precision, not TF32, on GPUs from
    Ampere on (where cuDNN uses TF32 by default): for sampling and evaluation, whose outputs
    must match a CPU run's."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


def seed_everything(seed: int, deterministic: bool) -> None:
    """Seed Python, NumPy and torch; `deterministic` (the `deterministic` params) asks torch for
    deterministic kernels only, or lets cuDNN benchmark for the fastest."""
    if deterministic:
        # cuBLAS needs a fixed workspace for deterministic results (set before any CUDA work).
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    # An op with no deterministic kernel raises rather than warns: the run's record would
    # otherwise claim a determinism it does not have. (On the CPU none of the ops used raises.)
    torch.use_deterministic_algorithms(deterministic)
    # Deterministic mode would also fill every new tensor with NaN (a debugging aid that
    # changes no result) and costs 15-40% of a CPU training step.
    torch.utils.deterministic.fill_uninitialized_memory = False
    # Benchmarking times cuDNN's algorithms and keeps the fastest, which may differ run to run.
    torch.backends.cudnn.benchmark = not deterministic


def keep_freed_memory() -> None:
    """Let glibc reuse freed blocks of up to 32 MiB instead of returning them to the OS.

    A training step frees and reallocates the same large activations every time; by
    default each comes back as fresh pages, and their page faults cost ~10% of a CPU
    step. A no-op where the C library is not glibc.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    libc.mallopt(M_MMAP_THRESHOLD, 32 * 2**20)  # glibc's largest allowed threshold
    libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1)


def stateless_generator(*keys: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator seeded from `keys` (e.g. seed, epoch, step).

    Drawing each step's randomness from (seed, step) rather than from one running
    stream makes a resumed run draw exactly what an uninterrupted one would.
    """
    seed = 0
    for k in keys:
        seed = (seed * 1_000_003 + int(k) + 1) % (2**63 - 1)
    rng = torch.Generator(device=device)
    rng.manual_seed(seed)
    return rng


def synchronize(device: torch.device) -> None:
    """Wait for the work queued on `device`: only where a time is measured."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_mib(device: torch.device) -> float:
    """On a GPU the allocator's peak since the last reset (each classifier seed resets it); on
    the CPU the process's peak resident memory (which cannot be reset)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def peak_memory_key(device: torch.device) -> str:
    """What peak_memory_mib measures on `device`, as the diagnostics name it."""
    return "peak_gpu_memory_allocated_mib" if device.type == "cuda" else "peak_process_rss_mib"
