"""The `sample` stage's figures: sample grid, interpolations, real vs generated, neighbours."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from cifarbudget.io import atomic_path
from cifarbudget.plots.images import save_image_grid


def _blank_like(images: np.ndarray) -> np.ndarray:
    """One white image of the same shape: a gap between two groups of a grid row."""
    return np.full((1, *images.shape[1:]), 255, np.uint8)


def _rows(left: np.ndarray, right: np.ndarray, rows: int) -> np.ndarray:
    """Rows of `left` images, a white gap, then `right` images: one array in grid order."""
    left = left.reshape(rows, -1, *left.shape[1:])
    right = right.reshape(rows, -1, *right.shape[1:])
    gap = np.broadcast_to(_blank_like(left[0]), (rows, 1, *left.shape[2:]))
    return np.concatenate([left, gap, right], axis=1).reshape(-1, *left.shape[2:])


def save_sample_grid(images: np.ndarray, labels: np.ndarray, classes: list[str], nrow: int,
                     figure: str | Path, names: str | Path, seed: int, source: str) -> None:
    """The grid with each image's class above it, and the class names, one line per row;
    `source` names the network that drew them."""
    cell_names = [classes[int(y)] for y in labels]
    with atomic_path(names) as tmp:
        tmp.write_text("".join(" ".join(cell_names[i:i + nrow]) + "\n"
                               for i in range(0, len(cell_names), nrow)))
    save_image_grid(images, figure, nrow=nrow, cell_labels=cell_names, scale=1.1,
                    title=f"The first {len(images)} samples of sample.seed={seed} "
                          f"({source}, random classes)")


def save_interpolations(images: np.ndarray, class_ends: np.ndarray, classes: list[str],
                        path: str | Path) -> None:
    """One row per pair of endpoints, labelled "class A → class B"."""
    steps = len(images) // len(class_ends)
    row_labels = [f"{classes[int(a)]} → {classes[int(b)]}" for a, b in class_ends]
    save_image_grid(images, path, nrow=steps, row_labels=row_labels,
                    title=f"Interpolations in {steps} steps: z by slerp, "
                          f"class weights linearly from one class to the other")


def save_real_vs_generated(real: list[np.ndarray], generated: np.ndarray, row_classes: list[int],
                           classes: list[str], path: str | Path) -> None:
    """Per class (row): real test images on the left, generated ones on the right.

    `real` holds one array per row; a class with fewer real images than generated ones
    is padded with white cells.
    """
    rows = len(row_classes)
    per_side = len(generated) // rows
    padded = np.concatenate([np.concatenate([r] + [_blank_like(generated)] * (per_side - len(r)))
                             for r in real])
    cells = _rows(padded, generated, rows)
    header = ["real"] * per_side + [""] + ["generated"] * per_side
    save_image_grid(cells, path, nrow=2 * per_side + 1,
                    cell_labels=header + [""] * (len(cells) - len(header)),
                    row_labels=[classes[c] for c in row_classes],
                    title="Real test images (left) vs generated images (right) of the same class"
                         )


def save_nearest_neighbours(queries: np.ndarray, query_labels: np.ndarray,
                            neighbours: np.ndarray, neighbour_labels: np.ndarray,
                            similarities: np.ndarray, classes: list[str], path: str | Path) -> None:
    """Each generated image (left) beside its nearest training images, most similar first,
    each neighbour titled with its class and cosine similarity."""
    rows, k = similarities.shape
    cells = _rows(queries, neighbours, rows)
    cell_labels = []
    for row in range(rows):
        cell_labels += ["generated", ""] + [
            f"{classes[int(y)]}\ncos {s:.2f}"
            for y, s in zip(neighbour_labels[row * k:(row + 1) * k], similarities[row])]
    save_image_grid(cells, path, nrow=k + 2, cell_labels=cell_labels,
                    row_labels=[classes[int(y)] for y in query_labels],
                    title=f"Generated images and their {k} nearest training images (cosine "
                          f"similarity of the classifier's features)")
