"""The evaluate stage script: one-line errors that leave earlier outputs intact.

The whole stage, with random Inception weights, runs in tests/stages/test_pipeline_e2e.py.
"""
import csv
import json
import shutil
import sys

import numpy as np
import pytest

from cifarbudget.sampling import balanced_labels, save_samples
from tests.conftest import (REPO, QUICK_PARAMS, error_line, run, set_params, snapshot,
                            write_prepared, write_untrained_models)


def run_evaluate(cwd):
    return run([sys.executable, str(REPO / "stages" / "evaluate.py")], cwd, check=False,
               timeout=600)


@pytest.fixture
def workdir(tmp_path, random_inception_weights):
    """A folder holding every input of `evaluate`, and an earlier metrics file."""
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    set_params(tmp_path, {**QUICK_PARAMS,
                          "evaluate.inception_weights": str(random_inception_weights)})
    data = write_prepared(tmp_path / "data" / "prepared")
    write_untrained_models(tmp_path)
    labels = balanced_labels(8, 4)
    save_samples(np.load(data / "test_images.npy")[:8], labels, tmp_path / "data" / "samples")
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "gan.json").write_text('{"fid": "earlier"}\n')
    return tmp_path


def missing_weights_file(workdir):
    set_params(workdir, {"evaluate.inception_weights": str(workdir / "nowhere.pth")})


def corrupt_weights_file(workdir):
    (workdir / "corrupt.pth").write_bytes(b"\x00" * 100)
    set_params(workdir, {"evaluate.inception_weights": str(workdir / "corrupt.pth")})


def no_samples(workdir):
    shutil.rmtree(workdir / "data" / "samples")


def no_classifier(workdir):
    shutil.rmtree(workdir / "models" / "classifier")


def no_snapshots(workdir):
    shutil.rmtree(workdir / "snapshots" / "gan")


def corrupt_snapshot(workdir):
    (workdir / "snapshots" / "gan" / "step_000000.pt").write_bytes(b"\x00" * 100)


@pytest.mark.parametrize("break_input, message", [
    (missing_weights_file, "evaluate.inception_weights: {workdir}/nowhere.pth not found; give the "
                           "FID Inception weights"),
    (corrupt_weights_file, "evaluate.inception_weights: {workdir}/corrupt.pth is not a readable "
                           "weights file"),
    (no_samples, "data/samples/images.npy: missing; run `dvc repro sample` first"),
    (no_classifier, "models/classifier/seed_0.pt: not found; run the stage that produces it"),
    (no_snapshots, "snapshots/gan: no training snapshot; rerun `dvc repro train_generator`"),
    (corrupt_snapshot, "snapshots/gan/step_000000.pt: not a readable checkpoint"),
])
def test_bad_input_fails_cleanly_and_keeps_earlier_outputs(workdir, break_input, message):
    break_input(workdir)
    before = snapshot(workdir)
    line = error_line(run_evaluate(workdir))
    assert message.format(workdir=workdir) in line
    assert snapshot(workdir) == before


def test_skip_leaves_inception_metrics_out_with_the_reason_and_keeps_the_rest(workdir):
    set_params(workdir, {"evaluate.inception_weights": "skip"})
    proc = run_evaluate(workdir)
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((workdir / "metrics" / "gan.json").read_text())
    assert metrics["fid"] is None and metrics["kid"] is None and metrics["inception_score"] is None
    log = json.loads((workdir / "logs" / "gan_evaluation.json").read_text())
    assert log["inception_skipped"] == "evaluate.inception_weights is 'skip'"
    assert log["generated_count"] == 8 and log["reference_count"] == 64
    assert 0.0 <= metrics["classifier_accuracy_generated"] <= 1.0
    assert metrics["classifier_fid"] >= 0.0
    assert "FID/KID/IS skipped" in proc.stdout
    rows = (workdir / "plots" / "gan" / "per_class_accuracy.csv").read_text().splitlines()
    assert rows[0] == "class,generated,real" and len(rows) == 1 + 4  # one row per class
    assert (workdir / "plots/gan/per_class_accuracy.png").read_bytes()[:4] == b"\x89PNG"


def test_quality_has_one_row_per_snapshot_in_training_order(workdir):
    from cifarbudget.models.gan import Generator
    from cifarbudget.training.loop import save_snapshot

    later = Generator(QUICK_PARAMS["gan.z_dim"], 4, QUICK_PARAMS["gan.g_width"])
    save_snapshot(workdir / "snapshots" / "gan", 12, later, [f"class_{i}" for i in range(4)])
    proc = run_evaluate(workdir)
    assert proc.returncode == 0, proc.stderr
    with open(workdir / "plots" / "gan" / "quality.csv") as f:
        rows = list(csv.DictReader(f))
    assert [row["step"] for row in rows] == ["0", "12"]
    assert list(rows[0]) == ["step", "classifier_accuracy_generated",
                             "worst_class_accuracy_generated", "classifier_fid",
                             "diversity_generated", "fid_subset", "kid_subset"]
    assert rows[0]["classifier_fid"] != rows[1]["classifier_fid"]  # two networks, two scores
