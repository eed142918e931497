"""Training speed of the default GAN (params.yaml): this project's way against the textbook way.

Both variants run the same training iteration (training/gan.py's Trainer: n_dis D updates with the
configured loss and DiffAugment, one G update, the EMA) on the same networks and batch size:

  textbook  torchvision-style dataset of PIL images, ToTensor + Normalize transforms,
            a shuffling DataLoader; fp32, NCHW
  project   uint8 images resident on the device, each batch one indexing operation;
            bf16 autocast, channels-last, freed memory kept for reuse (keep_freed_memory)

Each variant runs in a child process of its own (so its peak memory is its own), the two
alternating for --rounds rounds; the ratio compares the median iterations/s. The images
are random, with CIFAR-100's shape and size (speed does not depend on their content).

    python bench/bench_gan.py [--iterations 6] [--rounds 2] [--threads N] [--workers 2]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import statistics
import subprocess
import sys
import time

import numpy as np
import torch

from cifarbudget.config import load_params
from cifarbudget.data.prepared import PreparedData
from cifarbudget.device import keep_freed_memory
from cifarbudget.training.gan import Trainer

TRAIN_IMAGES, NUM_CLASSES = 50_000, 100
VARIANTS = ("textbook", "project")


def synthetic_cifar100(seed: int = 0) -> PreparedData:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (TRAIN_IMAGES, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, NUM_CLASSES, TRAIN_IMAGES).astype(np.int64)
    return PreparedData(images, labels, images[:0], labels[:0],
                        classes=[f"class_{i}" for i in range(NUM_CLASSES)],
                        mean=[0.5] * 3, std=[0.29] * 3, name="cifar100")


class PilDataset(torch.utils.data.Dataset):
    """What torchvision.datasets.CIFAR100 does per item: array -> PIL image -> transforms."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        from torchvision import transforms

        self.images, self.labels = images, labels
        self.transform = transforms.Compose([transforms.ToTensor(),
                                             transforms.Normalize((0.5,) * 3, (0.5,) * 3)])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        from PIL import Image

        return self.transform(Image.fromarray(self.images[index])), int(self.labels[index])


def textbook_batches(data: PreparedData, batch_size: int, workers: int):
    """A callable like training/generative.py's RealBatches, fed by a shuffling DataLoader
    that restarts each epoch."""
    loader = torch.utils.data.DataLoader(PilDataset(data.train_images, data.train_labels),
                                         batch_size=batch_size, shuffle=True, drop_last=True,
                                         num_workers=workers, persistent_workers=workers > 0)

    def endless():
        while True:
            yield from loader

    stream = endless()
    return lambda index: next(stream)


def run_variant(variant: str, iterations: int, warmup: int, workers: int) -> dict:
    """Train `warmup` + `iterations` iterations in this process; time the last `iterations`."""
    params = load_params()
    project = variant == "project"
    gan = dataclasses.replace(params.gan, bf16=project, channels_last=project)
    device = torch.device("cpu")
    data = synthetic_cifar100()
    torch.manual_seed(0)
    trainer = Trainer(gan, data, dataclasses.replace(params.budget,
                                                     generative_steps=warmup + iterations), device)
    if project:
        keep_freed_memory()  # as the pipeline's training loop does
    else:
        trainer.real_batches = textbook_batches(data, gan.batch_size, workers)
    for _ in range(warmup):
        trainer.iteration()
    started = time.perf_counter()
    for _ in range(iterations):
        trainer.iteration()
    seconds = time.perf_counter() - started
    counts = trainer.param_counts()
    return {"variant": variant, "it_per_s": iterations / seconds,
            "images_per_s": iterations * gan.batch_size * gan.n_dis / seconds,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "generator_params": counts["generator"], "discriminator_params": counts["discriminator"],
            "batch_size": gan.batch_size, "threads": torch.get_num_threads()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iterations", type=int, default=6, help="timed iterations per run")
    parser.add_argument("--warmup", type=int, default=2, help="untimed iterations first")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each variant, alternating")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--workers", type=int, default=2,
                        help="DataLoader workers of the textbook variant (the tutorial's 2)")
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        print(json.dumps(run_variant(args.child, args.iterations, args.warmup, args.workers)))
        return

    forwarded = ["--iterations", str(args.iterations), "--warmup", str(args.warmup),
                 "--threads", str(args.threads), "--workers", str(args.workers)]
    results: dict[str, list[dict]] = {v: [] for v in VARIANTS}
    for round_index in range(args.rounds):
        for variant in VARIANTS:
            out = subprocess.run([sys.executable, __file__, "--child", variant, *forwarded],
                                 check=True, capture_output=True, text=True).stdout
            result = json.loads(out.strip().splitlines()[-1])
            results[variant].append(result)
            print(f"round {round_index + 1}: {variant:8s} {result['it_per_s']:.3f} it/s, "
                  f"peak RSS {result['peak_rss_mib']:.0f} MiB", flush=True)

    first = results["project"][0]
    print(f"\nG {first['generator_params']:,} + D {first['discriminator_params']:,} parameters, "
          f"batch {first['batch_size']}, {first['threads']} torch threads, "
          f"{args.iterations} timed iterations x {args.rounds} rounds per variant")
    print(f"{'variant':10s} {'it/s (median)':>14s} {'images/s':>10s} {'peak RSS MiB':>13s}")
    medians = {}
    for variant in VARIANTS:
        runs = results[variant]
        medians[variant] = statistics.median(r["it_per_s"] for r in runs)
        print(f"{variant:10s} {medians[variant]:14.3f} "
              f"{statistics.median(r['images_per_s'] for r in runs):10.1f} "
              f"{max(r['peak_rss_mib'] for r in runs):13.0f}")
    print(f"speed-up project / textbook: {medians['project'] / medians['textbook']:.2f}x")


if __name__ == "__main__":
    main()
