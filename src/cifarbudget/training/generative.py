"""What the generative models share in training: their trainers found by name, real batches,
the fixed inputs of the progress figures, and the run's metrics.

The trainer of generator.model <name> is the class `Trainer` of cifarbudget.training.<name>,
a GenerativeTrainer built as Trainer(settings, data, budget, device) (the budget checked
before anything is allocated) and driven by the loop of training/loop.py; it also has
`updates()` -> {network: optimizer updates}. Imported by name, so
that a run imports (and dvc.yaml lists) only the chosen model's code.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass

import torch

from cifarbudget.config import BudgetParams, Params, as_dict
from cifarbudget.data.prepared import PreparedData, to_tensor_nchw
from cifarbudget.device import (memory_format, peak_memory_key, pick_device, precision,
                                seed_everything)
from cifarbudget.paths import TrainingFiles, generator_training_files
from cifarbudget.stage_code import stage_code
from cifarbudget.training.loop import (EpochBatches, Every, LoopResult, RunningMeans,
                                       identify_run, train)

PROGRESS_ROWS, PROGRESS_PER_ROW = 10, 8


def trainer_class(model: str) -> type:
    """The trainer of generator.model `model` (config.py lists the names)."""
    return importlib.import_module(f"cifarbudget.training.{model}").Trainer


class RealBatches:
    """Real training batch `index` as (images in [-1, 1], labels), gathered on the device from
    the uint8 training set in the order of EpochBatches."""

    def __init__(self, data: PreparedData, batch_size: int, seed: int, device: torch.device,
                 channels_last: bool, section: str):
        self.images = to_tensor_nchw(data.train_images, device)
        self.labels = torch.from_numpy(data.train_labels).to(device)
        self.rows = EpochBatches(len(self.labels), batch_size, seed, device, section)
        self.memory_format = memory_format(channels_last)

    def __call__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rows = self.rows(index)
        images = self.images[rows].float().div_(127.5).sub_(1)
        return images.contiguous(memory_format=self.memory_format), self.labels[rows]


class GenerativeTrainer:
    """What every generative trainer does first: check its budget (`check_budget`, before
    anything is allocated), keep its settings (params section `section`), classes and device,
    the real batches, the running means of `history_keys` and the step; then `build` its
    networks and optimizers."""

    notes: dict = {}  # for the run's diagnostics

    def __init__(self, params, data: PreparedData, budget: BudgetParams, device: torch.device):
        self.check_budget(params, data.num_classes, budget.generative_params)
        self.params, self.classes, self.device = params, list(data.classes), device
        self.bf16, self.param_budget = params.bf16, budget.generative_params
        self.real_batches = RealBatches(data, params.batch_size, params.seed, device,
                                        params.channels_last, self.section)
        self.means = RunningMeans(self.history_keys, device)
        self.step = 0
        self.build(params, data, budget)


def progress_latents(rng: torch.Generator, z_dim: int, num_classes: int,
                     device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Fixed z and labels of a progress figure: up to 10 evenly spaced classes x 8 noises;
    each column shares its z, so a row shows the class and a column the noise."""
    rows = min(PROGRESS_ROWS, num_classes)
    classes = torch.linspace(0, num_classes - 1, rows).round().long()
    z = torch.randn(PROGRESS_PER_ROW, z_dim, generator=rng).repeat(rows, 1)
    return z.to(device), classes.repeat_interleave(PROGRESS_PER_ROW).to(device)


@dataclass
class GenerativeRun:
    trainer: object  # the model's Trainer
    loop: LoopResult

    def metrics(self) -> dict:
        counts = self.trainer.param_counts()
        return {"params": {**counts, "total": sum(counts.values())},
                "updates": self.trainer.updates(), "steps": self.trainer.step}

    def diagnostics(self) -> dict:
        """The run's time, speed and memory (over all its resumes), device and precision."""
        clock, device = self.loop.clock, self.trainer.device
        seconds = clock["train_seconds"]
        return {**self.trainer.notes,
                "iterations_this_run": self.loop.steps_this_run,
                "train_seconds": round(seconds, 2), "wall_seconds": round(clock["wall_seconds"], 2),
                "iterations_per_second": round(self.trainer.step / seconds, 3) if seconds else None,
                peak_memory_key(device): round(clock["peak_memory_mib"], 1),
                "device": str(device), "precision": precision(device, self.trainer.bf16)}


def train_generator(params: Params, data: PreparedData,
                    files: TrainingFiles | None = None) -> GenerativeRun:
    """Train generator.model to its `steps`, resuming from its checkpoint if it is this run's.

    Writes the checkpoint, the history, the figures and the snapshots as it goes (at the
    pipeline's paths unless `files` says otherwise); returns the trainer and the loop's result
    for the caller to save the model file and the metrics.
    """
    model = params.generator.model
    settings = getattr(params, model)
    device = pick_device()
    seed_everything(settings.seed, settings.deterministic)
    trainer = trainer_class(model)(settings, data, params.budget, device)
    every = Every(log=settings.log_every, checkpoint=settings.checkpoint_every,
                  progress=settings.progress_every, snapshot=settings.snapshot_every)
    # Nothing in these models' schedules depends on `steps`: raising it continues a run.
    run = identify_run({model: {k: v for k, v in as_dict(settings).items() if k != "steps"}},
                       data, device, settings.bf16, stage_code("train_generator", model))
    loop = train(trainer, settings.steps, every, files or generator_training_files(model),
                 run, f"train_{model}")
    return GenerativeRun(trainer, loop)
