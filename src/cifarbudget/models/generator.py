"""The generative model the pipeline samples from and evaluates, chosen by generator.model:
the SN-GAN's EMA generator or the VAE's decoder. Both map (z ~ N(0, I), class) to an image
in [-1, 1], the class as int64 labels or as class weights, so sampling treats them alike."""
from __future__ import annotations

import importlib
from pathlib import Path

import torch

from cifarbudget.io import load_checkpoint, reading
from cifarbudget.models.gan import saved_generator
from cifarbudget.paths import generator_model


def model_module(model: str):
    """cifarbudget.models.<model>: it defines SAMPLER_NAME and load_sampler(path, device).
    Imported by name, so that a stage imports (and dvc.yaml lists) only the chosen model."""
    return importlib.import_module(f"cifarbudget.models.{model}")


def load_sampler(model: str, device: torch.device | str = "cpu"):
    """(the network that draws images, info with "z_dim", "num_classes", "classes")."""
    return model_module(model).load_sampler(generator_model(model), device)


def sampler_name(model: str) -> str:
    return model_module(model).SAMPLER_NAME


def snapshot_files(folder: str | Path) -> list[Path]:
    """The snapshots `train_generator` kept in `folder`, in training order."""
    return sorted(Path(folder).glob("step_*.pt"))


def load_snapshot(path: str | Path, device: torch.device | str = "cpu"):
    """Read a training snapshot -> (its sampling network in eval mode, the step it was taken at).

    Both models keep a `models.gan.Generator` (the GAN's EMA generator, the VAE's decoder).
    """
    state = load_checkpoint(path)
    with reading(path, "a training snapshot"):
        network, _ = saved_generator(path, state, state["weights"], "width", device)
        return network, int(state["step"])
