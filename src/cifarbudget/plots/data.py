"""The augmentation figure: what the training augmentation does to real training images."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from cifarbudget.config import AugmentParams, as_dict
from cifarbudget.data.augment import augment_batch
from cifarbudget.data.prepared import PreparedData, to_tensor_nchw
from cifarbudget.device import stateless_generator
from cifarbudget.plots.images import save_image_grid


def save_augmentation_figure(data: PreparedData, policy: AugmentParams, path: str | Path,
                             rows: int = 6, views: int = 7, seed: int = 0) -> None:
    """A row for each of the first `rows` classes met in the training set: an image, then `views`
    augmented views of it."""
    _, first_of_class = np.unique(data.train_labels, return_index=True)
    picks = np.sort(first_of_class)[:rows]
    originals = data.train_images[picks]
    batch = to_tensor_nchw(originals).repeat_interleave(views, dim=0)
    augmented = augment_batch(batch, policy, stateless_generator(seed)).permute(0, 2, 3, 1).numpy()
    image_shape = originals.shape[1:]
    cells = np.concatenate([originals[:, None], augmented.reshape(len(picks), views, *image_shape)],
                           axis=1).reshape(-1, *image_shape)
    settings = ", ".join(f"{key}={value}" for key, value in as_dict(policy).items())
    save_image_grid(cells, path, nrow=views + 1,
                    title=f"Training augmentation ({settings})\nleft: original; right: {views} random views",
                    row_labels=[data.classes[label] for label in data.train_labels[picks]])
