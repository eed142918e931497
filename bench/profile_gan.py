"""Where one iteration of the default GAN (params.yaml) spends its time, against what the
machine's matrix units could do: the profile that each speed change is measured from.

    python bench/profile_gan.py [--iterations 10] [--warmup 3] [--threads N] [--fp32] [--top 15]

Trains the default Trainer (training/gan.py) on synthetic CIFAR-100-shaped data (bench_gan.py's)
for --warmup untimed iterations, then profiles --iterations with torch.profiler. It prints the
operators by self time (share, calls per iteration), the operator calls per iteration, the
GFLOP per iteration that the profiler counts (convolutions and matrix products) and the rate
they ran at, beside the machine's peak: a 2048x2048 matrix product in the same precision and
threads. --fp32 switches bf16 autocast off (what an AVX2-only CPU runs).
"""
from __future__ import annotations

import argparse
import dataclasses
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from bench_gan import synthetic_cifar100
from cifarbudget.config import load_params
from cifarbudget.device import autocast, keep_freed_memory, precision
from cifarbudget.training.gan import Trainer

REPO = Path(__file__).resolve().parents[1]
GEMM_SIZE, GEMM_REPEATS = 2048, 20


def gemm_gflops(bf16: bool) -> float:
    """The rate of a square matrix product in the training's precision, GFLOP/s."""
    a, b = torch.randn(GEMM_SIZE, GEMM_SIZE), torch.randn(GEMM_SIZE, GEMM_SIZE)
    device = torch.device("cpu")
    with autocast(device, bf16):
        for _ in range(3):
            a @ b
        started = time.perf_counter()
        for _ in range(GEMM_REPEATS):
            a @ b
        seconds = time.perf_counter() - started
    return 2 * GEMM_SIZE ** 3 * GEMM_REPEATS / seconds / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iterations", type=int, default=10, help="profiled iterations")
    parser.add_argument("--warmup", type=int, default=3, help="untimed iterations first")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--fp32", action="store_true", help="bf16 autocast off")
    parser.add_argument("--top", type=int, default=15, help="operators listed")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    params = load_params(REPO / "params.yaml")
    gan = dataclasses.replace(params.gan, bf16=not args.fp32)
    device = torch.device("cpu")
    budget = dataclasses.replace(params.budget, generative_steps=args.warmup + args.iterations)
    trainer = Trainer(gan, synthetic_cifar100(), budget, device)
    keep_freed_memory()  # as the training loop does
    for _ in range(args.warmup):
        trainer.iteration()
    with profile(activities=[ProfilerActivity.CPU], with_flops=True) as prof:
        started = time.perf_counter()
        for _ in range(args.iterations):
            trainer.iteration()
        seconds = (time.perf_counter() - started) / args.iterations

    # Top-level operators only (called from Python, not from another operator): their self
    # times add up to the iteration without counting a nested call twice.
    events = [e for e in prof.events() if e.cpu_parent is None and not e.name.startswith("##")]
    self_us, calls = defaultdict(float), defaultdict(int)
    for e in prof.key_averages():
        self_us[e.key] += e.self_cpu_time_total
        calls[e.key] += e.count
    flops = sum(e.flops for e in prof.key_averages()) / args.iterations
    total_self = sum(self_us.values())
    print(f"{precision(device, gan.bf16)}, {torch.get_num_threads()} threads, "
          f"{args.iterations} profiled iterations: {seconds:.3f} s per iteration "
          f"({1 / seconds:.2f} it/s)")
    print(f"operator calls per iteration: {len(events) / args.iterations:.0f} from Python, "
          f"{sum(calls.values()) / args.iterations:.0f} in all")
    peak = gemm_gflops(gan.bf16)
    print(f"counted work: {flops / 1e9:.1f} GFLOP per iteration, run at "
          f"{flops / seconds / 1e9:.0f} GFLOP/s; a {GEMM_SIZE}x{GEMM_SIZE} matrix product runs "
          f"at {peak:.0f} GFLOP/s here ({flops / seconds / 1e9 / peak:.0%} of it)")
    print(f"\n{'operator':40s} {'self time':>9s} {'calls/it':>9s}")
    for name in sorted(self_us, key=self_us.get, reverse=True)[:args.top]:
        print(f"{name[:40]:40s} {self_us[name] / total_self:9.1%} "
              f"{calls[name] / args.iterations:9.1f}")


if __name__ == "__main__":
    main()
