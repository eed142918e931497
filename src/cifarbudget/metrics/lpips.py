"""LPIPS diversity: the mean perceptual distance between random pairs of generated images.

The network is torch-fidelity's LPIPS-VGG16, which needs two downloads (the LPIPS heads
and torchvision's ImageNet VGG16). Where they cannot be had (offline), the metric is
reported as null with the reason: it is a secondary diversity measure, and the classifier
diversity covers the same question without a download.
"""
from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import torch
import torchvision
from torch_fidelity.sample_similarity_lpips import URL_VGG16_LPIPS, SampleSimilarityLPIPS
from tqdm import tqdm

from cifarbudget.data.prepared import to_tensor_nchw
from cifarbudget.device import stateless_generator
from cifarbudget.errors import first_line

# The files torch's hub cache holds after the standard download, under <hub dir>/checkpoints.
WEIGHT_FILES = (Path(URL_VGG16_LPIPS).name,
                Path(torchvision.models.VGG16_Weights.IMAGENET1K_V1.url).name)
# LPIPS was calibrated on 64x64 patches; torch-fidelity upsamples to 64 for its PPL as well.
RESIZE = 64
PAIRS_STREAM = 1  # stateless_generator key: the random pairs, apart from other draws of the seed


class LpipsUnavailable(Exception):
    """The LPIPS network cannot be loaded; the message says why."""


@contextlib.contextmanager
def _hub_dir(folder: str | Path):
    """Make torch look for (and download to) `folder` as its hub cache, for this block only."""
    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(folder))
    try:
        yield
    finally:
        torch.hub.set_dir(previous)


def load_lpips(weights: str, device: torch.device) -> SampleSimilarityLPIPS:
    """LPIPS-VGG16 from the torch hub folder `weights` (offline), or downloaded if empty."""
    if weights:
        checkpoints = Path(weights) / "checkpoints"
        missing = [name for name in WEIGHT_FILES if not (checkpoints / name).is_file()]
        if missing:
            raise LpipsUnavailable(f"evaluate.lpips_weights: {checkpoints / missing[0]} not found; "
                                   f"give a torch hub folder holding checkpoints/{WEIGHT_FILES[0]} "
                                   f"and checkpoints/{WEIGHT_FILES[1]} (copy ~/.cache/torch/hub)")
        for name in WEIGHT_FILES:
            try:
                # The safe loader first, so the unrestricted loads below only see plain tensors.
                torch.load(checkpoints / name, map_location="cpu", weights_only=True)
            except Exception as exc:  # torch raises many types for corrupt or unsafe files
                raise LpipsUnavailable(f"{checkpoints / name}: not a readable weights file "
                                       f"({first_line(exc)})") from None
    context = _hub_dir(weights) if weights else contextlib.nullcontext()
    try:
        with context:
            net = SampleSimilarityLPIPS("lpips-vgg16", sample_similarity_resize=RESIZE,
                                        sample_similarity_dtype="uint8")
    except Exception as exc:  # no network, a bad file: the metric is skipped with this reason
        raise LpipsUnavailable(f"cannot load the LPIPS weights ({first_line(exc)}); set "
                               f"evaluate.lpips_weights to a torch hub folder holding them "
                               f"(copy ~/.cache/torch/hub from a machine with internet)") from None
    return net.to(device)


def random_pairs(count: int, pairs: int, seed: int) -> torch.Tensor:
    """(pairs, 2) indices of two different images each, drawn from `seed`."""
    gen = stateless_generator(seed, PAIRS_STREAM)
    first = torch.randint(count, (pairs,), generator=gen)
    # An offset in [1, count) makes the second index differ from the first.
    second = (first + torch.randint(1, count, (pairs,), generator=gen)) % count
    return torch.stack([first, second], 1)


@torch.no_grad()
def lpips_diversity(net: torch.nn.Module, images: np.ndarray, pairs: int, seed: int,
                    batch_size: int, device: torch.device) -> float:
    """Mean LPIPS distance over `pairs` random pairs of distinct uint8 (N, H, W, 3) images."""
    index = random_pairs(len(images), pairs, seed).numpy()
    distances = []
    for start in tqdm(range(0, pairs, batch_size), desc="lpips", unit="batch"):
        chunk = index[start:start + batch_size]
        distances.append(net(to_tensor_nchw(images[chunk[:, 0]], device),
                             to_tensor_nchw(images[chunk[:, 1]], device)).float().cpu())
    return torch.cat(distances).mean().item()


def lpips_metric(weights: str, images: np.ndarray, pairs: int, seed: int, batch_size: int,
                 device: torch.device) -> dict:
    """{"lpips": mean distance} or, when the network cannot be loaded, null and the reason."""
    try:
        net = load_lpips(weights, device)
    except LpipsUnavailable as exc:
        return {"lpips": None, "lpips_error": str(exc)}
    return {"lpips": lpips_diversity(net, images, pairs, seed, batch_size, device)}
