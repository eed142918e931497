"""The VAE as the pipeline's generative model: the train_generator stage script on good and bad
input, and `dvc repro` with generator.model=vae, which trains no GAN."""
import json
import re

import numpy as np
import pytest
import torch

from cifarbudget.models.vae import load_sampler
from tests.conftest import (METRIC_KEYS, QUICK_PARAMS, build_archive, error_line, run,
                            run_stage_script, set_params, snapshot, stage_workdir,
                            undeclared_params_reads)

TINY_VAE = {k: v for k, v in QUICK_PARAMS.items() if k.startswith("vae.")}
OUTPUTS = ("models/vae/vae.pt", "checkpoints/vae/checkpoint.pt", "plots/vae/history.csv",
           "plots/vae/progress.png", "metrics/vae_training.json")
FIGURES = ("samples.png", "interpolations.png", "real_vs_generated.png", "nearest_neighbours.png",
           "per_class_accuracy.png")


def run_stage(cwd):
    return run_stage_script("train_generator", cwd)


@pytest.fixture
def workdir(tmp_path):
    """A folder to run the stage in: tiny VAE params, prepared data, earlier outputs."""
    return stage_workdir(tmp_path, {**TINY_VAE, "generator.model": "vae"}, OUTPUTS)


@pytest.mark.parametrize("overrides, message", [
    ({"budget.generative_params": 20_000},
     r"error: model has [\d,]+ trainable parameters \(encoder [\d,]+ \+ decoder [\d,]+\); "
     r"budget\.generative_params requires fewer than 20,000: reduce the widths"),
    ({"vae.steps": 30, "budget.generative_steps": 20, "gan.steps": 20},
     r"error: vae\.steps: 30 updates exceed budget\.generative_steps \(20\)"),
    ({"vae.beta": -1}, r"error: vae\.beta: -1\.0 is too small; it must be >= 0\.0"),
    ({"generator.model": "flow"},
     r"error: generator\.model: 'flow' is not allowed; choose one of gan, vae"),
    ({"vae.batch_size": 1000},
     r"error: vae\.batch_size: 1000 exceeds the 256 training images; lower vae\.batch_size"),
], ids=["params-over-budget", "steps-over-budget", "negative-beta", "unknown-model",
        "batch-too-large"])
def test_bad_settings_stop_before_training_and_keep_earlier_outputs(workdir, overrides, message):
    set_params(workdir, overrides)
    before = snapshot(workdir)
    proc = run_stage(workdir)
    line = error_line(proc)
    assert re.match(message, line), line
    assert "train_vae:" not in proc.stderr  # no progress bar: training never started
    assert snapshot(workdir) == before


def test_the_stage_writes_the_model_history_progress_and_metrics(workdir):
    (workdir / "checkpoints/vae/checkpoint.pt").unlink()  # garbage would be refused, not resumed
    proc = run_stage(workdir)
    assert proc.returncode == 0, proc.stderr
    assert "models/vae/vae.pt: step 10" in proc.stdout
    decoder, info = load_sampler(workdir / "models/vae/vae.pt")
    assert info == {"z_dim": 16, "num_classes": 4, "classes": [f"class_{i}" for i in range(4)]}
    assert decoder(torch.randn(4, 16), torch.arange(4)).shape == (4, 3, 32, 32)
    assert (workdir / "plots/vae/progress.png").read_bytes()[:4] == b"\x89PNG"
    assert (workdir / "plots/vae/history.csv").read_text().startswith("step,loss,recon,kl,lr\n")
    metrics = json.loads((workdir / "metrics/vae_training.json").read_text())
    assert metrics["updates"] == {"encoder": 10, "decoder": 10}
    assert metrics["params"]["total"] == metrics["params"]["encoder"] + metrics["params"]["decoder"]
    assert json.loads((workdir / "logs/vae_training.json").read_text())["iterations_this_run"] == 10


@pytest.mark.slow
def test_dvc_repro_with_the_vae_trains_no_gan_and_samples_and_evaluates_the_vae(repo_copy,
                                                                                 tmp_path):
    archive = tmp_path / "mine.tar.gz"
    md5 = build_archive(archive)
    (tmp_path / "no-lpips").mkdir()
    set_params(repo_copy, {**QUICK_PARAMS, "data.source": str(archive), "data.md5": md5,
                           "generator.model": "vae", "sample.count": 12,
                           "evaluate.inception_weights": "skip",
                           "evaluate.lpips_weights": str(tmp_path / "no-lpips")})
    out = run(["dvc", "repro"], repo_copy, timeout=1800).stdout
    assert "Running stage 'train_generator'" in out and "> python stages/train_generator.py" in out
    assert "train_gan" not in out and not (repo_copy / "models/gan").exists()

    labels = np.load(repo_copy / "data/samples/labels.npy")
    assert np.bincount(labels).tolist() == [3] * 4
    for name in FIGURES:
        assert (repo_copy / "plots/vae" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    metrics = json.loads((repo_copy / "metrics/vae.json").read_text())
    assert list(metrics) == METRIC_KEYS  # the same report as the GAN's, so they compare
    assert metrics["fid"] is None and metrics["classifier_fid"] > 0
    log = json.loads((repo_copy / "logs/vae_evaluation.json").read_text())
    assert log["inception_skipped"] == "evaluate.inception_weights is 'skip'"
    assert "up to date" in run(["dvc", "status"], repo_copy).stdout

    run(["dvc", "plots", "show", "--out", str(tmp_path / "rendered")], repo_copy)
    page = (tmp_path / "rendered" / "index.html").read_text()
    assert "plots/vae/history.png" in page and "plots/vae/samples.png" in page
    assert "GAN" not in page and "plots/gan" not in page
    # Every params key a stage reads is one of its params in dvc.yaml (last: it reruns them).
    assert undeclared_params_reads(repo_copy) == []
