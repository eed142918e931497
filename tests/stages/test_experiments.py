"""Experiments as the README runs them: a queued experiment runs its own copy of the code, and
a sweep grid runs every combination (a bad value fails alone). Experiments shared between
machines: tests/stages/test_sharing.py."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import (GIT, TINY_PARAMS, build_archive, exp_table, make_repo_copy, run,
                            set_params, wait_for_queue)

pytestmark = pytest.mark.slow

CLASSIFIER = {"classifier.seeds": [0], "classifier.steps": 12, "classifier.eval_every": 6,
              "classifier.checkpoint_every": 6}


@pytest.fixture
def prepared_repo(tmp_path) -> Path:
    """A repository copy with tiny params and its prepared data, all committed."""
    repo = make_repo_copy(tmp_path / "repo")
    md5 = build_archive(tmp_path / "archive.tar.gz")
    set_params(repo, {**TINY_PARAMS, **CLASSIFIER, "data.source": str(tmp_path / "archive.tar.gz"),
                      "data.md5": md5})
    run(["dvc", "repro", "prepare"], repo)
    run([*GIT, "add", "-A"], repo)
    run([*GIT, "commit", "-qm", "prepared data"], repo)
    return repo


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


def test_a_sweep_runs_every_combination_and_a_bad_value_fails_alone(prepared_repo):
    # The README's sweep syntax: comma-separated values, one experiment per combination.
    run(["dvc", "exp", "run", "--queue", "-S", "classifier.lr=0.05,0.2",
         "-S", "classifier.batch_size=16,32", "train_classifier"], prepared_repo)
    run(["dvc", "exp", "run", "--queue", "--name", "bad-lr", "-S", "classifier.lr=-1",
         "train_classifier"], prepared_repo)
    run(["dvc", "queue", "start", "-j", "2"], prepared_repo)
    states = wait_for_queue(prepared_repo, timeout=900)
    assert sorted(states.values()) == ["Failed"] + ["Success"] * 4, states
    assert states["bad-lr"] == "Failed"
    failure = run(["dvc", "queue", "logs", "bad-lr"], prepared_repo, check=False).stdout
    assert "error: classifier.lr: -1.0 is too small; it must be >= 0.0" in failure
    assert "Traceback" not in failure

    rows = [row for row in exp_table(prepared_repo, "--sort-by",
                                     "metrics/classifier.json:test_acc.mean",
                                     "--sort-order", "desc")
            if row["Experiment"] and row["State"] != "Failed"]
    grid = {(float(row["classifier.lr"]), int(row["classifier.batch_size"])) for row in rows}
    assert grid == {(0.05, 16), (0.05, 32), (0.2, 16), (0.2, 32)}
    accuracies = [float(row["test_acc.mean"]) for row in rows]
    assert accuracies == sorted(accuracies, reverse=True)  # the README's way to find the best
    assert len({row["train_loss.mean"] for row in rows}) == 4  # four runs, four results
