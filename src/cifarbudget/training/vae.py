"""Training the class-conditional VAE under the generative models' budgets.

The loss per image, averaged over the batch, is the negative ELBO with a weighted KL term:

    recon + beta * KL(q(z | x, y) || N(0, I))

recon is the sum of squared errors over the 3 x 32 x 32 pixels in [-1, 1], the negative
log-likelihood of a Gaussian decoder with variance 1/2 up to a constant; so beta = 1 is the
plain ELBO under that decoder, and beta < 1 is the ELBO of a decoder with variance beta / 2:
sharper reconstructions, a prior that covers the data less well. The KL term is in closed
form. One Adam optimizer updates the encoder and the decoder together, so each network
receives one update per step; the cap counts them.

The history has one row per vae.log_every steps, each value a mean over those steps:
loss, recon, kl, lr.
"""
from __future__ import annotations

import torch

from cifarbudget.config import BudgetParams, VaeParams
from cifarbudget.data.prepared import PreparedData
from cifarbudget.device import autocast, memory_format, stateless_generator
from cifarbudget.models.saved import skeleton
from cifarbudget.models.vae import ConditionalVAE
from cifarbudget.plots.vae import save_vae_progress
from cifarbudget.training.budget import UpdateCap, check_param_budget, count_trainable
from cifarbudget.training.generative import (PROGRESS_PER_ROW, GenerativeTrainer,
                                             progress_latents)

STEP_STREAM, PROGRESS_STREAM = 1, 2  # 0 orders the real batches
HISTORY_KEYS = ("loss", "recon", "kl")


def vae_loss(x: torch.Tensor, reconstruction: torch.Tensor, mean: torch.Tensor,
             log_var: torch.Tensor, beta: float) -> dict[str, torch.Tensor]:
    """The batch means of recon, KL and recon + beta * KL (see the module docstring), fp32."""
    recon = (reconstruction.float() - x.float()).square().flatten(1).sum(1).mean()
    kl = 0.5 * (mean.square() + log_var.exp() - 1 - log_var).sum(1).mean()
    return {"loss": recon + beta * kl, "recon": recon, "kl": kl}


def check_budget(params: VaeParams, num_classes: int, limit: int) -> int:
    """Raise UserError unless encoder + decoder would have fewer than `limit` trainable
    parameters, counted before anything is allocated."""
    model = skeleton(lambda: ConditionalVAE(params.z_dim, num_classes, params.encoder_width,
                                            params.decoder_width))
    return check_param_budget({"encoder": count_trainable(model.encoder),
                               "decoder": count_trainable(model.decoder)},
                              limit, "budget.generative_params")


class Trainer(GenerativeTrainer):
    """The VAE and its Adam optimizer, capped at the budget's updates."""

    section, history_keys, check_budget = "vae", HISTORY_KEYS, staticmethod(check_budget)
    history_panels = {"loss and its reconstruction term": ("loss", "recon"),
                      "KL divergence from the prior": ("kl",)}

    def build(self, params: VaeParams, data: PreparedData, budget: BudgetParams) -> None:
        self.model = ConditionalVAE(params.z_dim, data.num_classes, params.encoder_width,
                                    params.decoder_width).to(
            self.device, memory_format=memory_format(params.channels_last))
        adam = torch.optim.Adam(self.model.parameters(), lr=params.lr,
                                betas=(params.beta1, params.beta2))
        self.optimizer = UpdateCap(adam, budget.generative_steps, "encoder and decoder")
        self.progress_inputs = progress_inputs(params, data, self.device)

    def param_counts(self) -> dict[str, int]:
        return {"encoder": count_trainable(self.model.encoder),
                "decoder": count_trainable(self.model.decoder)}

    def updates(self) -> dict[str, int]:
        """One optimizer updates both networks, so each receives its updates."""
        return {"encoder": self.optimizer.updates, "decoder": self.optimizer.updates}

    def iteration(self) -> None:
        """One update of encoder and decoder on batch `step`; add to the running means."""
        rng = stateless_generator(self.params.seed, STEP_STREAM, self.step, device=self.device)
        x, y = self.real_batches(self.step)
        noise = torch.randn(len(x), self.params.z_dim, generator=rng, device=self.device)
        self.optimizer.zero_grad()
        with autocast(self.device, self.params.bf16):
            reconstruction, mean, log_var = self.model(x, y, noise)
        terms = vae_loss(x, reconstruction, mean, log_var, self.params.beta)
        terms["loss"].backward()
        self.optimizer.step()
        self.means.add({key: value.detach() for key, value in terms.items()})
        self.step += 1

    def history_row(self, means: dict) -> dict:
        return {**means, "lr": self.params.lr}

    def save_progress(self, path) -> None:
        save_vae_progress(self.model, *self.progress_inputs, self.classes, PROGRESS_PER_ROW,
                          self.step, path)

    def sampling_network(self) -> torch.nn.Module:
        return self.model.decoder

    def state_dict(self) -> dict:
        """Everything to resume or to sample: tensors and plain Python values only."""
        return {"model": self.model.state_dict(),
                "optimizer": self.optimizer.optimizer.state_dict(),
                "step": self.step, "updates": self.optimizer.updates,
                "config": {"z_dim": self.params.z_dim, "num_classes": len(self.classes),
                           "encoder_width": self.params.encoder_width,
                           "decoder_width": self.params.decoder_width},
                "classes": self.classes}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.optimizer.load_state_dict(state["optimizer"])
        self.optimizer.updates = state["updates"]
        self.step = state["step"]


def progress_inputs(params: VaeParams, data: PreparedData, device: torch.device):
    """Fixed inputs of the progress figure: 8 test images to reconstruct, and the fixed z and
    labels of generative.progress_latents."""
    rng = stateless_generator(params.seed, PROGRESS_STREAM)
    picks = torch.randperm(len(data.test_labels), generator=rng)[:PROGRESS_PER_ROW].numpy()
    real = torch.from_numpy(data.test_images[picks]).permute(0, 3, 1, 2).float() / 127.5 - 1
    real_labels = torch.from_numpy(data.test_labels[picks])
    return (real.to(device), real_labels.to(device),
            *progress_latents(rng, params.z_dim, len(data.classes), device))
