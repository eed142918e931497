"""Training the class-conditional SN-GAN under the parameter and update budgets.

One iteration = `n_dis` discriminator updates, then one generator update, then the EMA of
the generator's weights. Every random draw of iteration `step` (z, fake labels, DiffAugment)
comes from a generator seeded by (seed, step); the checkpoint holds the weights,
power-iteration vectors, batch-norm statistics, Adam moments and the EMA (the loop in
generative.py adds the history and its running means), so a run resumes exactly.

The history has one row per gan.log_every steps, each value a mean over those steps:
d_loss = L_real + L_fake (the plain hinge terms, comparable between the two losses),
g_loss, d_real / d_fake (mean scores on real / generated images), w_real / w_fake (the
AW weights of the two terms; 1 and 1 for the plain hinge loss), lr_g, lr_d.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from cifarbudget.config import GanParams, Params
from cifarbudget.data.prepared import PreparedData
from cifarbudget.device import autocast, pick_device, seed_everything, stateless_generator
from cifarbudget.models.gan import Discriminator, Generator
from cifarbudget.plots.gan import save_progress_grid
from cifarbudget.training.budget import (UpdateCap, check_param_budget, count_trainable,
                                         skeleton)
from cifarbudget.training.diffaugment import diff_augment, parse_policy
from cifarbudget.training.generative import (Every, RealBatches, RunningMeans, TrainingFiles,
                                             memory_format, run_fingerprint, run_speed,
                                             train_loop)
from cifarbudget.training.losses import discriminator_backward, generator_hinge

# Independent random streams, keyed (seed, stream, index).
STEP_STREAM, PROGRESS_STREAM = 1, 2  # stream 0 orders the real batches (generative.py)
PROGRESS_ROWS, PROGRESS_PER_ROW = 10, 8
# The EMA decay ramps up as (1 + step) / (10 + step) until it reaches gan.ema, so early
# progress grids show the training generator's average rather than its random start.
EMA_WARMUP = 10
HISTORY_KEYS = ("d_loss", "g_loss", "d_real", "d_fake", "w_real", "w_fake")


def check_budget(params: GanParams, num_classes: int, limit: int) -> int:
    """Raise UserError unless G + D would have fewer than `limit` trainable parameters,
    counted before anything is allocated."""
    return check_param_budget(
        {"generator": count_trainable(skeleton(
            lambda: Generator(params.z_dim, num_classes, params.g_width))),
         "discriminator": count_trainable(skeleton(
             lambda: Discriminator(num_classes, params.d_width)))},
        limit, "budget.gan_params")


class GanTrainer:
    """G, D, the EMA of G and their Adam optimizers, each capped at `update_limit` updates."""

    history_panels = {"hinge losses": ("d_loss", "g_loss"),
                      "discriminator scores": ("d_real", "d_fake"),
                      "adaptive weights of the real and fake terms": ("w_real", "w_fake")}

    def __init__(self, params: GanParams, classes: list[str], update_limit: int,
                 device: torch.device):
        self.params, self.classes, self.device = params, list(classes), device
        self.policy = parse_policy(params.diffaugment)
        layout = memory_format(params.channels_last)
        self.generator = Generator(params.z_dim, len(classes), params.g_width).to(
            device, memory_format=layout)
        self.discriminator = Discriminator(len(classes), params.d_width).to(
            device, memory_format=layout)
        # The EMA is a copy for sampling, never trained: no gradients, no optimizer.
        self.generator_ema = copy.deepcopy(self.generator).eval().requires_grad_(False)
        self.opt_g = UpdateCap(self._adam(self.generator, params.lr_g), update_limit, "generator")
        self.opt_d = UpdateCap(self._adam(self.discriminator, params.lr_d), update_limit,
                               "discriminator")
        self.means = RunningMeans(HISTORY_KEYS, device)
        self.step = 0

    def _adam(self, module: torch.nn.Module, lr: float) -> torch.optim.Adam:
        return torch.optim.Adam(module.parameters(), lr=lr,
                                betas=(self.params.beta1, self.params.beta2))

    def param_counts(self) -> dict[str, int]:
        return {"generator": count_trainable(self.generator),
                "discriminator": count_trainable(self.discriminator)}

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

    def sampling_network(self) -> torch.nn.Module:
        return self.generator_ema

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


@dataclass
class GanRun:
    trainer: GanTrainer
    iterations: int      # run by this process (fewer than gan.steps after a resume)
    wall_seconds: float  # of those iterations

    def metrics(self) -> dict:
        counts = self.trainer.param_counts()
        return {"params": {**counts, "total": sum(counts.values())},
                "updates": {"generator": self.trainer.opt_g.updates,
                            "discriminator": self.trainer.opt_d.updates},
                "steps": self.trainer.step}

    def diagnostics(self) -> dict:
        ema_size = sum(p.numel() for p in self.trainer.generator_ema.parameters())
        return {
            "generator_ema": {"params": ema_size, "trained": False,
                              "note": "an average of the generator's weights, used for sampling; "
                                      "not trained and not counted in the budget"},
            **run_speed(self.iterations, self.wall_seconds, self.trainer.device,
                        self.trainer.params.bf16),
        }


def progress_inputs(params: GanParams, num_classes: int, device: torch.device):
    """Fixed z and labels for the progress grid: up to 10 evenly spaced classes x 8 noises.

    Each column shares its z, so a row shows the class and a column the noise.
    """
    gen = stateless_generator(params.seed, PROGRESS_STREAM)
    rows = min(PROGRESS_ROWS, num_classes)
    classes = torch.linspace(0, num_classes - 1, rows).round().long()
    z = torch.randn(PROGRESS_PER_ROW, params.z_dim, generator=gen).repeat(rows, 1)
    return z.to(device), classes.repeat_interleave(PROGRESS_PER_ROW).to(device)


def train_gan(params: Params, data: PreparedData,
              files: TrainingFiles = TrainingFiles.of("gan")) -> GanRun:
    """Check the budgets, resume from the checkpoint if it is this run's, train to gan.steps.

    Writes the checkpoint, the history CSV and the progress grid as it goes; returns the
    trainer for the caller to save the final model.
    """
    g = params.gan
    device = pick_device()
    seed_everything(g.seed)
    check_budget(g, len(data.classes), params.budget.gan_params)
    trainer = GanTrainer(g, data.classes, params.budget.gan_steps, device)
    real_batches = RealBatches(data, g.batch_size, g.seed, device, g.channels_last, "gan")
    fixed_z, fixed_labels = progress_inputs(g, len(data.classes), device)

    def save_progress() -> None:
        save_progress_grid(trainer.generator_ema, fixed_z, fixed_labels, data.classes,
                           PROGRESS_PER_ROW, trainer.step, files.progress)

    iterations, wall = train_loop(
        trainer, real_batches, g.steps, Every(g.log_every, g.progress_every, g.checkpoint_every,
                                             g.snapshot_every),
        files, run_fingerprint("gan", g, data, device), "train_gan",
        {"lr_g": g.lr_g, "lr_d": g.lr_d}, save_progress)
    return GanRun(trainer, iterations, wall)
