"""Training the class-conditional SN-GAN under the parameter and update budgets.

One iteration = `n_dis` discriminator updates, then one generator update, then the EMA of
the generator's weights. Every random draw of iteration `step` (z, fake labels, DiffAugment)
comes from a generator seeded by (seed, step); the checkpoint holds the weights,
power-iteration vectors, batch-norm statistics, Adam moments and the EMA (the loop of
loop.py adds the history and its running means), so a run resumes exactly.

The history has one row per gan.log_every steps, each value a mean over those steps:
d_loss = L_real + L_fake (the plain hinge terms, comparable between the two losses),
g_loss, d_real / d_fake (mean scores on real / generated images), w_real / w_fake (the
AW weights of the two terms; 1 and 1 for the plain hinge loss), lr_g, lr_d.
"""
from __future__ import annotations

import copy

import torch

from cifarbudget.config import BudgetParams, GanParams, parse_policy
from cifarbudget.data.prepared import PreparedData
from cifarbudget.device import autocast, memory_format, stateless_generator
from cifarbudget.models.gan import Discriminator, Generator
from cifarbudget.models.saved import skeleton
from cifarbudget.plots.gan import save_progress_grid
from cifarbudget.training.budget import UpdateCap, check_param_budget, count_trainable
from cifarbudget.training.diffaugment import diff_augment
from cifarbudget.training.ema import ema_decay, update_ema
from cifarbudget.training.generative import (PROGRESS_PER_ROW, GenerativeTrainer,
                                             progress_latents)
from cifarbudget.training.losses import discriminator_backward, generator_hinge

# Independent random streams, keyed (seed, stream, index); 0 orders the real batches.
STEP_STREAM, PROGRESS_STREAM = 1, 2
HISTORY_KEYS = ("d_loss", "g_loss", "d_real", "d_fake", "w_real", "w_fake")


def check_budget(params: GanParams, num_classes: int, limit: int) -> int:
    """Raise UserError unless G + D would have fewer than `limit` trainable parameters,
    counted before anything is allocated."""
    return check_param_budget(
        {"generator": count_trainable(skeleton(
            lambda: Generator(params.z_dim, num_classes, params.g_width))),
         "discriminator": count_trainable(skeleton(
             lambda: Discriminator(num_classes, params.d_width)))},
        limit, "budget.generative_params")


class Trainer(GenerativeTrainer):
    """G, D, the EMA of G and their Adam optimizers, each capped at the budget's updates."""

    section, history_keys, check_budget = "gan", HISTORY_KEYS, staticmethod(check_budget)
    history_panels = {"hinge losses": ("d_loss", "g_loss"),
                      "discriminator scores": ("d_real", "d_fake"),
                      "adaptive weights of the real and fake terms": ("w_real", "w_fake")}

    def build(self, params: GanParams, data: PreparedData, budget: BudgetParams) -> None:
        classes, device = data.classes, self.device
        self.policy = parse_policy(params.diffaugment)
        layout = memory_format(params.channels_last)
        self.generator = Generator(params.z_dim, len(classes), params.g_width).to(
            device, memory_format=layout)
        self.discriminator = Discriminator(len(classes), params.d_width).to(
            device, memory_format=layout)
        # The EMA is a copy for sampling, never trained: no gradients, no optimizer.
        self.generator_ema = copy.deepcopy(self.generator).eval().requires_grad_(False)
        limit = budget.generative_steps
        self.opt_g = UpdateCap(self._adam(self.generator, params.lr_g), limit, "generator")
        self.opt_d = UpdateCap(self._adam(self.discriminator, params.lr_d), limit,
                               "discriminator")
        self.progress_inputs = progress_latents(
            stateless_generator(params.seed, PROGRESS_STREAM), params.z_dim, len(classes), device)

    def _adam(self, module: torch.nn.Module, lr: float) -> torch.optim.Adam:
        return torch.optim.Adam(module.parameters(), lr=lr,
                                betas=(self.params.beta1, self.params.beta2))

    def param_counts(self) -> dict[str, int]:
        return {"generator": count_trainable(self.generator),
                "discriminator": count_trainable(self.discriminator)}

    def updates(self) -> dict[str, int]:
        return {"generator": self.opt_g.updates, "discriminator": self.opt_d.updates}

    @property
    def notes(self) -> dict:
        ema_size = sum(p.numel() for p in self.generator_ema.parameters())
        return {"generator_ema": {"params": ema_size, "trained": False,
                                  "note": "an average of the generator's weights, used for "
                                          "sampling; not trained and not counted in the budget"}}

    def _latents(self, rng: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        n = self.params.batch_size
        z = torch.randn(n, self.params.z_dim, generator=rng, device=self.device)
        labels = torch.randint(0, len(self.classes), (n,), generator=rng, device=self.device)
        return z, labels

    def _autocast(self):
        return autocast(self.device, self.params.bf16)

    def discriminator_update(self, real: torch.Tensor, real_labels: torch.Tensor,
                             rng: torch.Generator) -> dict:
        z, fake_labels = self._latents(rng)
        with torch.no_grad(), self._autocast():
            fake = self.generator(z, fake_labels)
        with self._autocast():
            real_scores = self.discriminator(diff_augment(real, self.policy, rng), real_labels)
            fake_scores = self.discriminator(diff_augment(fake, self.policy, rng), fake_labels)
        stats = discriminator_backward(self.params.loss, real_scores, fake_scores,
                                       list(self.discriminator.parameters()))
        self.opt_d.step()
        return {"d_loss": stats["d_real_loss"] + stats["d_fake_loss"],
                "d_real": real_scores.detach().mean(), "d_fake": fake_scores.detach().mean(),
                "w_real": stats["w_real"], "w_fake": stats["w_fake"]}

    def generator_update(self, rng: torch.Generator) -> dict:
        z, labels = self._latents(rng)
        # D's parameters need no gradients here; only the path back to G does.
        self.discriminator.requires_grad_(False)
        self.opt_g.zero_grad()
        with self._autocast():
            fake = self.generator(z, labels)
            scores = self.discriminator(diff_augment(fake, self.policy, rng), labels)
        loss = generator_hinge(scores)
        loss.backward()
        self.discriminator.requires_grad_(True)
        self.opt_g.step()
        return {"g_loss": loss.detach()}

    def iteration(self) -> None:
        """Train one step: n_dis D updates, one G update, the EMA; add to the running means."""
        n_dis = self.params.n_dis
        rng = stateless_generator(self.params.seed, STEP_STREAM, self.step, device=self.device)
        for k in range(n_dis):
            real, labels = self.real_batches(self.step * n_dis + k)
            self.means.add(self.discriminator_update(real, labels, rng))
        self.means.add(self.generator_update(rng))
        update_ema(self.generator_ema, self.generator, ema_decay(self.params.ema, self.step))
        self.step += 1

    def history_row(self, means: dict) -> dict:
        return {**means, "lr_g": self.params.lr_g, "lr_d": self.params.lr_d}

    def save_progress(self, path) -> None:
        save_progress_grid(self.generator_ema, *self.progress_inputs, self.classes,
                           PROGRESS_PER_ROW, self.step, path)

    def sampling_network(self) -> torch.nn.Module:
        return self.generator_ema

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
            "config": {"z_dim": self.params.z_dim, "num_classes": len(self.classes),
                       "generator_width": self.params.g_width,
                       "discriminator_width": self.params.d_width},
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
