"""A generative model's training history as one figure: a panel per group of logged values."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from cifarbudget.io import save_figure


def save_history_figure(history: list[dict], panels: dict[str, tuple[str, ...]],
                        path: str | Path, title: str) -> None:
    """One panel per entry of `panels` (its title -> the history columns drawn in it),
    side by side, each value against the step; the last value is written at the line's end."""
    steps = [row["step"] for row in history]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.6), squeeze=False)
    for ax, (name, columns) in zip(axes.flat, panels.items()):
        for column in columns:
            values = [row[column] for row in history]
            (line,) = ax.plot(steps, values, lw=1.5, label=column)
            if values:
                ax.annotate(f"{values[-1]:.3g}", (steps[-1], values[-1]), xytext=(4, 0),
                            textcoords="offset points", color=line.get_color(), fontsize=8,
                            va="center")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
        ax.margins(x=0.12)
        ax.legend(frameon=False, fontsize=8)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    save_figure(fig, path)
