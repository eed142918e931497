"""Device choice, mixed precision and seeding, in one place for every stage."""
from __future__ import annotations

import contextlib
import ctypes
import random

import numpy as np
import torch

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters


def pick_device() -> torch.device:
    """CUDA when present, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def bf16_supported(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    # On the CPU bf16 pays only with native bf16 matrix units (AMX or AVX512-BF16);
    # elsewhere it is emulated and slower than fp32.
    cap = torch.backends.cpu.get_cpu_capability()
    return "AMX" in cap.upper() or torch.cpu._is_avx512_bf16_supported()


def autocast(device: torch.device, enabled: bool = True):
    """bf16 autocast on `device` when asked for and supported, else a no-op context."""
    if enabled and bf16_supported(device):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch, and ask torch for deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    # Deterministic mode would also fill every new tensor with NaN (a debugging aid that
    # changes no result) and costs 15-40% of a CPU training step.
    torch.utils.deterministic.fill_uninitialized_memory = False
    torch.backends.cudnn.benchmark = False


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
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    return gen
