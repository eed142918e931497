"""The GAN's progress figure: the EMA generator's samples for a fixed noise, one class per row."""
from __future__ import annotations

from pathlib import Path

import torch

from cifarbudget.data.prepared import to_uint8
from cifarbudget.plots.images import save_image_grid


@torch.no_grad()
def save_progress_grid(generator: torch.nn.Module, z: torch.Tensor, labels: torch.Tensor,
                       classes: list[str], per_row: int, step: int, path: str | Path) -> None:
    """Generate from fixed (z, labels), laid out `per_row` images per class, and save the grid.

    The generator is put in eval mode for the call (batch norm with running statistics,
    as samples are drawn later) and its mode restored afterwards.
    """
    was_training = generator.training
    generator.eval()
    images = generator(z, labels)
    generator.train(was_training)
    row_labels = [classes[int(y)] for y in labels[::per_row]]
    save_image_grid(to_uint8(images), path, nrow=per_row, row_labels=row_labels,
                    title=f"EMA generator, fixed noise, step {step:,}")
