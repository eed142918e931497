"""`dvc repro` of the whole pipeline, offline, from a synthetic archive, then its plots render."""
import csv
import json

import numpy as np
import pytest

from tests.conftest import (GIT, METRIC_KEYS, RESULTS_IN_GIT, QUICK_PARAMS, build_archive, run,
                            set_params, snapshot, undeclared_params_reads)

STAGES = ("download", "prepare", "train_classifier", "train_generator", "sample", "evaluate")
FIGURES = ("samples.png", "interpolations.png", "real_vs_generated.png", "nearest_neighbours.png",
           "per_class_accuracy.png")
# Few images for the Inception network, which takes about a second per image on a CPU.
SAMPLE_COUNT, TEST_COUNT = 12, 20


@pytest.mark.slow
def test_dvc_repro_runs_the_whole_pipeline_offline(repo_copy, tmp_path, random_inception_weights):
    archive = tmp_path / "mine.tar.gz"
    md5 = build_archive(archive, n_test=TEST_COUNT)
    (tmp_path / "no-lpips").mkdir()  # LPIPS unavailable, whether or not there is a network
    set_params(repo_copy, {**QUICK_PARAMS, "data.source": str(archive), "data.md5": md5,
                           "sample.count": SAMPLE_COUNT,
                           "evaluate.inception_weights": str(random_inception_weights),
                           "evaluate.lpips_weights": str(tmp_path / "no-lpips")})
    out = run(["dvc", "repro"], repo_copy, timeout=1800)
    for stage in STAGES:
        assert f"Running stage '{stage}'" in out.stdout

    labels = np.load(repo_copy / "data/samples/labels.npy")
    assert np.bincount(labels).tolist() == [SAMPLE_COUNT // 4] * 4
    for name in FIGURES:
        assert (repo_copy / "plots/gan" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    metrics = json.loads((repo_copy / "metrics/gan.json").read_text())
    assert list(metrics) == METRIC_KEYS
    log = json.loads((repo_copy / "logs/gan_evaluation.json").read_text())
    assert log["generated_count"] == SAMPLE_COUNT and log["reference_count"] == TEST_COUNT
    training = json.loads((repo_copy / "metrics/gan_training.json").read_text())
    sizes = training["params"]
    assert sizes["total"] == sizes["generator"] + sizes["discriminator"] > 0
    assert training["updates"] == {"generator": QUICK_PARAMS["gan.steps"],
                                   "discriminator": QUICK_PARAMS["gan.steps"]}
    assert metrics["fid"] > 0 and metrics["classifier_fid"] > 0
    assert 0 <= metrics["classifier_accuracy_generated"] <= 1
    per_class = (repo_copy / "plots/gan/per_class_accuracy.csv").read_text().splitlines()
    assert per_class[0] == "class,generated,real" and len(per_class) == 1 + 4
    worst = min(float(row.split(",")[1]) for row in per_class[1:])
    assert metrics["worst_class_accuracy_generated"] == pytest.approx(worst, abs=1e-4)
    assert metrics["lpips"] is None and "evaluate.lpips_weights" in log["lpips_error"]
    # Quality over training: a row per snapshot (gan.snapshot_every 4 of 10 steps, and the
    # last); the last is the final network, drawing what `sample` drew, so it scores the same.
    with open(repo_copy / "plots/gan/quality.csv") as f:
        quality = list(csv.DictReader(f))
    assert [int(row["step"]) for row in quality] == [4, 8, 10]
    for key in ("classifier_accuracy_generated", "classifier_fid"):
        assert float(quality[-1][key]) == pytest.approx(metrics[key], rel=1e-6)
    assert all(float(row["fid_subset"]) > 0 for row in quality)

    assert "up to date" in run(["dvc", "status"], repo_copy).stdout
    assert "classifier_fid" in run(["dvc", "metrics", "show"], repo_copy).stdout
    run([*GIT, "add", *RESULTS_IN_GIT], repo_copy)  # as the README's first run says
    run([*GIT, "commit", "-qm", "first results"], repo_copy)
    shown = run(["dvc", "plots", "diff", "--out", str(tmp_path / "rendered")], repo_copy)
    assert "failed to load" not in shown.stdout + shown.stderr
    page = (tmp_path / "rendered" / "index.html").read_text()
    assert "Accuracy per class on generated images" in page and "Quality over training" in page
    assert "plots/gan/history.png" in page and "plots/vae" not in page
    for name in FIGURES:
        assert name in page

    # A bad sample count stops `dvc repro` at `sample` and every earlier result stays as it was.
    results = ("data/samples", "models", "plots", "metrics")
    before = {name: snapshot(repo_copy / name) for name in results}
    set_params(repo_copy, {"sample.count": SAMPLE_COUNT + 1})
    failed = run(["dvc", "repro"], repo_copy, check=False)
    assert failed.returncode != 0 and "error: sample.count" in failed.stderr
    assert {name: snapshot(repo_copy / name) for name in results} == before

    # Every params key a stage reads is one of its params in dvc.yaml, so dvc.lock records it.
    set_params(repo_copy, {"sample.count": SAMPLE_COUNT})
    assert undeclared_params_reads(repo_copy) == []
    # The check itself: with `sample` dropped from evaluate's params, it names what is read.
    text = (repo_copy / "dvc.yaml").read_text()
    incomplete = text.replace("      - sample          # the snapshots", "      # the snapshots")
    assert incomplete != text
    assert undeclared_params_reads(repo_copy, incomplete, only=("evaluate",)) == [
        "evaluate: sample.batch_size", "evaluate: sample.count", "evaluate: sample.seed"]
