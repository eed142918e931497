"""Drawing from the trained generator: the evaluation set, the figures' inputs, neighbours.

Every draw comes from `sample.seed` through `stateless_generator(seed, stream)`, one stream
per purpose, so each output is reproducible and none depends on another (or on the batch
size): nothing is cherry-picked.

data/samples/
    images.npy  uint8 (N, 32, 32, 3), quantized exactly as a saved PNG would be
    labels.npy  int64 (N,), the classes the images were conditioned on
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from cifarbudget.data.prepared import load_array, to_uint8
from cifarbudget.device import stateless_generator
from cifarbudget.errors import UserError
from cifarbudget.io import atomic_dir
from cifarbudget.paths import SAMPLES

# stateless_generator keys, one per purpose.
(EVALUATION_STREAM, GRID_STREAM, INTERPOLATION_STREAM, COMPARISON_CLASSES_STREAM,
 COMPARISON_REAL_STREAM, COMPARISON_GENERATED_STREAM) = range(6)


@dataclass
class Draws:
    """Generator inputs: latents (N, z_dim) and classes, int64 labels (N,) or weights (N, K)."""
    z: torch.Tensor
    classes: torch.Tensor


def balanced_labels(count: int, num_classes: int) -> np.ndarray:
    """count / num_classes labels of each class, in order, like the balanced test sets."""
    if count % num_classes:
        nearest = max(round(count / num_classes), 1) * num_classes
        raise UserError(f"sample.count: {count} is not a multiple of the {num_classes} classes, so "
                        f"the samples cannot be class-balanced; use a multiple such as {nearest}")
    return np.repeat(np.arange(num_classes, dtype=np.int64), count // num_classes)


def evaluation_draws(count: int, num_classes: int, z_dim: int, seed: int) -> Draws:
    """`count` class-balanced draws in a random order (so any prefix is a fair sample)."""
    rng = stateless_generator(seed, EVALUATION_STREAM)
    labels = torch.from_numpy(balanced_labels(count, num_classes))
    order = torch.randperm(count, generator=rng)
    return Draws(torch.randn(count, z_dim, generator=rng), labels[order])


def grid_draws(count: int, num_classes: int, z_dim: int, seed: int) -> Draws:
    """The first `count` draws of the grid stream: latents and uniformly random classes."""
    rng = stateless_generator(seed, GRID_STREAM)
    return Draws(torch.randn(count, z_dim, generator=rng),
                 torch.randint(num_classes, (count,), generator=rng))


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between rows of `a` and `b` at fractions `t` -> (P, T, D).

    Gaussian latents live near a sphere; slerp keeps intermediate points at a typical norm,
    where a straight line would pass through unusually short latents.
    """
    cos = F.cosine_similarity(a, b, dim=1).clamp(-1, 1)[:, None, None]
    omega = torch.acos(cos)
    t = t[None, :, None]
    a, b = a[:, None, :], b[:, None, :]
    safe = torch.sin(omega).clamp_min(1e-6)
    spherical = (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / safe
    # Nearly parallel endpoints: the spherical formula is 0/0, and a line is the same path.
    return torch.where(omega > 1e-4, spherical, (1 - t) * a + t * b)


def interpolation_draws(pairs: int, steps: int, num_classes: int, z_dim: int,
                        seed: int) -> tuple[Draws, torch.Tensor]:
    """`pairs` rows of `steps` draws from random endpoints (z and class) to others.

    z moves by slerp; the class moves linearly from one one-hot vector to the other, which
    blends the generator's per-class batch-norm gains and biases. Returns the draws, row by
    row, and the (pairs, 2) endpoint classes.
    """
    rng = stateless_generator(seed, INTERPOLATION_STREAM)
    z_ends = torch.randn(2, pairs, z_dim, generator=rng)
    class_ends = torch.randint(num_classes, (pairs, 2), generator=rng)
    t = torch.linspace(0, 1, steps)
    z = slerp(z_ends[0], z_ends[1], t)
    one_hot = F.one_hot(class_ends, num_classes).float()
    weights = (1 - t)[None, :, None] * one_hot[:, None, 0] + t[None, :, None] * one_hot[:, None, 1]
    draws = Draws(z.reshape(pairs * steps, z_dim), weights.reshape(pairs * steps, num_classes))
    return draws, class_ends


def comparison_draws(classes: list[int], per_class: int, z_dim: int, seed: int) -> Draws:
    """`per_class` draws of each of `classes`, class by class."""
    rng = stateless_generator(seed, COMPARISON_GENERATED_STREAM)
    labels = torch.tensor(classes, dtype=torch.int64).repeat_interleave(per_class)
    return Draws(torch.randn(len(labels), z_dim, generator=rng), labels)


def comparison_classes(num_classes: int, rows: int, seed: int) -> list[int]:
    """`rows` different classes (all of them if there are fewer), drawn from the seed."""
    rng = stateless_generator(seed, COMPARISON_CLASSES_STREAM)
    return torch.randperm(num_classes, generator=rng)[:rows].tolist()


def real_examples(images: np.ndarray, labels: np.ndarray, classes: list[int], per_class: int,
                  seed: int) -> list[np.ndarray]:
    """`per_class` random images of each of `classes` (fewer if a class has fewer), per class."""
    rng = stateless_generator(seed, COMPARISON_REAL_STREAM)
    picked = []
    for label in classes:
        members = np.flatnonzero(labels == label)
        order = torch.randperm(len(members), generator=rng)[:per_class].numpy()
        picked.append(images[members[order]])
    return picked


@torch.no_grad()
def generate(generator: torch.nn.Module, draws: Draws, batch_size: int, device: torch.device,
             desc: str = "generate") -> np.ndarray:
    """Images for `draws` as uint8 (N, 32, 32, 3), in batches, in fp32 for exact outputs."""
    images = []
    for start in tqdm(range(0, len(draws.z), batch_size), desc=desc, unit="batch",
                      disable=len(draws.z) <= batch_size):
        z = draws.z[start:start + batch_size].to(device)
        classes = draws.classes[start:start + batch_size].to(device)
        images.append(to_uint8(generator(z, classes)))
    return np.concatenate(images)


def nearest_neighbours(queries: torch.Tensor, bank: torch.Tensor,
                       k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices and cosine similarities (both (Q, k)) of each query's k most similar bank rows."""
    similarity = F.normalize(queries.float(), dim=1) @ F.normalize(bank.float(), dim=1).T
    values, indices = similarity.topk(min(k, len(bank)), dim=1)
    return indices, values


def save_samples(images: np.ndarray, labels: np.ndarray, folder: str | Path = SAMPLES) -> None:
    """Write the evaluation set, replacing `folder` as a whole or not at all."""
    with atomic_dir(folder) as tmp:
        np.save(tmp / "images.npy", images)
        np.save(tmp / "labels.npy", labels)


def load_samples(folder: str | Path = SAMPLES) -> tuple[np.ndarray, np.ndarray]:
    """The evaluation set written by `sample`; missing files say to run it."""
    folder = Path(folder)
    for name in ("images.npy", "labels.npy"):
        if not (folder / name).is_file():
            raise UserError(f"{folder / name}: missing; run `dvc repro sample` first")
    fix = "rerun `dvc repro sample`"
    images = load_array(folder / "images.npy", np.uint8, (32, 32, 3), fix)
    labels = load_array(folder / "labels.npy", np.int64, (), fix)
    if len(labels) != len(images):
        raise UserError(f"{folder / 'labels.npy'}: {len(labels)} labels for {len(images)} "
                        f"images; {fix}")
    return images, labels
