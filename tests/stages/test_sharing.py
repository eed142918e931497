"""Sharing through a DVC remote: a fresh clone shows the metrics and re-samples without training."""
import subprocess

import pytest

from tests.conftest import TINY_PARAMS, build_archive, run, set_params

pytestmark = pytest.mark.slow


def git(repo, *args):
    env_args = ["-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", *env_args, *args], cwd=repo, check=True, capture_output=True)


def test_push_then_pull_in_a_fresh_clone_regenerates_samples_without_training(repo_copy, tmp_path):
    md5 = build_archive(tmp_path / "archive.tar.gz", layout="cifar100", num_classes=4)
    set_params(repo_copy, {**TINY_PARAMS, "data.source": str(tmp_path / "archive.tar.gz"),
                           "data.md5": md5, "sample.count": 12,
                           "evaluate.inception_weights": "skip",
                           "evaluate.lpips_weights": str(tmp_path / "no-lpips")})
    run(["dvc", "repro"], repo_copy)
    run(["dvc", "remote", "add", "-d", "shared", str(tmp_path / "remote")], repo_copy)
    git(repo_copy, "add", "-A")
    git(repo_copy, "commit", "-qm", "results")
    run(["dvc", "push"], repo_copy)

    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(repo_copy), str(clone)], check=True)
    run(["dvc", "pull"], clone)
    shown = run(["dvc", "metrics", "show"], clone).stdout
    assert "metrics/classifier.json" in shown and "metrics/gan.json" in shown
    assert (clone / "models/gan/gan.pt").read_bytes() == (repo_copy / "models/gan/gan.pt").read_bytes()
    assert "up to date" in run(["dvc", "status"], clone).stdout

    # The README's command: only `sample` runs, and it draws the very same images again.
    (clone / "plots/gan/samples.png").unlink()
    out = run(["dvc", "repro", "--force", "--single-item", "sample"], clone).stdout
    assert "Running stage 'sample'" in out
    assert "Running stage 'train_generator'" not in out and "Running stage 'train_classifier'" not in out
    assert (clone / "plots/gan/samples.png").read_bytes() == \
        (repo_copy / "plots/gan/samples.png").read_bytes()
    assert "up to date" in run(["dvc", "status"], clone).stdout
