"""The cost of the classifier's evaluation in fp32 (what training logs since evaluation is exact)
against bf16 autocast (what it logged before), for one `classifier.eval_every` evaluation.

    python bench/bench_evaluation.py [--images 10000] [--rounds 3] [--threads 1]

Each precision evaluates the default model of params.yaml (100 classes) on --images synthetic
uint8 test images with the default test-time views (classifier.flip_test, translate_test), in
a process of its own, the two alternating over --rounds rounds; it reports the median seconds
per evaluation, their ratio, and the share of a training window of eval_every steps (timed in
the same process, default recipe, fp32 or bf16 as the machine trains).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import torch

from bench_classifier import REPO, synthetic_data
from cifarbudget.config import load_params
from cifarbudget.device import FORCE_PRECISION, autocast, precision
from cifarbudget.training.classifier import ClassifierTrainer, evaluate

TRAIN_STEPS = 10  # timed training steps, scaled to eval_every


def measure(mode: str, images: int, threads: int) -> dict:
    torch.set_num_threads(threads)
    params = load_params(REPO / "params.yaml")
    c = params.classifier
    data = synthetic_data(max(images, c.batch_size * (TRAIN_STEPS + 2)))
    trainer = ClassifierTrainer(0, data, params, torch.device("cpu"))
    for _ in range(2):
        trainer.iteration()
    started = time.perf_counter()
    for _ in range(TRAIN_STEPS):
        trainer.iteration()
    step_seconds = (time.perf_counter() - started) / TRAIN_STEPS
    test, labels = data.train_images[:images], torch.from_numpy(data.train_labels[:images])
    with autocast(trainer.device, mode == "bf16"):  # what the evaluation ran under before
        started = time.perf_counter()
        evaluate(trainer.model, test, labels, data.mean, data.std, trainer.device, c.flip_test,
                 c.translate_test)
        seconds = time.perf_counter() - started
    return {"eval_seconds": seconds, "window_seconds": step_seconds * c.eval_every,
            "training": precision(trainer.device, c.bf16)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=10000, help="test images evaluated")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each mode, alternating")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--child", choices=("fp32", "bf16"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.images, args.threads)))
        return
    runs: dict[str, list[dict]] = {"bf16": [], "fp32": []}
    for _ in range(args.rounds):
        for mode in runs:
            proc = subprocess.run([sys.executable, __file__, "--child", mode, "--images",
                                   str(args.images), "--threads", str(args.threads)],
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                sys.exit(f"{mode} failed:\n{proc.stderr[-3000:]}")
            runs[mode].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    median = {mode: statistics.median(r["eval_seconds"] for r in rs) for mode, rs in runs.items()}
    window = statistics.median(r["window_seconds"] for rs in runs.values() for r in rs)
    print(f"training: {runs['fp32'][0]['training']}; {FORCE_PRECISION} unset")
    for mode, seconds in median.items():
        print(f"evaluation in {mode}: {seconds:6.2f} s  ({seconds / window:6.1%} of the "
              f"{window:.0f} s of training between two evaluations)")
    print(f"fp32 / bf16: {median['fp32'] / median['bf16']:.2f}x")


if __name__ == "__main__":
    main()
