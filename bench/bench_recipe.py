"""The time per training step of each classifier recipe switch, against the default recipe.

    python bench/bench_recipe.py [--steps 15] [--warmup 3] [--rounds 2] [--threads 1]

Each variant trains the default model of params.yaml (100 classes) with one switch changed, on
synthetic uint8 images, in a process of its own, the variants alternating over --rounds rounds;
it reports the median seconds per update and the ratio to the default measured in the same run.
Evaluation-only switches (classifier.translate_test) cost nothing per step.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import subprocess
import sys
import time

import torch

from bench_classifier import REPO, synthetic_data
from cifarbudget.config import load_params

VARIANTS = {
    "default": {},
    "whiten": {"classifier": {"whiten": True}},
    "ema 0.999": {"classifier": {"ema": 0.999}},
    "alternating flip": {"augment": {"alternating_flip": True}},
    "fixed bn scales": {"classifier": {"bn_scale": False}},
}


def seconds_per_step(variant: str, warmup: int, steps: int, threads: int) -> float:
    from cifarbudget.training.classifier import ClassifierTrainer

    torch.set_num_threads(threads)
    params = load_params(REPO / "params.yaml")
    for section, values in VARIANTS[variant].items():
        params = dataclasses.replace(params, **{section: dataclasses.replace(
            getattr(params, section), **values)})
    data = synthetic_data(params.classifier.batch_size * (warmup + steps))
    trainer = ClassifierTrainer(0, data, params, torch.device("cpu"))
    for _ in range(warmup):
        trainer.iteration()
    started = time.perf_counter()
    for _ in range(steps):
        trainer.iteration()
    return (time.perf_counter() - started) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=15, help="timed updates per run")
    parser.add_argument("--warmup", type=int, default=3, help="untimed updates first")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each variant, alternating")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(seconds_per_step(args.child, args.warmup, args.steps, args.threads)))
        return
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for _ in range(args.rounds):
        for name in VARIANTS:
            proc = subprocess.run([sys.executable, __file__, "--child", name, "--steps",
                                   str(args.steps), "--warmup", str(args.warmup), "--threads",
                                   str(args.threads)], capture_output=True, text=True)
            if proc.returncode != 0:
                sys.exit(f"{name} failed:\n{proc.stderr[-3000:]}")
            times[name].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    base = statistics.median(times["default"])
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:18s} {median * 1000:7.1f} ms/step  {median / base:5.2f}x default")


if __name__ == "__main__":
    main()
