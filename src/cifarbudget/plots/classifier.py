"""The classifier's learning curves: accuracy and loss, train vs test (or validation), over
seeds."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from cifarbudget.io import save_figure

SPLITS = (("train", "tab:blue", "train (augmented batches)"),
          ("test", "tab:orange", "test (full set)"),
          ("val", "tab:green", "validation (training images held out)"))


def plot_training_curves(histories: list[list[dict]], path: str | Path, title: str) -> None:
    """Two panels (accuracy, loss); per split the mean over seeds as a line and
    a band of one standard deviation either side."""
    steps = np.array([row["step"] for row in histories[0]])
    fig, (acc_ax, loss_ax) = plt.subplots(1, 2, figsize=(11, 4.2))
    panels = ((acc_ax, "acc", 100, "accuracy (%)", (0, 100)),
              (loss_ax, "loss", 1, "cross-entropy loss", (0, None)))
    for ax, metric, scale, label, limits in panels:
        for split, colour, name in SPLITS:
            if f"{split}_{metric}" not in histories[0][0]:
                continue
            values = np.array([[row[f"{split}_{metric}"] for row in h] for h in histories]) * scale
            mean = values.mean(0)
            std = values.std(0, ddof=1) if len(values) > 1 else np.zeros_like(mean)
            ax.plot(steps, mean, color=colour, lw=2, marker="o", ms=3, label=name)
            ax.fill_between(steps, np.clip(mean - std, *limits), np.clip(mean + std, *limits),
                            color=colour, alpha=0.2, lw=0)
            ax.annotate(f"{mean[-1]:.1f}" if metric == "acc" else f"{mean[-1]:.2f}",
                        (steps[-1], mean[-1]), xytext=(5, 0), textcoords="offset points",
                        color=colour, fontsize=9, va="center")
        ax.set_title(label.split(" (")[0].capitalize(), fontsize=10)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.margins(x=0.1)
    acc_ax.legend(loc="lower right", frameon=False)
    band = f"mean of {len(histories)} seeds, band = ±1 std" if len(histories) > 1 else "one seed"
    fig.suptitle(f"{title}  ({band})", fontsize=11)
    fig.tight_layout()
    save_figure(fig, path)
