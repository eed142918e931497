"""A class-conditional VAE for 32x32 images, the GAN's counterpart on the same budget.

Encoder q(z | x, y): residual blocks like the GAN's discriminator, without spectral norm;
the class enters as a learned per-class bias on the first feature map. Global average
pooling, then a linear layer gives the mean and log-variance of a Gaussian over z.

Decoder p(x | z, y): the GAN's generator (conditional batch norm, tanh output), so both
families draw from z ~ N(0, I) and a class the same way, and the decoder's class input
may be labels or class weights (interpolations blend the per-class gains and biases).
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from cifarbudget.io import load_checkpoint, reading
from cifarbudget.models.gan import Generator, saved_generator

SAMPLER_NAME = "the VAE's decoder"  # the network that stages/sample.py draws from


class EncoderBlock(nn.Module):
    """ReLU, conv, ReLU, conv, [2x2 average pool]; shortcut: [pool], 1x1 conv when needed."""

    def __init__(self, in_channels: int, out_channels: int, downsample: bool):
        super().__init__()
        self.downsample = downsample
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        needs_projection = downsample or in_channels != out_channels
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1) if needs_projection else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv2(F.relu(self.conv1(F.relu(x))))
        skip = x
        if self.downsample:
            h, skip = F.avg_pool2d(h, 2), F.avg_pool2d(skip, 2)
        if self.shortcut is not None:
            skip = self.shortcut(skip)
        return h + skip


class Encoder(nn.Module):
    def __init__(self, z_dim: int, num_classes: int, width: int):
        super().__init__()
        self.z_dim, self.num_classes, self.width = z_dim, num_classes, width
        self.stem = nn.Conv2d(3, width, 3, padding=1)
        self.class_bias = nn.Embedding(num_classes, width)
        self.blocks = nn.Sequential(
            EncoderBlock(width, width, downsample=True),   # 32 -> 16
            EncoderBlock(width, width, downsample=True),   # 16 -> 8
            EncoderBlock(width, width, downsample=True),   # 8 -> 4
        )
        self.to_posterior = nn.Linear(width, 2 * z_dim)
        nn.init.zeros_(self.class_bias.weight)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (B, 3, 32, 32) in [-1, 1], int64 labels (B,) -> mean, log-variance (B, z_dim)."""
        h = self.stem(x) + self.class_bias(y)[:, :, None, None].to(x.dtype)
        h = F.relu(self.blocks(h)).mean(dim=(2, 3))
        # The posterior's parameters in fp32: the KL term and the sampling need the precision.
        with torch.autocast(device_type=h.device.type, enabled=False):
            mean, log_var = self.to_posterior(h.float()).chunk(2, dim=1)
        return mean, log_var


class ConditionalVAE(nn.Module):
    def __init__(self, z_dim: int, num_classes: int, encoder_width: int, decoder_width: int):
        super().__init__()
        self.z_dim, self.num_classes = z_dim, num_classes
        self.encoder = Encoder(z_dim, num_classes, encoder_width)
        self.decoder = Generator(z_dim, num_classes, decoder_width)

    def forward(self, x: torch.Tensor, y: torch.Tensor, noise: torch.Tensor):
        """Reconstruct x through z = mean + sigma * noise (the reparameterization trick).

        `noise` ~ N(0, I) of shape (B, z_dim) comes from the caller, so each step's draw
        is seeded. Returns the reconstruction, the posterior mean and log-variance.
        """
        mean, log_var = self.encoder(x, y)
        z = mean + torch.exp(0.5 * log_var) * noise
        return self.decoder(z, y), mean, log_var


def load_sampler(path: str | Path, device: torch.device | str = "cpu"):
    """Read models/vae/vae.pt -> (the decoder in eval mode, info: see gan.saved_generator)."""
    state = load_checkpoint(path)
    with reading(path, "a VAE model file"):
        weights = {k.removeprefix("decoder."): v for k, v in state["model"].items()
                   if k.startswith("decoder.")}
        return saved_generator(path, state, weights, "decoder_width", device)
