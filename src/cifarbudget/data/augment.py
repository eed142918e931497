"""Training augmentation as batched tensor operations (random crop, flip, cutout).

One call augments a whole batch on the training device: no per-image Python, no
PIL. Randomness comes from an explicit generator, so a run seeded per step draws
the same augmentation whether or not it was interrupted.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from cifarbudget.config import AugmentParams


def random_crop(x: torch.Tensor, padding: int, rng: torch.Generator) -> torch.Tensor:
    """Pad by `padding` (reflect) and take a random HxW crop per image."""
    if padding == 0:
        return x
    n = x.shape[0]
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=rng, device=rng.device).to(x.device)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=rng, device=rng.device).to(x.device)
    # CUDA has no deterministic backward of reflect padding (DiffAugment differentiates the
    # crop); gather's is deterministic there in deterministic mode. The CPU keeps padding,
    # whose gradients sum in another order: CPU results stay those of earlier runs.
    if x.device.type == "cpu":
        return _crop_reflect_padded(x, padding, dy, dx)
    return _crop_gathered(x, padding, dy, dx)


def _crop_reflect_padded(x: torch.Tensor, padding: int, dy: torch.Tensor,
                         dx: torch.Tensor) -> torch.Tensor:
    """Image i's HxW window at (dy[i], dx[i]) of x reflect-padded by `padding`."""
    n, c, h, w = x.shape
    padded = F.pad(x, (padding,) * 4, mode="reflect")
    # Gather rows then columns with per-image offsets: two index_selects' worth of work.
    rows = (dy[:, None] + torch.arange(h, device=x.device)[None, :])  # (n, h)
    cols = (dx[:, None] + torch.arange(w, device=x.device)[None, :])  # (n, w)
    padded = padded.gather(2, rows[:, None, :, None].expand(n, c, h, padded.shape[3]))
    return padded.gather(3, cols[:, None, None, :].expand(n, c, h, w))


def _crop_gathered(x: torch.Tensor, padding: int, dy: torch.Tensor,
                   dx: torch.Tensor) -> torch.Tensor:
    """_crop_reflect_padded, the same pixels, gathered from x itself by reflected indices."""
    n, c, h, w = x.shape
    rows = _reflected(dy, h, padding)  # (n, h)
    cols = _reflected(dx, w, padding)  # (n, w)
    x = x.gather(2, rows[:, None, :, None].expand(n, c, h, w))
    return x.gather(3, cols[:, None, None, :].expand(n, c, h, w))


def _reflected(offsets: torch.Tensor, size: int, padding: int) -> torch.Tensor:
    """(n, size) indices into a side of `size` pixels of the windows starting at `offsets` on
    that side reflect-padded by `padding` (< size): -1 is 1, size is size - 2, as F.pad's."""
    index = (offsets[:, None] - padding + torch.arange(size, device=offsets.device)[None, :]).abs()
    return torch.where(index < size, index, 2 * (size - 1) - index)


def random_flip(x: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
    flip = torch.rand(x.shape[0], generator=rng, device=rng.device).to(x.device) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def cutout(x: torch.Tensor, size: int, rng: torch.Generator) -> torch.Tensor:
    """Zero a size x size square at a random centre per image (may overlap the border)."""
    if size == 0:
        return x
    n, _, h, w = x.shape
    cy = torch.randint(0, h, (n,), generator=rng, device=rng.device).to(x.device)
    cx = torch.randint(0, w, (n,), generator=rng, device=rng.device).to(x.device)
    ys = torch.arange(h, device=x.device)[None, :]
    xs = torch.arange(w, device=x.device)[None, :]
    # Rows top .. top + size - 1: exactly `size` of them, for odd and even sizes alike.
    top = (cy - size // 2)[:, None]
    left = (cx - size // 2)[:, None]
    inside_y = (ys >= top) & (ys < top + size)  # (n, h)
    inside_x = (xs >= left) & (xs < left + size)  # (n, w)
    mask = inside_y[:, :, None] & inside_x[:, None, :]
    return x * (~mask)[:, None, :, :].to(x.dtype)


def augment_batch(x: torch.Tensor, policy: AugmentParams, rng: torch.Generator,
                  flips: torch.Tensor | None = None) -> torch.Tensor:
    """Apply the policy from params.yaml to a batch (N, C, H, W) of any dtype; `flips`, a
    bool per image, says which to mirror instead of a random draw (alternating flip)."""
    x = random_crop(x, policy.crop_padding, rng)
    if flips is not None:
        x = torch.where(flips[:, None, None, None], x.flip(3), x)
    elif policy.flip:
        x = random_flip(x, rng)
    return cutout(x, policy.cutout, rng)
