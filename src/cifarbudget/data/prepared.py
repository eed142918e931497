"""The prepared dataset that `prepare` writes and the training stages read.

data/prepared/
    train_images.npy  uint8 (N, 32, 32, 3)     train_labels.npy  int64 (N,)
    test_images.npy   uint8 (M, 32, 32, 3)     test_labels.npy   int64 (M,)
    meta.json         {"name", "classes", "train_count", "test_count"}
    stats.json        {"mean": [r, g, b], "std": [r, g, b]}  (training set, pixels in [0, 1])
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cifarbudget.errors import UserError

PREPARED_DIR = Path("data/prepared")
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


def load_prepared(folder: str | Path = PREPARED_DIR) -> PreparedData:
    """Read what `prepare` wrote; a missing file is an error that says to run it."""
    folder = Path(folder)
    missing = [f for f in FILES if not (folder / f).exists()]
    if missing:
        raise UserError(f"{folder}/{missing[0]}: missing; run `dvc repro prepare` first")
    arrays = {f[:-4]: np.load(folder / f, allow_pickle=False) for f in FILES if f.endswith(".npy")}
    meta = json.loads((folder / "meta.json").read_text())
    stats = json.loads((folder / "stats.json").read_text())
    return PreparedData(**arrays, classes=meta["classes"], name=meta["name"],
                        mean=stats["mean"], std=stats["std"])


def to_tensor_nchw(images: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 NHWC array -> uint8 NCHW tensor on `device` (convert to float per batch)."""
    return torch.from_numpy(np.ascontiguousarray(images)).to(device).permute(0, 3, 1, 2)
