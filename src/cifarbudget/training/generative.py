"""What the two generative models (GAN and VAE) share in training: seeded real batches, logged
means, and the loop that resumes, logs, draws progress and checkpoints.

The loop drives a trainer with `.step`, `.means` (RunningMeans), `.iteration(real_batches)`,
`.state_dict()`, `.load_state_dict(state)`, `.sampling_network()` and `.history_panels` (the
history figure's panels: a title -> the logged values drawn in it). Every random draw of an
iteration comes from generators seeded by (seed, step), and the checkpoint holds every other
piece of state, so a resumed run on the CPU ends with the weights an uninterrupted one would
have.
"""
from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from cifarbudget import paths
from cifarbudget.config import as_dict
from cifarbudget.data.prepared import PreparedData, to_tensor_nchw
from cifarbudget.device import keep_freed_memory, precision, stateless_generator
from cifarbudget.errors import Interrupted, UserError
from cifarbudget.io import write_csv
from cifarbudget.plots.history import save_history_figure
from cifarbudget.training.checkpoint import fingerprint, resume_state, save_checkpoint

EPOCH_STREAM = 0  # stateless_generator key of the epoch permutations
# Settings that change neither the weights nor the outputs' meaning: a checkpoint made
# under other values resumes. `steps` is among them, so raising it continues a run.
NOT_FINGERPRINTED = ("steps", "log_every", "progress_every", "checkpoint_every",
                     "snapshot_every")


def memory_format(channels_last: bool) -> torch.memory_format:
    return torch.channels_last if channels_last else torch.contiguous_format


class RealBatches:
    """Real training batches: each epoch a permutation drawn from (seed, epoch), drop-last.

    Batch `index` depends only on (seed, index), so a resumed run draws what an
    uninterrupted one would. Images live on the device as uint8 and become [-1, 1] floats
    one batch at a time.
    """

    def __init__(self, data: PreparedData, batch_size: int, seed: int, device: torch.device,
                 channels_last: bool, section: str):
        if batch_size > len(data.train_labels):
            raise UserError(f"{section}.batch_size: {batch_size} exceeds the "
                            f"{len(data.train_labels)} training images; lower "
                            f"{section}.batch_size")
        self.images = to_tensor_nchw(data.train_images, device)
        self.labels = torch.from_numpy(data.train_labels).to(device)
        self.batch_size, self.seed = batch_size, seed
        self.per_epoch = len(self.labels) // batch_size
        self.memory_format = memory_format(channels_last)
        self._epoch, self._order = -1, None

    def __call__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, position = divmod(index, self.per_epoch)
        if epoch != self._epoch:
            order = torch.randperm(len(self.labels), generator=stateless_generator(
                self.seed, EPOCH_STREAM, epoch))
            self._epoch, self._order = epoch, order.to(self.labels.device)
        rows = self._order[position * self.batch_size:(position + 1) * self.batch_size]
        images = self.images[rows].float().div_(127.5).sub_(1)
        return images.contiguous(memory_format=self.memory_format), self.labels[rows]


class RunningMeans:
    """Means of the logged statistics since the last row, kept on the device (no syncs)."""

    def __init__(self, keys: tuple[str, ...], device: torch.device):
        self.keys = keys
        self.sums = torch.zeros(len(keys), dtype=torch.float64, device=device)
        self.counts = torch.zeros(len(keys), dtype=torch.float64, device=device)

    def add(self, stats: dict) -> None:
        for i, key in enumerate(self.keys):
            if key in stats:
                self.sums[i] += stats[key]
                self.counts[i] += 1

    def pop(self) -> dict[str, float]:
        """The means (NaN where nothing was added); then start a new window."""
        means = (self.sums / self.counts).tolist()
        self.sums.zero_()
        self.counts.zero_()
        return dict(zip(self.keys, means))

    def state_dict(self) -> dict:
        return {"sums": self.sums, "counts": self.counts}

    def load_state_dict(self, state: dict) -> None:
        self.sums.copy_(state["sums"])
        self.counts.copy_(state["counts"])


def run_fingerprint(section: str, params, data: PreparedData, device: torch.device) -> str:
    """Hash of a model's settings (less NOT_FINGERPRINTED), of the data and of the device
    type: the identity of a run, so that a checkpoint resumes only the run that wrote it."""
    settings = {k: v for k, v in as_dict(params).items() if k not in NOT_FINGERPRINTED}
    labels = hashlib.sha256(np.ascontiguousarray(data.train_labels).tobytes()).hexdigest()
    return fingerprint({section: settings, "data": {"name": data.name, "classes": data.classes,
                                                    "train_labels": labels},
                        "device": device.type})


def run_speed(iterations: int, wall_seconds: float, device: torch.device, bf16: bool) -> dict:
    """The diagnostics of a training process: its iterations, their time and speed, the
    device and the precision it trained in."""
    return {"iterations_this_run": iterations, "wall_seconds": round(wall_seconds, 2),
            "iterations_per_second": round(iterations / wall_seconds, 3) if iterations else None,
            "device": str(device), "precision": precision(device, bf16)}


@dataclass(frozen=True)
class TrainingFiles:
    """Where a generative model's training writes as it goes."""
    checkpoint: Path
    history: Path
    history_figure: Path
    progress: Path
    snapshots: Path  # a folder: the sampling network every `snapshot_every` steps

    @classmethod
    def of(cls, model: str) -> TrainingFiles:
        """The pipeline's paths for `model` ("gan" or "vae")."""
        return cls(paths.CHECKPOINTS / model / "checkpoint.pt",
                   paths.generator_plots(model) / "history.csv",
                   paths.generator_plots(model) / "history.png",
                   paths.generator_plots(model) / "progress.png", paths.generator_snapshots(model))


@dataclass(frozen=True)
class Every:
    """How often (in steps) the loop logs a history row, draws progress, checkpoints and
    keeps a snapshot of the sampling network."""
    log: int
    progress: int
    checkpoint: int
    snapshot: int


def save_snapshot(folder: Path, step: int, network: torch.nn.Module, classes: list[str]) -> None:
    """Keep the sampling network (a models.gan.Generator) of `step` as step_<step>.pt, for
    `evaluate` to score quality over training (models.generator.load_snapshot reads it)."""
    save_checkpoint(folder / f"step_{step:06d}.pt", {
        "step": step, "classes": list(classes),
        "config": {"z_dim": network.z_dim, "num_classes": network.num_classes,
                   "width": network.width},
        "weights": network.state_dict()})


def drop_snapshots_after(folder: Path, step: int) -> None:
    """Remove snapshots past `step`: they belong to another run than the one (re)starting."""
    for path in folder.glob("step_*.pt"):
        taken_at = re.fullmatch(r"step_(\d+)", path.stem)
        if taken_at and int(taken_at.group(1)) > step:
            path.unlink()


def train_loop(trainer, real_batches: RealBatches, steps: int, every: Every,
               files: TrainingFiles, run_id: str, name: str, extra_columns: dict,
               save_progress: Callable[[], None]) -> tuple[int, float]:
    """Resume from `files.checkpoint` if it is run `run_id`'s, then train up to `steps`.

    Writes a history row (the running means plus `extra_columns`) every `every.log` steps,
    the progress and history figures, the checkpoint and a snapshot of
    `trainer.sampling_network()` at their intervals, and all of them at the end.
    Returns the iterations run by this call and their wall-clock seconds.
    """
    state = resume_state(files.checkpoint, run_id, trainer.device)
    history: list[dict] = []
    if state is not None and state["step"] > steps:
        tqdm.write(f"{name}: the checkpoint is at step {state['step']}, past the {steps} "
                   f"steps asked for; starting over")
        state = None
    if state is not None:
        trainer.load_state_dict(state)
        trainer.means.load_state_dict(state["running_means"])
        history = state["history"]
        tqdm.write(f"{name}: resuming from {files.checkpoint} at step {trainer.step}")
    drop_snapshots_after(files.snapshots, trainer.step)

    saved_step = trainer.step if state is not None else None

    def save_state() -> None:
        nonlocal saved_step
        save_checkpoint(files.checkpoint, {**trainer.state_dict(), "fingerprint": run_id,
                                           "device": trainer.device.type, "history": history,
                                           "running_means": trainer.means.state_dict()})
        saved_step = trainer.step

    def save_figures() -> None:
        save_progress()
        save_history_figure(history, trainer.history_panels, files.history_figure,
                            f"{name}: training history")

    keep_freed_memory()  # every iteration reallocates the same activations
    tqdm.write(f"{name}: on {trainer.device.type}, in "
               f"{precision(trainer.device, trainer.params.bf16)}")
    start = trainer.step
    started = time.perf_counter()
    bar = tqdm(total=steps, initial=start, desc=name, unit="it", dynamic_ncols=True)
    try:
        while trainer.step < steps:
            trainer.iteration(real_batches)
            bar.update()
            last = trainer.step == steps
            if trainer.step % every.log == 0 or last:
                means = trainer.means.pop()
                history.append({"step": trainer.step, **means, **extra_columns})
                write_csv(files.history, history)
                bar.set_postfix({key: f"{value:.3f}" for key, value in means.items()})
            if trainer.step % every.progress == 0 or last:
                save_figures()
            if trainer.step % every.snapshot == 0 or last:
                save_snapshot(files.snapshots, trainer.step, trainer.sampling_network(),
                              trainer.classes)
            if trainer.step % every.checkpoint == 0 or last:
                save_state()
    except KeyboardInterrupt:
        raise Interrupted.at(name, trainer.step, saved_step, files.checkpoint,
                             every.checkpoint) from None
    bar.close()
    wall = time.perf_counter() - started
    if start == steps:  # a finished run resumed: `dvc repro` deleted these outputs first
        write_csv(files.history, history)
        save_figures()
    return trainer.step - start, wall
