"""Sharing through a Git remote and a DVC remote, as the README says: after committing exactly
the files it names, a fresh clone shows the metrics and re-samples without training, and
experiments run on one machine are seen, applied and pulled on another."""
import subprocess
from pathlib import Path

import pytest

from tests.conftest import (GIT, RESULTS_IN_GIT, QUICK_PARAMS, build_archive, exp_table,
                            make_repo_copy, run, set_params, wait_for_queue)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def origin(tmp_path_factory) -> Path:
    """A bare Git repository holding a project whose first run was committed and pushed."""
    root = tmp_path_factory.mktemp("sharing")
    repo = make_repo_copy(root / "first")
    md5 = build_archive(root / "archive.tar.gz", layout="cifar100", num_classes=4)
    (root / "no-lpips").mkdir()
    set_params(repo, {**QUICK_PARAMS, "data.source": str(root / "archive.tar.gz"), "data.md5": md5,
                      "classifier.seeds": [0], "sample.count": 12,
                      "evaluate.inception_weights": "skip",
                      "evaluate.lpips_weights": str(root / "no-lpips")})
    run([*GIT, "commit", "-qam", "tiny params"], repo)
    run(["dvc", "repro"], repo)
    # The README's first run: commit DVC's record and the small results...
    run([*GIT, "add", *RESULTS_IN_GIT], repo)
    run([*GIT, "commit", "-qm", "first results"], repo)
    assert run(["git", "status", "--porcelain"], repo).stdout == ""  # nothing else to commit
    # ... and its sharing section: a DVC remote, pushed with the Git remote.
    run(["dvc", "remote", "add", "-d", "storage", str(root / "dvc-storage")], repo)
    run([*GIT, "add", ".dvc/config"], repo)
    run([*GIT, "commit", "-qm", "Add DVC remote"], repo)
    run(["git", "init", "-q", "--bare", str(root / "origin.git")], root)
    run(["git", "remote", "add", "origin", str(root / "origin.git")], repo)
    run(["dvc", "push"], repo)
    run(["git", "push", "-q", "origin", "HEAD:main"], repo)
    return root / "origin.git"


def clone(origin: Path, dest: Path) -> Path:
    subprocess.run(["git", "clone", "-q", "--branch", "main", str(origin), str(dest)], check=True)
    run(["dvc", "pull"], dest)  # the trained models and samples, no training
    return dest


def test_a_fresh_clone_shows_the_metrics_and_regenerates_samples_without_training(origin,
                                                                                   tmp_path):
    first = origin.parent / "first"
    elsewhere = clone(origin, tmp_path / "elsewhere")
    assert "up to date" in run(["dvc", "status"], elsewhere).stdout
    shown = run(["dvc", "metrics", "show"], elsewhere).stdout
    assert "metrics/classifier.json" in shown and "metrics/gan.json" in shown
    assert "test_acc.mean" in shown and "classifier_fid" in shown
    model = "models/gan/gan.pt"
    assert (elsewhere / model).read_bytes() == (first / model).read_bytes()

    # The README's command: only `sample` runs, and it draws the very same images again.
    (elsewhere / "plots/gan/samples.png").unlink()
    out = run(["dvc", "repro", "--force", "--single-item", "sample"], elsewhere).stdout
    assert "Running stage 'sample'" in out
    assert "Running stage 'train_generator'" not in out
    assert "Running stage 'train_classifier'" not in out
    assert (elsewhere / "plots/gan/samples.png").read_bytes() == \
        (first / "plots/gan/samples.png").read_bytes()
    assert "up to date" in run(["dvc", "status"], elsewhere).stdout


def test_experiments_run_on_one_machine_are_applied_and_pulled_on_another(origin, tmp_path):
    # A worker runs its share of a grid and pushes the experiments: Git refs and DVC outputs.
    worker = clone(origin, tmp_path / "worker")
    run(["dvc", "exp", "run", "--queue", "-S", "classifier.lr=0.05,0.2", "train_classifier"],
        worker)
    run(["dvc", "queue", "start"], worker)
    assert list(wait_for_queue(worker).values()) == ["Success", "Success"]
    run(["dvc", "exp", "push", "origin", "--all-commits"], worker)

    # The analyst sees every experiment, applies the best and gets its models without training.
    analyst = clone(origin, tmp_path / "analyst")
    run(["dvc", "exp", "pull", "origin", "--all-commits"], analyst)
    rows = [row for row in exp_table(analyst, "--sort-by", "metrics/classifier.json:test_acc.mean",
                                     "--sort-order", "desc") if row["Experiment"]]
    assert sorted(float(row["classifier.lr"]) for row in rows) == [0.05, 0.2]
    best = rows[0]["Experiment"]
    run(["dvc", "exp", "apply", best], analyst)
    run(["dvc", "pull", "train_classifier"], analyst)
    refs = run(["git", "for-each-ref", "--format=%(refname)", "refs/exps"], worker).stdout
    (ref,) = [ref for ref in refs.split() if ref.endswith(f"/{best}")]
    for path in ("metrics/classifier.json", "dvc.lock"):
        assert (analyst / path).read_text() == run(["git", "show", f"{ref}:{path}"],
                                                   worker).stdout
    assert "up to date" in run(["dvc", "status", "train_classifier"], analyst).stdout
    models = (analyst / "models/classifier").iterdir()
    assert [path.name for path in models] == ["seed_0.pt"]
