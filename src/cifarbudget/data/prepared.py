"""The prepared dataset that `prepare` writes and the training stages read.

data/prepared/
    train_images.npy  uint8 (N, 32, 32, 3)     train_labels.npy  int64 (N,)
    test_images.npy   uint8 (M, 32, 32, 3)     test_labels.npy   int64 (M,)
    meta.json         {"name", "classes", "train_count", "test_count"}
    stats.json        {"mean": [r, g, b], "std": [r, g, b]}  (training set, pixels in [0, 1])
"""
from __future__ import annotations

import json
import math
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cifarbudget.errors import UserError, first_line
from cifarbudget.io import atomic_dir, write_json
from cifarbudget.paths import PREPARED

if TYPE_CHECKING:
    import torch

MAX_CLASS_NAME = 100  # characters; CIFAR's longest is 13
STATS_BATCH = 4096  # images per histogram in channel_stats
FILES = ("train_images.npy", "train_labels.npy", "test_images.npy", "test_labels.npy",
         "meta.json", "stats.json")


@dataclass
class PreparedData:
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    classes: list[str]
    mean: list[float]
    std: list[float]
    name: str

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def load_prepared(folder: str | Path = PREPARED) -> PreparedData:
    """Read what `prepare` wrote; a missing file is an error that says to run it."""
    folder = Path(folder)
    missing = [f for f in FILES if not (folder / f).exists()]
    if missing:
        raise UserError(f"{folder}/{missing[0]}: missing; run `dvc repro prepare` first")
    fix = "rerun `dvc repro prepare`"
    arrays = {}
    for split in ("train", "test"):
        images = load_array(folder / f"{split}_images.npy", np.uint8, (32, 32, 3), fix)
        labels = load_array(folder / f"{split}_labels.npy", np.int64, (), fix)
        if len(labels) != len(images):
            raise UserError(f"{folder}/{split}_labels.npy: {len(labels)} labels for "
                            f"{len(images)} images; {fix}")
        arrays.update({f"{split}_images": images, f"{split}_labels": labels})
    meta, stats = _read_json(folder / "meta.json", fix), _read_json(folder / "stats.json", fix)
    classes = meta.get("classes")
    if not isinstance(classes, list) or not isinstance(meta.get("name"), str):
        raise UserError(f"{folder}/meta.json: needs a name and a list of classes; {fix}")
    check_class_names(classes, f"{folder}/meta.json: classes", fix)
    for split in ("train", "test"):
        labels = arrays[f"{split}_labels"]
        if len(labels) and not 0 <= labels.min() <= labels.max() < len(classes):
            raise UserError(f"{folder}/{split}_labels.npy: labels outside 0..{len(classes) - 1}; "
                            f"{fix}")
    moments = [stats.get(k) for k in ("mean", "std")]
    if not all(isinstance(m, list) and len(m) == 3
               and all(isinstance(v, (int, float)) and math.isfinite(v) for v in m)
               for m in moments):
        raise UserError(f"{folder}/stats.json: needs a mean and a std of 3 numbers each; {fix}")
    return PreparedData(**arrays, classes=classes, name=meta["name"], mean=moments[0],
                        std=moments[1])


def hold_out_validation(data: PreparedData, count: int, seed: int) -> PreparedData:
    """The data with `count` training images, the same number from each class drawn with
    `seed`, moved to the evaluation split in place of the test set (which then stays unseen
    while a recipe is chosen). mean/std stay those of the whole training set."""
    per_class, rest = divmod(count, data.num_classes)
    smallest = np.bincount(data.train_labels, minlength=data.num_classes).min()
    if rest or per_class >= smallest:
        raise UserError(f"classifier.validation_images: {count} is not a multiple of the "
                        f"{data.num_classes} classes below the {smallest * data.num_classes:,} "
                        f"training images; give one, e.g. {50 * data.num_classes}")
    order = np.random.default_rng(seed).permutation(len(data.train_labels))
    held = np.zeros(len(order), dtype=bool)
    for label in range(data.num_classes):
        held[order[data.train_labels[order] == label][:per_class]] = True
    return dataclasses.replace(
        data, train_images=data.train_images[~held], train_labels=data.train_labels[~held],
        test_images=data.train_images[held], test_labels=data.train_labels[held])


def load_array(path: Path, dtype, item_shape: tuple[int, ...], fix: str) -> np.ndarray:
    """The (N, *item_shape) array of `dtype` in the .npy file `path`. Mapped first: a header
    declaring more than the file holds is refused before any memory is taken for it."""
    try:
        mapped = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise UserError(f"{path}: not a readable array file ({first_line(exc)}); {fix}") from None
    if (mapped.dtype != dtype or mapped.ndim != 1 + len(item_shape)
            or mapped.shape[1:] != item_shape):
        raise UserError(f"{path}: holds {mapped.dtype} of shape {mapped.shape}, expected "
                        f"{np.dtype(dtype)} of shape (N, {', '.join(map(str, item_shape))}); {fix}"
                        .replace(", )", ")"))
    return np.array(mapped)


def _read_json(path: Path, fix: str) -> dict:
    try:
        obj = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise UserError(f"{path}: not valid JSON ({first_line(exc)}); {fix}") from None
    if not isinstance(obj, dict):
        raise UserError(f"{path}: holds a {type(obj).__name__}, not an object; {fix}")
    return obj


def check_class_names(names: list[str], where: str, fix: str) -> None:
    """Refuse class names that are empty, too long, unprintable (control characters would
    reach the terminal raw) or repeated; `where` names their source, `fix` the remedy."""
    for name in names:
        if not (isinstance(name, str) and 0 < len(name) <= MAX_CLASS_NAME
                and name.isprintable() and name == name.strip()):
            shown = repr(name[:40]) if isinstance(name, str) else type(name).__name__
            raise UserError(f"{where}: class name {shown} is not 1 to {MAX_CLASS_NAME} printable "
                            f"characters without surrounding spaces; {fix}")
    if len(set(names)) < len(names):
        repeated = next(n for i, n in enumerate(names) if n in names[:i])
        raise UserError(f"{where}: class name {repeated!r} appears more than once; {fix}")


def channel_stats(images: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 (N, H, W, C) images, pixels scaled to [0, 1]."""
    # Histograms of the 256 byte values give exact float64 moments without a float copy;
    # a few thousand images at a time, as bincount widens its input to int64.
    counts = np.zeros((images.shape[-1], 256), dtype=np.int64)
    for start in range(0, len(images), STATS_BATCH):
        batch = images[start:start + STATS_BATCH]
        for channel in range(images.shape[-1]):
            counts[channel] += np.bincount(batch[..., channel].ravel(), minlength=256)
    values = np.arange(256) / 255.0
    mean, std = [], []
    for channel_counts in counts:
        m = channel_counts @ values / channel_counts.sum()
        mean.append(float(m))
        std.append(float(np.sqrt(channel_counts @ (values - m) ** 2 / channel_counts.sum())))
    return mean, std


def save_prepared(data: PreparedData, folder: str | Path = PREPARED) -> None:
    """Write `data` in the format above, replacing `folder` as a whole or not at all."""
    with atomic_dir(folder) as tmp:
        for name in ("train_images", "train_labels", "test_images", "test_labels"):
            np.save(tmp / f"{name}.npy", getattr(data, name))
        write_json(tmp / "meta.json", {"name": data.name, "classes": data.classes,
                                       "train_count": len(data.train_labels),
                                       "test_count": len(data.test_labels)})
        write_json(tmp / "stats.json", {"mean": data.mean, "std": data.std})


def to_tensor_nchw(images: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 NHWC array -> uint8 NCHW tensor on `device` (convert to float per batch)."""
    import torch  # here, not above: reading an archive (`prepare`) needs no torch

    return torch.from_numpy(np.ascontiguousarray(images)).to(device).permute(0, 3, 1, 2)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """Images in [-1, 1], (N, C, H, W) -> uint8 (N, H, W, C), rounded exactly as a saved PNG."""
    import torch

    pixels = ((images.detach().float().cpu() + 1) * 127.5).round().clamp(0, 255)
    return pixels.to(torch.uint8).permute(0, 2, 3, 1).numpy()
