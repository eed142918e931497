"""Training the class-conditional SN-GAN under the parameter and update budgets.

One iteration = `n_dis` discriminator updates, then one generator update, then the EMA of
the generator's weights. Every random draw of iteration `step` (real batch order, z, fake
labels, DiffAugment) comes from generators seeded by (seed, step), and the checkpoint holds
every other piece of state (weights, power-iteration vectors, batch-norm statistics, Adam
moments, the EMA, the history and its running means), so a resumed run on the CPU ends
with the weights an uninterrupted one would have.

The history has one row per gan.log_every steps, each value a mean over those steps:
d_loss = L_real + L_fake (the plain hinge terms, comparable between the two losses),
g_loss, d_real / d_fake (mean scores on real / generated images), w_real / w_fake (the
AW weights of the two terms; 1 and 1 for the plain hinge loss), lr_g, lr_d.
"""
from __future__ import annotations

import copy
import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from cifarbudget.config import GanParams, Params, as_dict
from cifarbudget.data.prepared import PreparedData, to_tensor_nchw
from cifarbudget.device import autocast, pick_device, seed_everything, stateless_generator
from cifarbudget.errors import UserError
from cifarbudget.io import write_csv
from cifarbudget.models.sngan import Discriminator, Generator
from cifarbudget.plots.gan import save_progress_grid
from cifarbudget.training.budget import UpdateCap, check_param_budget, count_trainable
from cifarbudget.training.checkpoint import fingerprint, resume_state, save_checkpoint
from cifarbudget.training.diffaugment import diff_augment, parse_policy
from cifarbudget.training.losses import discriminator_backward, generator_hinge

# Independent random streams, keyed (seed, stream, index).
EPOCH_STREAM, STEP_STREAM, PROGRESS_STREAM = 0, 1, 2
PROGRESS_ROWS, PROGRESS_PER_ROW = 10, 8
# The EMA decay ramps up as (1 + step) / (10 + step) until it reaches gan.ema, so early
# progress grids show the training generator's average rather than its random start.
EMA_WARMUP = 10
# Settings that change neither the weights nor the outputs' meaning: a checkpoint made
# under other values resumes. gan.steps is among them, so raising it continues a run.
NOT_FINGERPRINTED = ("steps", "log_every", "progress_every", "checkpoint_every")
HISTORY_KEYS = ("d_loss", "g_loss", "d_real", "d_fake", "w_real", "w_fake")


def _memory_format(channels_last: bool) -> torch.memory_format:
    return torch.channels_last if channels_last else torch.contiguous_format


class RealBatches:
    """Real training batches: each epoch a permutation drawn from (seed, epoch), drop-last.

    Batch `index` depends only on (seed, index), so a resumed run draws what an
    uninterrupted one would. Images live on the device as uint8 and become [-1, 1] floats
    one batch at a time.
    """

    def __init__(self, data: PreparedData, batch_size: int, seed: int, device: torch.device,
                 channels_last: bool):
        if batch_size > len(data.train_labels):
            raise UserError(f"gan.batch_size: {batch_size} exceeds the {len(data.train_labels)} "
                            f"training images; lower gan.batch_size")
        self.images = to_tensor_nchw(data.train_images, device)
        self.labels = torch.from_numpy(data.train_labels).to(device)
        self.batch_size, self.seed = batch_size, seed
        self.per_epoch = len(self.labels) // batch_size
        self.memory_format = _memory_format(channels_last)
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

    def __init__(self, device: torch.device):
        self.sums = torch.zeros(len(HISTORY_KEYS), dtype=torch.float64, device=device)
        self.counts = torch.zeros(len(HISTORY_KEYS), dtype=torch.float64, device=device)

    def add(self, stats: dict) -> None:
        for i, key in enumerate(HISTORY_KEYS):
            if key in stats:
                self.sums[i] += stats[key]
                self.counts[i] += 1

    def pop(self) -> dict[str, float]:
        """The means (NaN where nothing was added); then start a new window."""
        means = (self.sums / self.counts).tolist()
        self.sums.zero_()
        self.counts.zero_()
        return dict(zip(HISTORY_KEYS, means))

    def state_dict(self) -> dict:
        return {"sums": self.sums, "counts": self.counts}

    def load_state_dict(self, state: dict) -> None:
        self.sums.copy_(state["sums"])
        self.counts.copy_(state["counts"])


class GanTrainer:
    """G, D, the EMA of G and their Adam optimizers, each capped at `update_limit` updates."""

    def __init__(self, params: GanParams, classes: list[str], update_limit: int,
                 device: torch.device):
        self.params, self.classes, self.device = params, list(classes), device
        self.policy = parse_policy(params.diffaugment)
        memory_format = _memory_format(params.channels_last)
        self.generator = Generator(params.z_dim, len(classes), params.g_width).to(
            device, memory_format=memory_format)
        self.discriminator = Discriminator(len(classes), params.d_width).to(
            device, memory_format=memory_format)
        # The EMA is a copy for sampling, never trained: no gradients, no optimizer.
        self.generator_ema = copy.deepcopy(self.generator).eval().requires_grad_(False)
        self.opt_g = UpdateCap(self._adam(self.generator, params.lr_g), update_limit, "generator")
        self.opt_d = UpdateCap(self._adam(self.discriminator, params.lr_d), update_limit,
                               "discriminator")
        self.means = RunningMeans(device)
        self.step = 0

    def _adam(self, module: torch.nn.Module, lr: float) -> torch.optim.Adam:
        return torch.optim.Adam(module.parameters(), lr=lr,
                                betas=(self.params.beta1, self.params.beta2))

    def param_counts(self) -> dict[str, int]:
        return {"generator": count_trainable(self.generator),
                "discriminator": count_trainable(self.discriminator)}

    def check_budget(self, limit: int) -> int:
        """Raise UserError unless G + D have fewer than `limit` trainable parameters."""
        return check_param_budget(self.param_counts(), limit, "budget.gan_params")

    def _latents(self, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        n = self.params.batch_size
        z = torch.randn(n, self.params.z_dim, generator=gen, device=self.device)
        labels = torch.randint(0, len(self.classes), (n,), generator=gen, device=self.device)
        return z, labels

    def _autocast(self):
        return autocast(self.device, self.params.bf16)

    def discriminator_update(self, real: torch.Tensor, real_labels: torch.Tensor,
                             gen: torch.Generator) -> dict:
        z, fake_labels = self._latents(gen)
        with torch.no_grad(), self._autocast():
            fake = self.generator(z, fake_labels)
        with self._autocast():
            real_scores = self.discriminator(diff_augment(real, self.policy, gen), real_labels)
            fake_scores = self.discriminator(diff_augment(fake, self.policy, gen), fake_labels)
        stats = discriminator_backward(self.params.loss, real_scores, fake_scores,
                                       list(self.discriminator.parameters()))
        self.opt_d.step()
        return {"d_loss": stats["d_real_loss"] + stats["d_fake_loss"],
                "d_real": real_scores.detach().mean(), "d_fake": fake_scores.detach().mean(),
                "w_real": stats["w_real"], "w_fake": stats["w_fake"]}

    def generator_update(self, gen: torch.Generator) -> dict:
        z, labels = self._latents(gen)
        # D's parameters need no gradients here; only the path back to G does.
        self.discriminator.requires_grad_(False)
        self.opt_g.zero_grad()
        with self._autocast():
            fake = self.generator(z, labels)
            scores = self.discriminator(diff_augment(fake, self.policy, gen), labels)
        loss = generator_hinge(scores)
        loss.backward()
        self.discriminator.requires_grad_(True)
        self.opt_g.step()
        return {"g_loss": loss.detach()}

    @torch.no_grad()
    def update_ema(self) -> None:
        decay = min(self.params.ema, (1 + self.step) / (EMA_WARMUP + self.step))
        torch._foreach_lerp_(list(self.generator_ema.parameters()),
                             list(self.generator.parameters()), 1 - decay)
        # Batch-norm statistics are not averaged: the EMA uses the live generator's.
        for ema_buffer, buffer in zip(self.generator_ema.buffers(), self.generator.buffers()):
            ema_buffer.copy_(buffer)

    def iteration(self, real_batches: RealBatches) -> None:
        """Train one step: n_dis D updates, one G update, the EMA; add to the running means."""
        n_dis = self.params.n_dis
        gen = stateless_generator(self.params.seed, STEP_STREAM, self.step, device=self.device)
        for k in range(n_dis):
            self.means.add(self.discriminator_update(*real_batches(self.step * n_dis + k), gen))
        self.means.add(self.generator_update(gen))
        self.update_ema()
        self.step += 1

    def config(self) -> dict:
        return {"z_dim": self.params.z_dim, "num_classes": len(self.classes),
                "generator_width": self.params.g_width,
                "discriminator_width": self.params.d_width}

    def state_dict(self) -> dict:
        """Everything to resume or to sample: tensors and plain Python values only."""
        return {
            "generator": self.generator.state_dict(),
            "discriminator": self.discriminator.state_dict(),
            "generator_ema": self.generator_ema.state_dict(),
            "optimizer_g": self.opt_g.optimizer.state_dict(),
            "optimizer_d": self.opt_d.optimizer.state_dict(),
            "step": self.step,
            "updates": {"generator": self.opt_g.updates, "discriminator": self.opt_d.updates},
            "config": self.config(),
            "classes": self.classes,
        }

    def load_state_dict(self, state: dict) -> None:
        self.generator.load_state_dict(state["generator"])
        self.discriminator.load_state_dict(state["discriminator"])
        self.generator_ema.load_state_dict(state["generator_ema"])
        self.opt_g.optimizer.load_state_dict(state["optimizer_g"])
        self.opt_d.optimizer.load_state_dict(state["optimizer_d"])
        self.opt_g.updates = state["updates"]["generator"]
        self.opt_d.updates = state["updates"]["discriminator"]
        self.step = state["step"]


@dataclass(frozen=True)
class GanOutputs:
    checkpoint: Path = Path("checkpoints/gan/checkpoint.pt")
    history: Path = Path("plots/gan/history.csv")
    progress: Path = Path("plots/gan/progress.png")


@dataclass
class GanRun:
    trainer: GanTrainer
    iterations: int      # run by this process (fewer than gan.steps after a resume)
    wall_seconds: float  # of those iterations

    def metrics(self, params: Params) -> dict:
        counts = self.trainer.param_counts()
        ema_size = sum(p.numel() for p in self.trainer.generator_ema.parameters())
        return {
            "params": {**counts, "total": sum(counts.values()),
                       "budget_fewer_than": params.budget.gan_params},
            "updates": {"generator": self.trainer.opt_g.updates,
                        "discriminator": self.trainer.opt_d.updates,
                        "budget_per_network": params.budget.gan_steps},
            "generator_ema": {"params": ema_size, "trained": False,
                              "note": "an average of the generator's weights, used for sampling; "
                                      "not trained and not counted in the budget"},
            "steps": self.trainer.step,
            "wall_seconds": round(self.wall_seconds, 2),
            "iterations_per_second": (round(self.iterations / self.wall_seconds, 3)
                                      if self.iterations else None),
            "device": str(self.trainer.device),
        }


def run_fingerprint(params: GanParams, data: PreparedData) -> str:
    """Hash of the settings and data that shape the weights (see NOT_FINGERPRINTED)."""
    settings = {k: v for k, v in as_dict(params).items() if k not in NOT_FINGERPRINTED}
    labels = hashlib.sha256(np.ascontiguousarray(data.train_labels).tobytes()).hexdigest()
    return fingerprint({"gan": settings, "data": {"name": data.name, "classes": data.classes,
                                                  "train_labels": labels}})


def progress_inputs(params: GanParams, num_classes: int, device: torch.device):
    """Fixed z and labels for the progress grid: up to 10 evenly spaced classes x 8 noises.

    Each column shares its z, so a row shows the class and a column the noise.
    """
    gen = stateless_generator(params.seed, PROGRESS_STREAM)
    rows = min(PROGRESS_ROWS, num_classes)
    classes = torch.linspace(0, num_classes - 1, rows).round().long()
    z = torch.randn(PROGRESS_PER_ROW, params.z_dim, generator=gen).repeat(rows, 1)
    return z.to(device), classes.repeat_interleave(PROGRESS_PER_ROW).to(device)


def train_gan(params: Params, data: PreparedData, outputs: GanOutputs = GanOutputs()) -> GanRun:
    """Check the budgets, resume from the checkpoint if it is this run's, train to gan.steps.

    Writes the checkpoint, the history CSV and the progress grid as it goes; returns the
    trainer for the caller to save the final model.
    """
    g = params.gan
    device = pick_device()
    seed_everything(g.seed)
    trainer = GanTrainer(g, data.classes, params.budget.gan_steps, device)
    trainer.check_budget(params.budget.gan_params)
    real_batches = RealBatches(data, g.batch_size, g.seed, device, g.channels_last)

    run_id = run_fingerprint(g, data)
    state = resume_state(outputs.checkpoint, run_id)
    history: list[dict] = []
    if state is not None and state["step"] > g.steps:
        tqdm.write(f"train_gan: the checkpoint is at step {state['step']}, past gan.steps "
                   f"({g.steps}); starting over")
        state = None
    if state is not None:
        trainer.load_state_dict(state)
        trainer.means.load_state_dict(state["running_means"])
        history = state["history"]
        tqdm.write(f"train_gan: resuming from {outputs.checkpoint} at step {trainer.step}")

    def save_state() -> None:
        save_checkpoint(outputs.checkpoint, {**trainer.state_dict(), "fingerprint": run_id,
                                             "history": history,
                                             "running_means": trainer.means.state_dict()})

    def log_row() -> dict:
        row = {"step": trainer.step, **trainer.means.pop(), "lr_g": g.lr_g, "lr_d": g.lr_d}
        history.append(row)
        write_csv(outputs.history, history)
        return row

    fixed_z, fixed_labels = progress_inputs(g, len(data.classes), device)

    def save_progress() -> None:
        save_progress_grid(trainer.generator_ema, fixed_z, fixed_labels, data.classes,
                           PROGRESS_PER_ROW, trainer.step, outputs.progress)

    start = trainer.step
    started = time.perf_counter()
    bar = tqdm(total=g.steps, initial=start, desc="train_gan", unit="it", dynamic_ncols=True)
    while trainer.step < g.steps:
        trainer.iteration(real_batches)
        bar.update()
        last = trainer.step == g.steps
        if trainer.step % g.log_every == 0 or last:
            row = log_row()
            bar.set_postfix({"d_loss": f"{row['d_loss']:.3f}", "g_loss": f"{row['g_loss']:.3f}",
                             "w_real": f"{row['w_real']:.3f}", "w_fake": f"{row['w_fake']:.3f}"})
        if trainer.step % g.progress_every == 0 or last:
            save_progress()
        if trainer.step % g.checkpoint_every == 0 or last:
            save_state()
    bar.close()
    wall = time.perf_counter() - started
    if start == g.steps:  # a finished run resumed: `dvc repro` deleted these outputs first
        write_csv(outputs.history, history)
        save_progress()
    return GanRun(trainer, trainer.step - start, wall)
