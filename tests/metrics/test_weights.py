"""Weights files of the metrics' networks never run code, wherever they come from."""
import os

import pytest
import torch
from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3

from cifarbudget.errors import UserError
from cifarbudget.metrics.fid import load_inception
from cifarbudget.metrics.lpips import WEIGHT_FILES, load_lpips
from cifarbudget.metrics.weights import hub_file

CPU = torch.device("cpu")
INCEPTION_FILE = hub_file(URL_INCEPTION_V3, "hub").name


class RunsACommand:
    """Unpickling this runs a shell command that creates `marker`."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture
def planted_cache(tmp_path, monkeypatch):
    """A torch hub cache ($TORCH_HOME/hub) with a code-running pickle under every weights
    file name the metrics look for; downloads fail, so only the cache can be used."""
    marker = tmp_path / "ran"
    checkpoints = tmp_path / "torch_home" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    for name in (INCEPTION_FILE, *WEIGHT_FILES):
        torch.save({"weight": RunsACommand(marker)}, checkpoints / name)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))

    def no_download(*args, **kwargs):
        raise AssertionError("the cached file was there: nothing to download")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    return checkpoints, marker


def test_the_planted_pickle_would_run_a_command(planted_cache):
    checkpoints, marker = planted_cache
    torch.load(checkpoints / INCEPTION_FILE, weights_only=False)
    assert marker.exists()  # so its absence below means the project never ran it


@pytest.mark.parametrize("explicit", [False, True], ids=["empty", "explicit"])
def test_inception_weights_that_run_code_are_refused_naming_the_file(planted_cache, explicit):
    checkpoints, marker = planted_cache
    weights = str(checkpoints / INCEPTION_FILE) if explicit else ""
    with pytest.raises(UserError, match=rf"inception_weights: .*{INCEPTION_FILE} is not a read"):
        load_inception(weights, CPU)
    assert not marker.exists()


@pytest.mark.parametrize("explicit", [False, True], ids=["empty", "explicit"])
@pytest.mark.parametrize("planted", WEIGHT_FILES)
def test_lpips_weights_that_run_code_are_refused_naming_the_file(planted_cache, explicit,
                                                                 planted):
    checkpoints, marker = planted_cache
    for name in WEIGHT_FILES:
        if name != planted:  # the other file holds plain tensors
            torch.save({"weight": torch.zeros(1)}, checkpoints / name)
    weights = str(checkpoints.parent) if explicit else ""
    with pytest.raises(UserError, match=rf"lpips_weights: .*{planted} is not a readable"):
        load_lpips(weights, CPU)
    assert not marker.exists()
