"""The train_classifier stage script: outputs, reruns, one-line errors, earlier outputs kept."""
import contextlib
import csv
import json
import re
import shutil
import subprocess
import sys

import pytest
import torch

from cifarbudget.models.classifier import load_classifier
from tests.conftest import (REPO, QUICK_PARAMS, build_archive, error_line, run, set_params,
                            write_prepared)

CLASSIFIER_PARAMS = {k: v for k, v in QUICK_PARAMS.items() if k.startswith("classifier.")}
OUTPUTS = ("models", "plots", "metrics", "checkpoints")


def run_stage_script(cwd):
    return run([sys.executable, str(REPO / "stages" / "train_classifier.py")], cwd, check=False,
               timeout=600)


def snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for name in OUTPUTS
            for p in sorted((folder / name).rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A folder where the stage ran once with tiny settings (2 seeds, 20 steps each)."""
    folder = tmp_path_factory.mktemp("trained")
    shutil.copy(REPO / "params.yaml", folder / "params.yaml")
    set_params(folder, CLASSIFIER_PARAMS)
    write_prepared(folder / "data" / "prepared")
    proc = run_stage_script(folder)
    assert proc.returncode == 0, proc.stderr
    return folder, proc


def test_stage_writes_models_history_curves_and_metrics(trained):
    folder, proc = trained
    assert "1,268 trainable parameters (budget: fewer than 100,000)" in proc.stdout
    for seed in (0, 1):
        model, mean, std = load_classifier(folder / f"models/classifier/seed_{seed}.pt", "cpu")
        assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 4) and len(mean) == len(std) == 3

    with open(folder / "plots/classifier/history.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["step", "epoch", "lr", "train_loss", "train_acc", "test_loss",
                             "test_acc"]
    assert [int(r["step"]) for r in rows] == [10, 20]  # every eval_every steps, and the end
    seed_rows = []
    for seed in (0, 1):
        with open(folder / f"plots/classifier/seeds/seed_{seed}.csv") as f:
            seed_rows.append(list(csv.DictReader(f)))
    assert float(rows[-1]["test_acc"]) == pytest.approx(
        (float(seed_rows[0][-1]["test_acc"]) + float(seed_rows[1][-1]["test_acc"])) / 2)
    assert (folder / "plots/classifier/curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    metrics = json.loads((folder / "metrics/classifier.json").read_text())
    assert list(metrics) == ["test_acc", "test_loss", "train_acc", "train_loss", "params", "steps"]
    assert set(metrics["test_acc"]) == {"mean", "std"} and metrics["test_acc"]["mean"] > 0.5
    assert (metrics["params"], metrics["steps"]) == (1268, 20)
    log = json.loads((folder / "logs/classifier_training.json").read_text())
    assert {"wall_seconds", "train_images_per_second", "peak_process_rss_mib", "device",
            "precision", "seeds"} <= set(log)
    assert set(log["seeds"]) == {"0", "1"}


def test_rerunning_a_finished_stage_trains_nothing(trained, tmp_path):
    folder = tmp_path / "again"
    shutil.copytree(trained[0], folder)
    proc = run_stage_script(folder)
    assert proc.returncode == 0, proc.stderr
    for seed in (0, 1):  # nothing trained, so no checkpoint rewritten
        checkpoint = f"checkpoints/classifier/seed_{seed}.pt"
        assert (folder / checkpoint).read_bytes() == (trained[0] / checkpoint).read_bytes()
    assert "classifier seed 1: resuming from checkpoints/classifier/seed_1.pt at step 20 of 20" \
        in proc.stdout
    assert (folder / "metrics/classifier.json").read_bytes() == \
        (trained[0] / "metrics/classifier.json").read_bytes()


def test_with_validation_images_the_stage_reports_validation_metrics(tmp_path):
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    set_params(tmp_path, {**CLASSIFIER_PARAMS, "classifier.seeds": [0],
                          "classifier.validation_images": 40})
    write_prepared(tmp_path / "data" / "prepared")
    proc = run_stage_script(tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"^val accuracy \d\.\d{4} ± 0\.0000 over 1 seed\(s\)$", proc.stdout, re.M)
    metrics = json.loads((tmp_path / "metrics/classifier.json").read_text())
    assert list(metrics) == ["train_acc", "train_loss", "val_acc", "val_loss", "params", "steps"]
    assert (tmp_path / "plots/classifier/curves.png").read_bytes()[:4] == b"\x89PNG"


def missing_prepared_data(folder):
    (folder / "data/prepared/train_images.npy").unlink()


@pytest.mark.parametrize("change, message", [
    ({"classifier.widths": [64, 128, 256], "classifier.depths": [1, 1, 1]},
     r"error: model has [\d,]+ trainable parameters; budget.classifier_params requires fewer "
     r"than 100,000: reduce the widths or depths in params.yaml"),
    ({"classifier.steps": 10_001},
     r"error: classifier.steps: 10001 exceeds budget.classifier_steps \(10000\); "
     r"lower classifier.steps"),
    ({"classifier.batch_size": 0},
     r"error: classifier.batch_size: 0 is too small; it must be >= 1"),
    ({"classifier.batch_size": 1000},
     r"error: classifier.batch_size: 1000 exceeds the 256 training images"),
    ({"classifier.learning_rate": 0.1},
     r"error: classifier.learning_rate: unknown key; allowed keys in classifier: seeds, "),
    ({"classifier.widths": [16, 8]}, r"error: classifier.widths: \[16, 8\] narrows between stages"),
    (missing_prepared_data,
     r"error: data/prepared/train_images.npy: missing; run `dvc repro prepare` first"),
], ids=["over-param-budget", "over-step-budget", "zero-batch", "batch-over-dataset",
        "unknown-key", "narrowing-widths", "missing-data"])
def test_bad_input_is_one_line_and_keeps_earlier_outputs(trained, tmp_path, change, message):
    folder = tmp_path / "bad"
    shutil.copytree(trained[0], folder)
    if callable(change):
        change(folder)
    else:
        set_params(folder, change)
    before = snapshot(folder)
    assert re.fullmatch(message + ".*", error_line(run_stage_script(folder)))
    assert snapshot(folder) == before


@pytest.mark.slow
def test_dvc_repro_train_classifier_from_a_local_archive(repo_copy, tmp_path):
    archive = tmp_path / "tiny.tar.gz"
    md5 = build_archive(archive, num_classes=4, n_train=200, n_test=80)
    set_params(repo_copy, {**CLASSIFIER_PARAMS, "data.source": str(archive), "data.md5": md5})
    out = run(["dvc", "repro", "train_classifier"], repo_copy)
    assert "Running stage 'train_classifier'" in out.stdout

    metrics = json.loads((repo_copy / "metrics/classifier.json").read_text())
    assert metrics["steps"] == 20
    assert set(json.loads((repo_copy / "logs/classifier_training.json").read_text())["seeds"]) == {
        "0", "1"}
    for seed in (0, 1):
        load_classifier(repo_copy / f"models/classifier/seed_{seed}.pt", "cpu")
    shown = run(["dvc", "metrics", "show"], repo_copy)
    assert "metrics/classifier.json" in shown.stdout and "test_acc.mean" in shown.stdout
    status = run(["dvc", "status", "train_classifier"], repo_copy)
    assert "up to date" in status.stdout

    # Bad input under `dvc repro`: DVC must not delete the earlier outputs before the stage
    # refuses to run (they are `persist: true`), and the stage changes none of them.
    before = snapshot(repo_copy)
    set_params(repo_copy, {"classifier.batch_size": 0})
    failed = run(["dvc", "repro", "train_classifier"], repo_copy, check=False)
    assert failed.returncode != 0
    assert "error: classifier.batch_size: 0 is too small" in failed.stderr
    assert snapshot(repo_copy) == before


@contextlib.contextmanager
def tiny_filesystem(folder, options):
    """Mount a 64 KiB tmpfs at `folder` (keeping its files): a real full or read-only disk.
    Needs root, as in CI."""
    saved = {p.name: p.read_bytes() for p in folder.iterdir()}
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        for name, data in saved.items():
            (folder / name).write_bytes(data)
        if options == "full":
            with contextlib.suppress(OSError), open(folder / "filler", "wb") as f:
                while True:
                    f.write(b"\0" * 4096)
                    f.flush()
        else:
            subprocess.run(["mount", "-o", f"remount,{options}", str(folder)], check=True)
        yield
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)


@pytest.mark.parametrize("options, message", [
    ("full", "error: cannot write metrics/classifier.json: the disk is full; free some space"),
    ("ro", "error: cannot write metrics/classifier.json: the folder is not writable"),
], ids=["full-disk", "read-only"])
def test_a_full_or_read_only_disk_is_a_clear_error_and_keeps_the_metrics(trained, tmp_path,
                                                                           options, message):
    folder = tmp_path / "disk"
    shutil.copytree(trained[0], folder)
    earlier = (folder / "metrics/classifier.json").read_bytes()
    with tiny_filesystem(folder / "metrics", options):
        proc = run_stage_script(folder)  # training is finished: it only rewrites the outputs
        assert error_line(proc).startswith(message)
        assert (folder / "metrics/classifier.json").read_bytes() == earlier
        assert sorted(p.name for p in (folder / "metrics").iterdir()) == \
            sorted(["classifier.json"] + (["filler"] if options == "full" else []))
