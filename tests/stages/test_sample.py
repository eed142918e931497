"""The sample stage script: its outputs, and one-line errors that leave earlier outputs intact."""
import shutil
import sys

import numpy as np
import pytest
import torch

from cifarbudget.models.gan import load_sampler
from cifarbudget.sampling import evaluation_draws, generate
from tests.conftest import (REPO, QUICK_PARAMS, error_line, run, set_params, snapshot,
                            write_prepared, write_untrained_models)

FIGURES = ("samples.png", "interpolations.png", "real_vs_generated.png", "nearest_neighbours.png")


def run_sample(cwd):
    return run([sys.executable, str(REPO / "stages" / "sample.py")], cwd, check=False, timeout=600)


@pytest.fixture
def workdir(tmp_path):
    """A folder holding params.yaml, prepared data, untrained models and earlier samples."""
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    set_params(tmp_path, QUICK_PARAMS)
    write_prepared(tmp_path / "data" / "prepared")
    write_untrained_models(tmp_path)
    (tmp_path / "data" / "samples").mkdir()
    (tmp_path / "data" / "samples" / "images.npy").write_bytes(b"earlier samples")
    (tmp_path / "plots" / "gan").mkdir(parents=True)
    (tmp_path / "plots" / "gan" / "samples.png").write_bytes(b"earlier figure")
    return tmp_path


def test_sample_writes_a_balanced_reproducible_set_and_the_figures(workdir):
    proc = run_sample(workdir)
    assert proc.returncode == 0, proc.stderr
    images = np.load(workdir / "data/samples/images.npy")
    labels = np.load(workdir / "data/samples/labels.npy")
    count = QUICK_PARAMS["sample.count"]
    assert images.dtype == np.uint8 and images.shape == (count, 32, 32, 3)
    assert labels.dtype == np.int64 and np.bincount(labels).tolist() == [count // 4] * 4
    # The set is what the seed's draws give, whatever the batch size: nothing is picked.
    generator, info = load_sampler(workdir / "models/gan/gan.pt")
    draws = evaluation_draws(count, 4, info["z_dim"], seed=0)
    np.testing.assert_array_equal(labels, draws.classes.numpy())
    np.testing.assert_array_equal(images, generate(generator, draws, count, torch.device("cpu")))
    for name in FIGURES:
        assert (workdir / "plots/gan" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = (workdir / "plots/gan/samples.txt").read_text().splitlines()
    assert len(rows) == 8 and all(len(row.split()) == 8 for row in rows)
    assert {name for row in rows for name in row.split()} <= {f"class_{i}" for i in range(4)}


def count_not_a_multiple(workdir):
    set_params(workdir, {"sample.count": 42})


def no_generator(workdir):
    shutil.rmtree(workdir / "models" / "gan")


def no_classifier(workdir):
    shutil.rmtree(workdir / "models" / "classifier")


@pytest.mark.parametrize("break_input, message", [
    (count_not_a_multiple, "sample.count: 42 is not a multiple of the 4 classes"),
    (no_generator, "models/gan/gan.pt: not found; run the stage that produces it first"),
    (no_classifier, "models/classifier/seed_0.pt: not found; run the stage that produces it"),
])
def test_bad_input_fails_cleanly_and_keeps_earlier_outputs(workdir, break_input, message):
    break_input(workdir)
    before = snapshot(workdir)
    line = error_line(run_sample(workdir))
    assert message in line
    assert snapshot(workdir) == before
