"""Experiments as the README runs them: a queued experiment runs its own copy of the code, a
sweep grid runs every combination (a bad value fails alone) and `make table` shows it whole, and
`make quick` runs the pipeline once beside the workspace. Experiments shared between machines:
tests/stages/test_sharing.py."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.conftest import (GIT, QUICK_PARAMS, build_archive, exp_table,
                            make_repo_copy, run, set_params, snapshot, wait_for_queue)

pytestmark = pytest.mark.slow

CLASSIFIER = {"classifier.seeds": [0], "classifier.steps": 12, "classifier.eval_every": 6,
              "classifier.checkpoint_every": 6}


def committed_repo(tmp_path: Path, target: str, n_test: int = 80, params: dict = {}) -> Path:
    """A repository copy with tiny params, `dvc repro target` run and everything committed."""
    repo = make_repo_copy(tmp_path / "repo")
    md5 = build_archive(tmp_path / "archive.tar.gz", n_test=n_test)
    set_params(repo, {**QUICK_PARAMS, **CLASSIFIER, "data.source": str(tmp_path / "archive.tar.gz"),
                      "data.md5": md5, **params})
    run(["dvc", "repro", target], repo)
    run([*GIT, "add", "-A"], repo)
    run([*GIT, "commit", "-qm", f"{target} done"], repo)
    return repo


@pytest.fixture
def prepared_repo(tmp_path) -> Path:
    """A repository copy with tiny params and its prepared data, all committed."""
    return committed_repo(tmp_path, "prepare")


@pytest.fixture
def evaluated_repo(tmp_path, random_inception_weights) -> Path:
    """A repository copy with the whole pipeline run on tiny params, FID included, committed.
    Few images: the Inception network takes about a second per image on a CPU."""
    return committed_repo(tmp_path, "evaluate", n_test=20,
                          params={"sample.count": 12,
                                  "evaluate.inception_weights": str(random_inception_weights)})


def test_a_queued_experiment_runs_its_own_copy_of_the_code(prepared_repo):
    module = prepared_repo / "src/cifarbudget/data/prepared.py"
    original = module.read_text()
    module.write_text(original + '\nprint("the code queued with the experiment")\n')
    run(["dvc", "exp", "run", "--queue", "--name", "own-code", "prepare"], prepared_repo)
    # The workspace moves on before the queue runs: the experiment must not see this.
    module.write_text(original + '\nraise RuntimeError("the workspace code ran")\n')
    run(["dvc", "queue", "start"], prepared_repo)
    states = wait_for_queue(prepared_repo, timeout=600)
    logs = run(["dvc", "queue", "logs", "own-code"], prepared_repo, check=False).stdout
    assert states == {"own-code": "Success"}, logs
    assert "the code queued with the experiment" in logs
    assert "the workspace code ran" not in logs


def test_a_sweep_runs_every_combination_and_a_bad_value_fails_alone(evaluated_repo):
    repo = evaluated_repo
    # The README's sweep syntax: comma-separated values, one experiment per combination.
    run(["dvc", "exp", "run", "--queue", "-S", "classifier.lr=0.05,0.2",
         "-S", "classifier.batch_size=16,32", "train_classifier"], repo)
    run(["dvc", "exp", "run", "--queue", "--name", "bad-lr", "-S", "classifier.lr=-1",
         "train_classifier"], repo)
    run(["dvc", "queue", "start", "-j", "2"], repo)
    states = wait_for_queue(repo, timeout=900)
    assert sorted(states.values()) == ["Failed"] + ["Success"] * 4, states
    assert states["bad-lr"] == "Failed"
    failure = run(["dvc", "queue", "logs", "bad-lr"], repo, check=False).stdout
    assert "error: classifier.lr: -1.0 is too small; it must be >= 0.0" in failure
    assert "Traceback" not in failure

    rows = [row for row in exp_table(repo, "--sort-by",
                                     "metrics/classifier.json:test_acc.mean",
                                     "--sort-order", "desc")
            if row["Experiment"] and row["State"] != "Failed"]
    grid = {(float(row["classifier.lr"]), int(row["classifier.batch_size"])) for row in rows}
    assert grid == {(0.05, 16), (0.05, 32), (0.2, 16), (0.2, 32)}
    accuracies = [float(row["test_acc.mean"]) for row in rows]
    assert accuracies == sorted(accuracies, reverse=True)  # the README's way to find the best
    assert len({row["train_loss.mean"] for row in rows}) == 4  # four runs, four results

    # `make table` at 160 columns: each experiment's name, its swept values and the headline
    # metrics, none cut ("…") or wrapped.
    table = run([sys.executable, "-m", "cifarbudget.table", "--hide-failed"], repo,
                env={"COLUMNS": "160"}).stdout
    lines = table.splitlines()
    assert "…" not in table and max(map(len, lines)) <= 160, table
    header = next(line for line in lines if "Experiment" in line).split()
    assert header == ["Experiment", "test_acc.mean", "fid", "classifier_accuracy_generated",
                      "classifier_fid", "classifier.batch_size", "classifier.lr"], table
    shown = {(words[2].strip("[]"), float(words[-1]), int(words[-2]))
             for words in map(str.split, lines) if len(words) > 2 and words[2].startswith("[")}
    assert shown == {(row["Experiment"], float(row["classifier.lr"]),
                      int(row["classifier.batch_size"])) for row in rows}, table


def workspace_files(repo: Path) -> dict:
    """The workspace's files, not git's and DVC's records (where experiments are kept)."""
    return {path: data for path, data in snapshot(repo).items()
            if path.parts[0] not in (".git", ".dvc")}


def test_make_quick_runs_every_stage_as_an_experiment_beside_the_workspace(repo_copy, tmp_path):
    md5 = build_archive(tmp_path / "archive.tar.gz")
    source = ["-S", f"data.source={tmp_path / 'archive.tar.gz'}", "-S", f"data.md5={md5}"]
    workspace = workspace_files(repo_copy)
    quick = [sys.executable, "-m", "cifarbudget.quick"]
    out = run([*quick, *source], repo_copy).stdout
    for stage in ("download", "prepare", "train_classifier", "train_generator", "sample",
                  "evaluate"):
        assert f"Running stage '{stage}'" in out
    assert workspace_files(repo_copy) == workspace  # params.yaml, no results: as they were
    [row] = [row for row in exp_table(repo_copy) if row["Experiment"] == "quick"]
    assert int(row["classifier.steps"]) == QUICK_PARAMS["classifier.steps"]
    assert int(row["gan.steps"]) == QUICK_PARAMS["gan.steps"]
    assert float(row["test_acc.mean"]) > 0 and float(row["classifier_fid"]) > 0

    # A run that fails keeps the last quick experiment and the workspace as they were.
    failed = run([*quick, *source, "-S", "classifier.lr=-1"], repo_copy, check=False)
    assert failed.returncode == 2 and "Traceback" not in failed.stderr
    assert "error: classifier.lr: -1.0 is too small; it must be >= 0.0\n" in failed.stderr
    assert [r["rev"] for r in exp_table(repo_copy) if r["Experiment"] == "quick"] == [row["rev"]]
    assert workspace_files(repo_copy) == workspace
