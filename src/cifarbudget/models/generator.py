"""The generative model the pipeline samples from and evaluates, chosen by generator.model:
the SN-GAN's EMA generator or the VAE's decoder. Both map (z ~ N(0, I), class) to an image
in [-1, 1], the class as int64 labels or as class weights, so sampling treats them alike."""
from __future__ import annotations

from pathlib import Path

import torch

from cifarbudget.models import gan, vae
from cifarbudget.paths import generator_model
from cifarbudget.training.checkpoint import build_saved, load_checkpoint, reading

_LOADERS = {"gan": gan.load_generator, "vae": vae.load_decoder}
SAMPLER_NAMES = {"gan": "the GAN's EMA generator", "vae": "the VAE's decoder"}


def load_sampler(model: str, device: torch.device | str = "cpu"):
    """(the network that draws images, info with "z_dim", "num_classes", "classes")."""
    return _LOADERS[model](generator_model(model), device)


def snapshot_files(folder: str | Path) -> list[Path]:
    """The snapshots `train_generator` kept in `folder`, in training order."""
    return sorted(Path(folder).glob("step_*.pt"))


def load_snapshot(path: str | Path, device: torch.device | str = "cpu"):
    """Read a training snapshot -> (its sampling network in eval mode, the step it was taken at).

    Both models keep a `gan.Generator` (the GAN's EMA generator, the VAE's decoder).
    """
    state = load_checkpoint(path)
    with reading(path, "a training snapshot"):
        config = state["config"]
        sizes = {"z_dim": config["z_dim"], "num_classes": config["num_classes"],
                 "width": config["width"]}
        network = build_saved(path, state["weights"], sizes, lambda: gan.Generator(**sizes))
        network.load_state_dict(state["weights"])
        step = int(state["step"])
    return network.to(device).eval().requires_grad_(False), step
