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

from dataclasses import dataclass

import torch

from cifarbudget.config import Params, VaeParams
from cifarbudget.data.prepared import PreparedData
from cifarbudget.device import autocast, pick_device, seed_everything, stateless_generator
from cifarbudget.models.vae import ConditionalVAE
from cifarbudget.plots.vae import save_vae_progress
from cifarbudget.training.budget import (UpdateCap, check_param_budget, count_trainable,
                                         skeleton)
from cifarbudget.training.generative import (Every, RealBatches, RunningMeans, TrainingFiles,
                                             memory_format, run_fingerprint, run_speed,
                                             train_loop)

STEP_STREAM, PROGRESS_STREAM = 1, 2  # stream 0 orders the real batches (generative.py)
PROGRESS_ROWS, PROGRESS_PER_ROW = 10, 8
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
                              limit, "budget.gan_params")


class VaeTrainer:
    """The VAE and its Adam optimizer, capped at `update_limit` updates."""

    history_panels = {"loss and its reconstruction term": ("loss", "recon"),
                      "KL divergence from the prior": ("kl",)}

    def __init__(self, params: VaeParams, classes: list[str], update_limit: int,
                 device: torch.device):
        self.params, self.classes, self.device = params, list(classes), device
        self.model = ConditionalVAE(params.z_dim, len(classes), params.encoder_width,
                                    params.decoder_width).to(
            device, memory_format=memory_format(params.channels_last))
        adam = torch.optim.Adam(self.model.parameters(), lr=params.lr,
                                betas=(params.beta1, params.beta2))
        self.optimizer = UpdateCap(adam, update_limit, "encoder and decoder")
        self.means = RunningMeans(HISTORY_KEYS, device)
        self.step = 0

    def param_counts(self) -> dict[str, int]:
        return {"encoder": count_trainable(self.model.encoder),
                "decoder": count_trainable(self.model.decoder)}

    def iteration(self, real_batches: RealBatches) -> None:
        """One update of encoder and decoder on batch `step`; add to the running means."""
        gen = stateless_generator(self.params.seed, STEP_STREAM, self.step, device=self.device)
        x, y = real_batches(self.step)
        noise = torch.randn(len(x), self.params.z_dim, generator=gen, device=self.device)
        self.optimizer.zero_grad()
        with autocast(self.device, self.params.bf16):
            reconstruction, mean, log_var = self.model(x, y, noise)
        terms = vae_loss(x, reconstruction, mean, log_var, self.params.beta)
        terms["loss"].backward()
        self.optimizer.step()
        self.means.add({key: value.detach() for key, value in terms.items()})
        self.step += 1

    def sampling_network(self) -> torch.nn.Module:
        return self.model.decoder

    def config(self) -> dict:
        return {"z_dim": self.params.z_dim, "num_classes": len(self.classes),
                "encoder_width": self.params.encoder_width,
                "decoder_width": self.params.decoder_width}

    def state_dict(self) -> dict:
        """Everything to resume or to sample: tensors and plain Python values only."""
        return {"model": self.model.state_dict(),
                "optimizer": self.optimizer.optimizer.state_dict(),
                "step": self.step, "updates": self.optimizer.updates,
                "config": self.config(), "classes": self.classes}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.optimizer.load_state_dict(state["optimizer"])
        self.optimizer.updates = state["updates"]
        self.step = state["step"]


@dataclass
class VaeRun:
    trainer: VaeTrainer
    iterations: int      # run by this process (fewer than vae.steps after a resume)
    wall_seconds: float  # of those iterations

    def metrics(self) -> dict:
        counts = self.trainer.param_counts()
        updates = self.trainer.optimizer.updates
        return {"params": {**counts, "total": sum(counts.values())},
                "updates": {"encoder": updates, "decoder": updates},
                "steps": self.trainer.step}

    def diagnostics(self) -> dict:
        return run_speed(self.iterations, self.wall_seconds, self.trainer.device,
                         self.trainer.params.bf16)


def progress_inputs(params: VaeParams, data: PreparedData, device: torch.device):
    """Fixed inputs of the progress figure: 8 test images to reconstruct, and fixed z and
    labels for up to 10 evenly spaced classes x 8 samples (a column shares its z)."""
    gen = stateless_generator(params.seed, PROGRESS_STREAM)
    picks = torch.randperm(len(data.test_labels), generator=gen)[:PROGRESS_PER_ROW].numpy()
    real = torch.from_numpy(data.test_images[picks]).permute(0, 3, 1, 2).float() / 127.5 - 1
    real_labels = torch.from_numpy(data.test_labels[picks])
    rows = min(PROGRESS_ROWS, len(data.classes))
    classes = torch.linspace(0, len(data.classes) - 1, rows).round().long()
    z = torch.randn(PROGRESS_PER_ROW, params.z_dim, generator=gen).repeat(rows, 1)
    return (real.to(device), real_labels.to(device), z.to(device),
            classes.repeat_interleave(PROGRESS_PER_ROW).to(device))


def train_vae(params: Params, data: PreparedData,
              files: TrainingFiles = TrainingFiles.of("vae")) -> VaeRun:
    """Check the budgets, resume from the checkpoint if it is this run's, train to vae.steps.

    Writes the checkpoint, the history CSV and the progress figure as it goes; returns the
    trainer for the caller to save the final model.
    """
    v = params.vae
    device = pick_device()
    seed_everything(v.seed)
    check_budget(v, len(data.classes), params.budget.gan_params)
    trainer = VaeTrainer(v, data.classes, params.budget.gan_steps, device)
    real_batches = RealBatches(data, v.batch_size, v.seed, device, v.channels_last, "vae")
    real, real_labels, fixed_z, fixed_labels = progress_inputs(v, data, device)

    def save_progress() -> None:
        save_vae_progress(trainer.model, real, real_labels, fixed_z, fixed_labels,
                          data.classes, PROGRESS_PER_ROW, trainer.step, files.progress)

    iterations, wall = train_loop(
        trainer, real_batches, v.steps, Every(v.log_every, v.progress_every, v.checkpoint_every,
                                             v.snapshot_every),
        files, run_fingerprint("vae", v, data, device), "train_vae", {"lr": v.lr},
        save_progress)
    return VaeRun(trainer, iterations, wall)
