"""The one training loop: the classifier, the GAN and the VAE all train through `train`.

It drives a trainer, which has
  device, bf16, step (iterations done), means (the RunningMeans of its per-step statistics),
  param_counts() and param_budget (printed at the start),
  iteration(): one step, its statistics added to `means`, step += 1,
  history_row(means) -> the values logged at a log step (the classifier evaluates here),
  state_dict() / load_state_dict(state),
and, for the figures and snapshots that `Every` asks for, history_panels,
save_progress(path) and sampling_network().

Every random draw of a step comes from generators seeded by (seed, step) or (seed, epoch),
and the checkpoint holds every other piece of state, so a resumed run on the CPU ends with the
weights an uninterrupted one would have. Statistics stay on the device until a log step: no
host sync per step.
"""
from __future__ import annotations

import hashlib
import json
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from cifarbudget.data.prepared import PreparedData
from cifarbudget.device import (autocast_dtype, keep_freed_memory, peak_memory_mib, precision,
                                stateless_generator, synchronize)
from cifarbudget.errors import Interrupted, UserError
from cifarbudget.io import load_checkpoint, save_checkpoint, write_csv
from cifarbudget.paths import TrainingFiles
from cifarbudget.plots.history import save_history_figure
from cifarbudget.stage_code import changed_files

EPOCH_STREAM = 0  # stateless_generator key of the epoch permutations; trainers use 1 and up
# Settings that say only when to log or save: a checkpoint made under other values resumes.
WHEN_KEYS = ("log_every", "eval_every", "progress_every", "checkpoint_every", "snapshot_every")


class EpochBatches:
    """The rows of batch `index`: epoch e is a permutation drawn from (seed, e) on the device,
    cut into full batches (each epoch's remainder is skipped). Batch `index` depends only on
    (seed, index), so a resumed run draws what an uninterrupted one would."""

    def __init__(self, count: int, batch_size: int, seed: int, device: torch.device,
                 section: str):
        if batch_size > count:
            raise UserError(f"{section}.batch_size: {batch_size} exceeds the {count} training "
                            f"images; lower {section}.batch_size")
        self.count, self.batch_size, self.seed, self.device = count, batch_size, seed, device
        self.per_epoch = count // batch_size
        self._epoch, self._order = -1, None

    def __call__(self, index: int) -> torch.Tensor:
        epoch, position = divmod(index, self.per_epoch)
        if epoch != self._epoch:
            rng = stateless_generator(self.seed, EPOCH_STREAM, epoch, device=self.device)
            self._epoch = epoch
            self._order = torch.randperm(self.count, generator=rng, device=self.device)
        return self._order[position * self.batch_size:(position + 1) * self.batch_size]


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


@dataclass(frozen=True)
class RunId:
    """What a checkpoint must match to be resumed: the fingerprint of the run's settings, data,
    device type, precision and code; the last three also on their own, to say what differs."""
    fingerprint: str
    device: str     # the device type: random draws differ between devices
    precision: str  # "bf16" or "fp32": the arithmetic differs
    code: dict[str, str]  # {path: sha256} of the project files the stage runs


def identify_run(settings: dict[str, dict], data: PreparedData, device: torch.device,
                 bf16: bool, code: dict[str, str]) -> RunId:
    """The identity of a run: the trainer's settings less WHEN_KEYS, the data, the device type,
    the precision it trains in and its code (stage_code.stage_code)."""
    labels = hashlib.sha256(np.ascontiguousarray(data.train_labels).tobytes()
                            + np.ascontiguousarray(data.test_labels).tobytes()).hexdigest()
    arithmetic = "bf16" if autocast_dtype(device, bf16) is not None else "fp32"
    run = {"settings": {section: {k: v for k, v in values.items() if k not in WHEN_KEYS}
                        for section, values in settings.items()},
           "data": {"name": data.name, "classes": data.classes, "mean": data.mean,
                    "std": data.std, "labels": labels},
           "device": device.type, "precision": arithmetic, "code": code}
    return RunId(hashlib.sha256(json.dumps(run, sort_keys=True).encode()).hexdigest()[:16],
                 device.type, arithmetic, code)


def resume_state(path: Path, run: RunId) -> dict | None:
    """The checkpoint at `path` if it belongs to `run`, else None (start over); a checkpoint
    of another device, precision or code is not resumed, and the message says why."""
    if not path.exists():
        return None
    state = load_checkpoint(path)
    if state.get("fingerprint") == run.fingerprint:
        return state
    written_on, written_in, written_by = (state.get(k) for k in ("device", "precision", "code"))
    if written_on is not None and written_on != run.device:
        why = (f"written on {written_on}, this run is on {run.device} (whose random draws "
               f"differ)")
    elif written_in is not None and written_in != run.precision:
        why = f"written in {written_in}, this run computes in {run.precision}"
    elif isinstance(written_by, dict) and written_by != run.code:
        changed = changed_files({str(k): str(v) for k, v in written_by.items()}, run.code)
        more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
        why = f"written by other code ({', '.join(changed[:3])}{more} changed)"
    else:
        why = "saved by a different configuration"
    print(f"{path}: {why}: starting over", file=sys.stderr)
    return None


@dataclass(frozen=True, kw_only=True)
class Every:
    """How often, in steps, the loop logs a history row, checkpoints, draws the progress and
    history figures and keeps a snapshot of the sampling network (None: never)."""
    log: int
    checkpoint: int
    progress: int | None = None
    snapshot: int | None = None


@dataclass
class LoopResult:
    history: list[dict]
    steps_this_run: int
    clock: dict  # train_seconds, wall_seconds, peak_memory_mib, summed over resumes


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


def due(step: int, every: int | None, last: bool) -> bool:
    return every is not None and (step % every == 0 or last)


def train(trainer, steps: int, every: Every, files: TrainingFiles, run: RunId,
          name: str) -> LoopResult:
    """Resume from `files.checkpoint` if it is `run`'s, then train up to `steps`.

    Logs a history row every `every.log` steps (written to `files.history` if given), and
    saves the figures, snapshots and checkpoint at their intervals, all of them at the end.
    """
    device = trainer.device
    state = resume_state(files.checkpoint, run)
    if state is not None and state["step"] > steps:
        tqdm.write(f"{name}: the checkpoint is at step {state['step']}, past the {steps} "
                   f"steps asked for; starting over")
        state = None
    history, clock = [], {"train_seconds": 0.0, "wall_seconds": 0.0, "peak_memory_mib": 0.0}
    if state is not None:
        trainer.load_state_dict(state)
        trainer.means.load_state_dict(state["running_means"])
        history, clock = state["history"], state["clock"]
        tqdm.write(f"{name}: resuming from {files.checkpoint} at step {trainer.step} of {steps}")
    if every.snapshot is not None:
        drop_snapshots_after(files.snapshots, trainer.step)
    saved_step = trainer.step if state is not None else None
    saved_clock = clock

    def save_state() -> None:
        nonlocal saved_step, saved_clock
        saved_clock = {**clock, "wall_seconds": wall_before + time.perf_counter() - started,
                       "peak_memory_mib": max(clock["peak_memory_mib"], peak_memory_mib(device))}
        save_checkpoint(files.checkpoint, {
            **trainer.state_dict(), "fingerprint": run.fingerprint, "device": run.device,
            "precision": run.precision, "code": run.code,
            "history": history, "running_means": trainer.means.state_dict(),
            "clock": saved_clock})
        saved_step = trainer.step

    def save_figures() -> None:
        if every.progress is not None:
            trainer.save_progress(files.progress)
            save_history_figure(history, trainer.history_panels, files.history_figure,
                                f"{name}: training history")

    counts = trainer.param_counts()
    tqdm.write(f"{name}: {' + '.join(f'{k} {n:,}' for k, n in counts.items())} trainable "
               f"parameters (budget: fewer than {trainer.param_budget:,}), on {device.type} "
               f"in {precision(device, trainer.bf16)}")
    keep_freed_memory()  # every step reallocates the same activations
    start, wall_before = trainer.step, clock["wall_seconds"]
    started = segment = time.perf_counter()
    bar = tqdm(total=steps, initial=start, desc=name, unit="it", dynamic_ncols=True)
    try:
        while trainer.step < steps:
            trainer.iteration()
            bar.update()
            step, last = trainer.step, trainer.step == steps
            todo = [due(step, n, last) for n in (every.log, every.progress, every.snapshot,
                                                 every.checkpoint)]
            if not any(todo):
                continue
            synchronize(device)  # the time of the steps so far, not of their launches
            clock["train_seconds"] += time.perf_counter() - segment
            log, progress, snapshot, checkpoint = todo
            if log:
                row = {"step": step, **trainer.history_row(trainer.means.pop())}
                history.append(row)
                if files.history is not None:
                    write_csv(files.history, history)
                bar.set_postfix({k: f"{v:.4g}" for k, v in row.items() if k != "step"},
                                refresh=False)
            if progress:
                save_figures()
            if snapshot:
                save_snapshot(files.snapshots, step, trainer.sampling_network(),
                              trainer.classes)
            if checkpoint:
                save_state()
            segment = time.perf_counter()
    except KeyboardInterrupt:
        bar.close()  # ends the bar's line: the interrupt message gets a line of its own
        raise Interrupted.at(name, trainer.step, saved_step, files.checkpoint,
                             every.checkpoint) from None
    bar.close()
    if start == steps:  # a finished run read back: redraw what `dvc repro` may have removed
        if files.history is not None:
            write_csv(files.history, history)
        save_figures()
    return LoopResult(history, trainer.step - start, saved_clock)
