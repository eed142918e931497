"""Classifier training throughput: the pipeline's training step against the textbook recipe.

    python bench/bench_classifier.py [--steps 15] [--warmup 3] [--threads N]
                                     [--batch-size B] [--profile]

Every variant trains the default model of params.yaml (widths, depths, batch size,
SGD settings, 100 classes) on the same synthetic uint8 images, each in a fresh
process so that its peak memory is its own:

  textbook        a Dataset of PIL images, torchvision RandomCrop(32, padding=4),
                  RandomHorizontalFlip, ToTensor, Normalize, a DataLoader with 2
                  workers, fp32, NCHW: the PyTorch CIFAR tutorial way
  pipeline-fp32   the pipeline's ClassifierTrainer.iteration (uint8 data held as a tensor, batches
                  gathered by index, augmented and normalized as whole tensors), fp32, NCHW
  pipeline        ClassifierTrainer.iteration as params.yaml configures it (bf16 autocast,
                  channels_last)

All variants use the same number of torch threads (classifier.threads, or --threads).
Throughput is measured over --steps updates after --warmup untimed ones; the results
also go to bench/results/classifier.json. --profile prints where the pipeline's step
spends its time (torch.profiler).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from cifarbudget.config import load_params
from cifarbudget.data.prepared import PreparedData
from cifarbudget.io import write_json
from cifarbudget.models.classifier import build_classifier
from cifarbudget.training.classifier import ClassifierTrainer

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "classifier.json"
NUM_CLASSES = 100
VARIANTS = ("textbook", "pipeline-fp32", "pipeline")


def synthetic_data(count: int) -> PreparedData:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (count, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, NUM_CLASSES, count).astype(np.int64)
    return PreparedData(train_images=images, train_labels=labels, test_images=images[:10],
                        test_labels=labels[:10], classes=[str(i) for i in range(NUM_CLASSES)],
                        mean=[0.49, 0.48, 0.45], std=[0.25, 0.24, 0.26], name="synthetic")


def textbook_steps(params, data: PreparedData, total: int):
    """The same model and optimizer trained from PIL images through a DataLoader."""
    from PIL import Image
    from torch.utils.data import DataLoader, Dataset
    from torchvision import transforms

    class PILImages(Dataset):
        def __init__(self, images, labels, transform):
            self.images, self.labels, self.transform = images, labels, transform

        def __len__(self):
            return len(self.labels)

        def __getitem__(self, i):
            return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])

    c = params.classifier
    transform = transforms.Compose([
        transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(),
        transforms.ToTensor(), transforms.Normalize(data.mean, data.std)])
    loader = DataLoader(PILImages(data.train_images, data.train_labels, transform),
                        batch_size=c.batch_size, shuffle=True, num_workers=2, drop_last=True)
    model = build_classifier(c.widths, c.depths, NUM_CLASSES)
    optimizer = torch.optim.SGD(model.parameters(), lr=c.lr, momentum=c.momentum,
                                nesterov=c.nesterov, weight_decay=c.weight_decay)
    criterion = torch.nn.CrossEntropyLoss()
    batches = iter(loader)
    for _ in range(total):
        inputs, targets = next(batches)
        optimizer.zero_grad()
        loss = criterion(model(inputs), targets)
        loss.backward()
        optimizer.step()
        yield loss.item()


def pipeline_steps(params, data: PreparedData, total: int):
    trainer = ClassifierTrainer(0, data, params, torch.device("cpu"))
    for _ in range(total):
        trainer.iteration()
        yield


def bench_params(threads: int | None, batch_size: int | None):
    """params.yaml with the command line's overrides."""
    params = load_params(REPO / "params.yaml")
    c = params.classifier
    c = dataclasses.replace(c, threads=c.threads if threads is None else threads,
                            batch_size=batch_size or c.batch_size)
    return dataclasses.replace(params, classifier=c)


def run_variant(name: str, warmup: int, steps: int, threads: int | None, batch_size: int | None,
                profile: bool) -> dict:
    """Train `warmup + steps` updates of one variant in this process; time the last `steps`."""
    params = bench_params(threads, batch_size)
    c = params.classifier
    if c.threads:
        torch.set_num_threads(c.threads)  # every variant, so all compare at the same count
    if name == "pipeline-fp32":
        c = dataclasses.replace(c, bf16=False, channels_last=False, compile=False)
    params = dataclasses.replace(params, classifier=c)
    data = synthetic_data(c.batch_size * (warmup + steps))
    run = textbook_steps if name == "textbook" else pipeline_steps
    updates = run(params, data, warmup + steps)
    for _ in range(warmup):
        next(updates)
    if profile:
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as profiler
        with profiler(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            for _ in range(steps):
                next(updates)
        print(prof.key_averages(group_by_input_shape=True).table(
            sort_by="self_cpu_time_total", row_limit=25, max_name_column_width=32,
            max_shapes_column_width=60), file=sys.stderr)
    start = time.perf_counter()
    for _ in range(steps):
        next(updates)
    seconds = time.perf_counter() - start
    return {"variant": name, "images_per_second": steps * c.batch_size / seconds,
            "updates_per_second": steps / seconds, "batch_size": c.batch_size,
            "threads": torch.get_num_threads(),
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=15, help="timed updates per variant")
    parser.add_argument("--warmup", type=int, default=3, help="untimed updates first")
    parser.add_argument("--threads", type=int,
                        help="torch threads per variant (default: classifier.threads of "
                             "params.yaml; 0 is torch's default, one per core)")
    parser.add_argument("--batch-size", type=int, help="default: classifier.batch_size")
    parser.add_argument("--profile", action="store_true",
                        help="print a torch.profiler table of the pipeline's step")
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)  # child process
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(run_variant(args.variant, args.warmup, args.steps, args.threads,
                                     args.batch_size, args.profile)))
        return

    c = bench_params(args.threads, args.batch_size).classifier
    model = build_classifier(c.widths, c.depths, NUM_CLASSES)
    print(f"model: widths {c.widths}, depths {c.depths}, "
          f"{sum(p.numel() for p in model.parameters()):,} parameters, batch {c.batch_size}; "
          f"pipeline: bf16 {c.bf16}, channels_last {c.channels_last}, compile {c.compile}; "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs")
    print(f"{args.warmup} warm-up + {args.steps} timed updates per variant, "
          f"each in its own process")
    results = {}
    for name in VARIANTS:
        cmd = [sys.executable, __file__, "--variant", name, "--steps", str(args.steps),
               "--warmup", str(args.warmup)]
        for option, value in (("--threads", args.threads), ("--batch-size", args.batch_size)):
            if value is not None:
                cmd += [option, str(value)]
        if args.profile and name == "pipeline":
            cmd.append("--profile")
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"{name} failed:\n{proc.stderr[-3000:]}")
        if args.profile and name == "pipeline":
            print(proc.stderr)
        results[name] = r = json.loads(proc.stdout.strip().splitlines()[-1])
        speedup = r["images_per_second"] / results["textbook"]["images_per_second"]
        print(f"{name:14s} {r['images_per_second']:8.0f} images/s {r['updates_per_second']:6.2f} "
              f"updates/s  peak RSS {r['peak_rss_mib']:6.0f} MiB  threads {r['threads']}  "
              f"{speedup:4.2f}x textbook", flush=True)
    ratio = results["pipeline"]["images_per_second"] / results["textbook"]["images_per_second"]
    print(f"pipeline / textbook images/s: {ratio:.2f}x")
    write_json(RESULTS, {"variants": results, "pipeline_over_textbook": ratio,
                         "steps": args.steps, "warmup": args.warmup})
    print(f"saved {RESULTS.relative_to(REPO)}")


if __name__ == "__main__":
    main()
