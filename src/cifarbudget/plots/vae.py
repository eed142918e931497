"""The VAE's progress figure: test images, their reconstructions, and samples for fixed z."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from cifarbudget.data.prepared import to_uint8
from cifarbudget.plots.images import save_image_grid


@torch.no_grad()
def save_vae_progress(model: torch.nn.Module, real: torch.Tensor, real_labels: torch.Tensor,
                      z: torch.Tensor, labels: torch.Tensor, classes: list[str], per_row: int,
                      step: int, path: str | Path) -> None:
    """Row 1: `real` test images; row 2: their reconstructions (through the posterior mean);
    then the decoder's samples for fixed (z, labels), `per_row` per class.

    The model is put in eval mode for the call (batch norm with running statistics, as
    samples are drawn later) and its mode restored afterwards.
    """
    was_training = model.training
    model.eval()
    mean, _ = model.encoder(real, real_labels)
    reconstructions = model.decoder(mean, real_labels)
    samples = model.decoder(z, labels)
    model.train(was_training)
    images = np.concatenate([to_uint8(real), to_uint8(reconstructions), to_uint8(samples)])
    row_labels = ["test images", "reconstructed"] + [classes[int(y)] for y in labels[::per_row]]
    save_image_grid(images, path, nrow=per_row, row_labels=row_labels,
                    title=f"VAE, step {step:,}: reconstructions and samples for fixed z")
