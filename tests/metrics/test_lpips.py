"""LPIPS diversity: random distinct pairs, and null with the reason when weights are missing."""
import urllib.error

import numpy as np
import pytest
import torch
from torchvision.models import vgg

from cifarbudget.errors import UserError
from cifarbudget.metrics.lpips import WEIGHT_FILES, lpips_diversity, lpips_metric, random_pairs

CPU = torch.device("cpu")
IMAGES = np.random.default_rng(0).integers(0, 256, (12, 32, 32, 3)).astype(np.uint8)


def test_random_pairs_are_of_two_different_images_and_reproducible():
    pairs = random_pairs(count=5, pairs=400, seed=3)
    assert pairs.shape == (400, 2)
    assert (pairs[:, 0] != pairs[:, 1]).all()
    assert pairs.min() >= 0 and pairs.max() < 5
    assert len({tuple(p) for p in pairs.tolist()}) == 20  # every ordered pair of 5 shows up
    assert torch.equal(pairs, random_pairs(count=5, pairs=400, seed=3))
    assert not torch.equal(pairs, random_pairs(count=5, pairs=400, seed=4))


class MeanAbsoluteDifference(torch.nn.Module):
    """A stand-in for LPIPS with the same interface: two uint8 NCHW batches -> (B,)."""

    def __init__(self):
        super().__init__()
        self.batch_sizes = []

    def forward(self, a, b):
        self.batch_sizes.append(len(a))
        return (a.float() - b.float()).abs().mean((1, 2, 3))


def test_lpips_diversity_averages_the_distance_over_all_pairs():
    net = MeanAbsoluteDifference()
    value = lpips_diversity(net, IMAGES, pairs=25, seed=0, batch_size=10, device=CPU)
    assert net.batch_sizes == [10, 10, 5]  # every pair exactly once
    index = random_pairs(len(IMAGES), 25, seed=0).numpy()
    expected = np.abs(IMAGES[index[:, 0]].astype(float) - IMAGES[index[:, 1]]).mean()
    assert value == pytest.approx(expected, rel=1e-5)


def test_failed_download_gives_null_with_the_reason(monkeypatch, tmp_path):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty cache: no earlier download
    result = lpips_metric("", IMAGES, pairs=4, seed=0, batch_size=4, device=CPU)
    assert result["lpips"] is None
    assert "Name or service not known" in result["lpips_error"]
    assert "evaluate.lpips_weights" in result["lpips_error"]


def test_a_folder_without_the_weights_gives_null_naming_the_missing_file(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / WEIGHT_FILES[0]).write_bytes(b"")
    result = lpips_metric(str(tmp_path), IMAGES, pairs=4, seed=0, batch_size=4, device=CPU)
    assert result["lpips"] is None
    assert WEIGHT_FILES[1] in result["lpips_error"] and "not found" in result["lpips_error"]


def test_an_unreadable_weights_file_is_an_error_naming_it(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    for name in WEIGHT_FILES:
        (tmp_path / "checkpoints" / name).write_bytes(b"garbage")
    with pytest.raises(UserError, match=f"lpips_weights: .*{WEIGHT_FILES[0]} is not a readable"):
        lpips_metric(str(tmp_path), IMAGES, pairs=4, seed=0, batch_size=4, device=CPU)


@pytest.fixture(scope="module")
def random_lpips_hub(tmp_path_factory):
    """A torch hub folder holding LPIPS heads and VGG16 convolutions with random weights."""
    folder = tmp_path_factory.mktemp("torch_home") / "hub"  # as in $TORCH_HOME/hub
    (folder / "checkpoints").mkdir(parents=True)
    gen = torch.Generator().manual_seed(0)
    heads = {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1, generator=gen)
             for i, c in enumerate((64, 128, 256, 512, 512))}
    torch.save(heads, folder / "checkpoints" / WEIGHT_FILES[0])
    # VGG16's convolutional part only (LPIPS uses no more): its classifier is 120M weights.
    convolutions = vgg.make_layers(vgg.cfgs["D"]).state_dict()
    torch.save({f"features.{k}": v for k, v in convolutions.items()},
               folder / "checkpoints" / WEIGHT_FILES[1])
    return folder


def test_with_loadable_weights_lpips_is_zero_for_identical_images_only(random_lpips_hub):
    twins = np.concatenate([IMAGES[:1]] * 4)
    hub = str(random_lpips_hub)
    assert lpips_metric(hub, twins, pairs=6, seed=0, batch_size=4, device=CPU) == {"lpips": 0.0}
    different = lpips_metric(hub, IMAGES, pairs=6, seed=0, batch_size=4, device=CPU)["lpips"]
    assert different > 0


def test_the_cache_is_used_when_the_setting_is_empty(random_lpips_hub, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(random_lpips_hub.parent))
    assert lpips_metric("", IMAGES, pairs=6, seed=0, batch_size=4, device=CPU)["lpips"] > 0
