"""LPIPS diversity: the mean perceptual distance between random pairs of generated images.

The network is torch-fidelity's LPIPS-VGG16, which needs two downloads (the LPIPS heads
and torchvision's ImageNet VGG16). Where they cannot be had (offline), the metric is
reported as null with the reason: it is a secondary diversity measure, and the classifier
diversity covers the same question without a download. A weights file that is there but
refused (it needs more than tensors, or is corrupt) stops the stage instead.
"""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import torchvision
from torch_fidelity import sample_similarity_lpips
from torch_fidelity.sample_similarity_lpips import URL_VGG16_LPIPS, SampleSimilarityLPIPS
from torchvision.models import vgg
from tqdm import tqdm

from cifarbudget.data.prepared import to_tensor_nchw
from cifarbudget.device import stateless_generator
from cifarbudget.errors import UserError, first_line
from cifarbudget.metrics.weights import download_to, hub_file, load_state_dict, replaced

# The LPIPS heads and torchvision's ImageNet VGG16; torch's hub cache keeps each download
# under <hub dir>/checkpoints with the URL's file name.
WEIGHT_URLS = (URL_VGG16_LPIPS, torchvision.models.VGG16_Weights.IMAGENET1K_V1.url)
WEIGHT_FILES = tuple(Path(url).name for url in WEIGHT_URLS)
KEY = "evaluate.lpips_weights"
# LPIPS was calibrated on 64x64 patches; torch-fidelity upsamples to 64 for its PPL as well.
RESIZE = 64
PAIRS_STREAM = 1  # stateless_generator key: the random pairs, apart from other draws of the seed


class LpipsUnavailable(Exception):
    """The LPIPS network cannot be loaded; the message says why."""


def _weight_files(weights: str) -> list[Path]:
    """The two weights files: in the torch hub folder `weights`, or in torch's own hub cache
    when it is empty, downloaded there first if missing."""
    paths = [hub_file(url, weights or None) for url in WEIGHT_URLS]
    for url, path in zip(WEIGHT_URLS, paths):
        if path.is_file():
            continue
        if weights:
            raise LpipsUnavailable(f"{KEY}: {path} not found; give a torch hub folder holding "
                                   f"checkpoints/{paths[0].name} and checkpoints/{paths[1].name} "
                                   f"(copy ~/.cache/torch/hub)")
        try:
            download_to(url, path)
        except Exception as exc:  # no network, a proxy, a full disk: the metric is skipped
            raise LpipsUnavailable(f"cannot download the LPIPS weights from {url} "
                                   f"({first_line(exc)}); set {KEY} to a torch hub folder "
                                   f"holding them (copy ~/.cache/torch/hub from a machine with "
                                   f"internet)") from None
    return paths


def _vgg16_convolutions(state: dict[str, torch.Tensor], path: Path) -> SimpleNamespace:
    """torchvision's VGG16 as LPIPS uses it (its convolutional part), with the given weights."""
    features = vgg.make_layers(vgg.cfgs["D"])
    prefix = "features."
    try:
        features.load_state_dict({k[len(prefix):]: v for k, v in state.items()
                                  if k.startswith(prefix)})
    except RuntimeError as exc:  # missing, unexpected or mis-shaped tensors
        raise UserError(f"{KEY}: {path} does not hold torchvision's VGG16 ({first_line(exc)}); "
                        f"delete it (a cached download is fetched again) or give a folder "
                        f"holding the right file") from None
    return SimpleNamespace(features=features)


def load_lpips(weights: str, device: torch.device) -> SampleSimilarityLPIPS:
    """LPIPS-VGG16 from the torch hub folder `weights` (offline), or torch's own hub cache if
    empty (downloaded there first if missing); both files are loaded with the safe loader only.

    Raises LpipsUnavailable when a file is missing and cannot be downloaded, and UserError
    when a file is there but refused (unsafe, corrupt or of another network).
    """
    heads_path, vgg_path = _weight_files(weights)
    heads = load_state_dict(heads_path, KEY)
    convolutions = _vgg16_convolutions(load_state_dict(vgg_path, KEY), vgg_path)
    try:
        with replaced(sample_similarity_lpips, "load_state_dict_from_url",
                      lambda *args, **kwargs: heads), \
                replaced(sample_similarity_lpips, "torchvision_load_pretrained_vgg16",
                         lambda **kwargs: convolutions):
            net = SampleSimilarityLPIPS("lpips-vgg16", sample_similarity_resize=RESIZE,
                                        sample_similarity_dtype="uint8")
    except RuntimeError as exc:  # load_state_dict: missing, unexpected or mis-shaped tensors
        raise UserError(f"{KEY}: {heads_path} does not hold the LPIPS heads "
                        f"({first_line(exc)}); delete it (a cached download is fetched again) "
                        f"or give a folder holding the right file") from None
    return net.to(device)


def random_pairs(count: int, pairs: int, seed: int) -> torch.Tensor:
    """(pairs, 2) indices of two different images each, drawn from `seed`."""
    rng = stateless_generator(seed, PAIRS_STREAM)
    first = torch.randint(count, (pairs,), generator=rng)
    # An offset in [1, count) makes the second index differ from the first.
    second = (first + torch.randint(1, count, (pairs,), generator=rng)) % count
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
