"""Per-class accuracy of the classifier on generated vs real images: which classes the
generative model draws well enough to be recognised, and which it does not."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from cifarbudget.io import save_figure, write_csv


def save_per_class_accuracy(per_class: dict[str, np.ndarray], classes: list[str],
                            csv_path: str | Path, png_path: str | Path, title: str) -> None:
    """A CSV (class, generated, real) for `dvc plots`, and a bar chart sorted worst first:
    one bar per class for the generated images, a tick for the real images' accuracy."""
    generated, real = per_class["generated"], per_class["real"]
    write_csv(csv_path, [{"class": name, "generated": round(float(g), 4), "real": round(float(r), 4)}
                         for name, g, r in zip(classes, generated, real)])

    order = np.argsort(np.nan_to_num(generated, nan=-1.0))  # worst first; no samples counts as worst
    rows = np.arange(len(classes))
    fig, ax = plt.subplots(figsize=(7, 1.2 + 0.2 * len(classes)))
    ax.barh(rows, generated[order] * 100, color="tab:orange", label="generated images")
    ax.scatter(real[order] * 100, rows, marker="|", s=120, color="black", zorder=3,
               label="real test images")
    ax.set_yticks(rows, [classes[i] for i in order], fontsize=8)
    ax.set_xlim(0, 100)
    ax.set_xlabel("classifier accuracy (%)")
    ax.grid(axis="x", alpha=0.3)
    ax.set_ylim(len(classes) - 0.5, -0.5)  # the worst class on top, no empty margin
    # Above the axes, under the title: no bar hides under the legend.
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, fontsize=8, frameon=False)
    ax.set_title(title, fontsize=10, pad=22)
    save_figure(fig, png_path)
