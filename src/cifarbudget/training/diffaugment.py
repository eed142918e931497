"""Differentiable augmentation (DiffAugment, Zhao et al. 2020) for everything D sees.

Random transformations from one distribution are applied to real and generated images, in the
discriminator's and in the generator's updates; gradients flow through them to G. So D
cannot tell real from fake by the augmentation, and G is not pushed to produce it.

Operations (gan.diffaugment, parsed by config.parse_policy), applied in this order, on
images in [-1, 1]:
  color        brightness + U(-0.5, 0.5); saturation x U(0, 2); contrast x U(0.5, 1.5)
  translation  shift by up to 1/8 of the side in each direction; borders are reflected
               (as in ADA), with data/augment.py's random crop
  cutout       zero a square of half the side at a random centre (data/augment.py's cutout)
"""
from __future__ import annotations

import torch

from cifarbudget.data.augment import cutout, random_crop


def _uniform(x: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
    """One U(0, 1) draw per image, shaped to broadcast over (N, C, H, W)."""
    return torch.rand(x.shape[0], 1, 1, 1, generator=rng, device=rng.device).to(x)


def color(x: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
    x = x + (_uniform(x, rng) - 0.5)
    gray = x.mean(dim=1, keepdim=True)
    x = (x - gray) * (_uniform(x, rng) * 2) + gray
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (_uniform(x, rng) + 0.5) + mean


def diff_augment(x: torch.Tensor, policy: tuple[str, ...], rng: torch.Generator) -> torch.Tensor:
    """Augment a batch (N, C, H, W) with the operations in `policy`, differentiably."""
    if "color" in policy:
        x = color(x, rng)
    if "translation" in policy:
        x = random_crop(x, x.shape[-1] // 8, rng)
    if "cutout" in policy:
        x = cutout(x, x.shape[-1] // 2, rng)
    return x
