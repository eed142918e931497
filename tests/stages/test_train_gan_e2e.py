"""The train_generator stage with the GAN: its outputs, a clean stop before training on bad input, and `dvc repro`."""
import csv
import json
import re
import shutil

import pytest
import torch

from cifarbudget.models.gan import load_sampler
from tests.conftest import (QUICK_PARAMS, build_archive, error_line, run, run_stage_script,
                            set_params, snapshot, stage_workdir)

TINY_GAN = {k: v for k, v in QUICK_PARAMS.items() if k.startswith("gan.")}
OUTPUTS = ("models/gan/gan.pt", "checkpoints/gan/checkpoint.pt", "plots/gan/history.csv",
           "plots/gan/progress.png", "metrics/gan_training.json")


def run_stage(cwd):
    return run_stage_script("train_generator", cwd)


@pytest.fixture
def workdir(tmp_path):
    """A folder to run the stage in: tiny GAN params, prepared data, earlier outputs."""
    return stage_workdir(tmp_path, TINY_GAN, OUTPUTS)


@pytest.mark.parametrize("overrides, message", [
    ({"budget.generative_params": 20_000},
     r"error: model has [\d,]+ trainable parameters \(generator [\d,]+ \+ discriminator [\d,]+\); "
     r"budget\.generative_params requires fewer than 20,000: reduce the widths"),
    ({"gan.steps": 30, "budget.generative_steps": 20},
     r"error: gan\.steps x gan\.n_dis: 30 x 1 = 30 discriminator updates exceed budget\.generative_steps "
     r"\(20\); lower gan\.steps to at most 20"),
    ({"gan.n_dis": 3, "budget.generative_steps": 20},
     r"error: gan\.steps x gan\.n_dis: 10 x 3 = 30 .* lower gan\.steps to at most 6"),
    ({"gan.n_dis": 0}, r"error: gan\.n_dis: 0 is too small; it must be >= 1"),
    ({"gan.loss": "wgan"}, r"error: gan\.loss: 'wgan' is not allowed; choose one of hinge, aw_hinge"),
    ({"gan.diffaugment": "translation,rotate"},
     r"error: gan\.diffaugment: unknown operation 'rotate'; give a comma-separated subset"),
    ({"gan.batch_size": 1000},
     r"error: gan\.batch_size: 1000 exceeds the 256 training images; lower gan\.batch_size"),
], ids=["params-over-budget", "steps-over-budget", "n_dis-over-budget", "n_dis-zero",
        "unknown-loss", "unknown-augmentation", "batch-too-large"])
def test_bad_settings_stop_before_training_and_keep_earlier_outputs(workdir, overrides, message):
    set_params(workdir, overrides)
    before = snapshot(workdir)
    proc = run_stage(workdir)
    line = error_line(proc)
    assert re.match(message, line), line
    assert "train_gan:" not in proc.stderr  # no progress bar: training never started
    assert snapshot(workdir) == before


def test_missing_prepared_data_says_which_stage_to_run(workdir):
    shutil.rmtree(workdir / "data" / "prepared")
    before = snapshot(workdir)
    line = error_line(run_stage(workdir))
    assert line == "error: data/prepared/train_images.npy: missing; run `dvc repro prepare` first"
    assert snapshot(workdir) == before


def test_the_stage_writes_the_model_history_progress_and_metrics_then_resumes(workdir):
    (workdir / "checkpoints/gan/checkpoint.pt").unlink()  # garbage would be refused, not resumed
    proc = run_stage(workdir)
    assert proc.returncode == 0, proc.stderr
    assert "models/gan/gan.pt: step 10" in proc.stdout

    generator, info = load_sampler(workdir / "models/gan/gan.pt")
    assert info == {"z_dim": 16, "num_classes": 4, "classes": [f"class_{i}" for i in range(4)]}
    images = generator(torch.randn(4, 16), torch.arange(4))
    assert images.shape == (4, 3, 32, 32)
    state = torch.load(workdir / "models/gan/gan.pt", weights_only=True)
    assert {"generator", "discriminator", "generator_ema", "optimizer_g", "optimizer_d", "step",
            "updates", "config", "classes"} <= state.keys()

    with open(workdir / "plots/gan/history.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [2, 4, 6, 8, 10]
    assert (workdir / "plots/gan/progress.png").read_bytes()[:4] == b"\x89PNG"
    metrics = json.loads((workdir / "metrics/gan_training.json").read_text())
    assert metrics["updates"] == {"generator": 10, "discriminator": 10}
    assert metrics["params"]["total"] == (metrics["params"]["generator"]
                                          + metrics["params"]["discriminator"]) > 0
    log = json.loads((workdir / "logs/gan_training.json").read_text())
    assert log["generator_ema"]["trained"] is False and log["iterations_this_run"] == 10

    # A rerun finds the finished checkpoint: no training, the same model, every output rewritten.
    for rel in ("plots/gan/progress.png", "plots/gan/history.csv", "models/gan/gan.pt"):
        (workdir / rel).unlink()  # as `dvc repro` does before running a stage
    again = run_stage(workdir)
    assert again.returncode == 0, again.stderr
    assert "resuming from checkpoints/gan/checkpoint.pt at step 10" in again.stdout
    rerun = torch.load(workdir / "models/gan/gan.pt", weights_only=True)
    assert all(torch.equal(rerun["generator_ema"][k], v) for k, v in state["generator_ema"].items())
    assert (workdir / "plots/gan/progress.png").exists()
    with open(workdir / "plots/gan/history.csv") as f:
        assert list(csv.DictReader(f)) == rows


@pytest.mark.slow
def test_dvc_repro_train_generator_from_a_local_archive(repo_copy, tmp_path):
    archive = tmp_path / "mine.tar.gz"
    md5 = build_archive(archive)
    set_params(repo_copy, {**QUICK_PARAMS, "data.source": str(archive), "data.md5": md5})
    out = run(["dvc", "repro", "train_generator"], repo_copy)
    assert "Running stage 'train_generator'" in out.stdout
    generator, info = load_sampler(repo_copy / "models/gan/gan.pt")
    assert info["num_classes"] == 4 and not generator.training
    metrics = json.loads((repo_copy / "metrics/gan_training.json").read_text())
    assert metrics["steps"] == 10
    assert "up to date" in run(["dvc", "status", "train_generator"], repo_copy).stdout

    # More steps: the persistent checkpoint carries the run on from step 10.
    set_params(repo_copy, {"gan.steps": 12})
    out = run(["dvc", "repro", "train_generator"], repo_copy)
    assert "resuming from checkpoints/gan/checkpoint.pt at step 10" in out.stdout
    metrics = json.loads((repo_copy / "metrics/gan_training.json").read_text())
    assert metrics["steps"] == 12 and metrics["updates"]["generator"] == 12

    # An edit of code the stage does not run: nothing to rerun, and a forced rerun resumes.
    model_file = repo_copy / "models/gan/gan.pt"
    trained = model_file.read_bytes()
    fid = repo_copy / "src/cifarbudget/metrics/fid.py"
    fid.write_text(fid.read_text() + "\n# an edit of code that train_generator does not run\n")
    assert "up to date" in run(["dvc", "status", "train_generator"], repo_copy).stdout
    out = run(["dvc", "repro", "--force", "--single-item", "train_generator"], repo_copy)
    assert "resuming from checkpoints/gan/checkpoint.pt at step 12 of 12" in out.stdout
    assert model_file.read_bytes() == trained

    # An edit of code the stage runs: `dvc repro` reruns it, and the rerun trains anew.
    losses = repo_copy / "src/cifarbudget/training/losses.py"
    text = losses.read_text()
    assert "F.relu(1 - scores.float())" in text
    losses.write_text(text.replace("F.relu(1 - scores.float())", "F.relu(2 - scores.float())"))
    out = run(["dvc", "repro", "train_generator"], repo_copy)
    assert ("checkpoints/gan/checkpoint.pt: written by other code "
            "(src/cifarbudget/training/losses.py changed): starting over") in out.stderr
    assert "resuming" not in out.stdout
    assert model_file.read_bytes() != trained
    assert json.loads((repo_copy / "metrics/gan_training.json").read_text())["steps"] == 12
