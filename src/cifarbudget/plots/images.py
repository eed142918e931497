"""Image grids: the one way the project turns generated or real images into a figure."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from cifarbudget.io import save_figure


def save_image_grid(images: np.ndarray, path: str | Path, nrow: int, title: str | None = None,
                    row_labels: list[str] | None = None, cell_labels: list[str] | None = None,
                    scale: float = 0.9) -> None:
    """Save uint8 (N, H, W, C) images as a PNG grid, optionally labelled per row or per cell."""
    n = len(images)
    rows = -(-n // nrow)
    fig, axes = plt.subplots(rows, nrow, figsize=(nrow * scale + (1.4 if row_labels else 0),
                                                  rows * scale), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
        if i < n:
            ax.imshow(images[i], interpolation="nearest")
            if cell_labels:
                ax.set_title(cell_labels[i], fontsize=6, pad=2)
        if row_labels and i % nrow == 0:
            ax.set_ylabel(row_labels[i // nrow], rotation=0, ha="right", va="center", fontsize=8)
    fig.tight_layout(pad=0.3)
    if title:
        # Above the laid-out axes (savefig's tight bbox grows to fit), so it never covers labels.
        fig.suptitle(title, fontsize=10, y=1.0, va="bottom")
    save_figure(fig, path)
