"""Queued experiments run side by side (`dvc queue start -j 2`) without clobbering each other:
each ends with exactly the results it gets when run alone."""
from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import GIT, QUICK_PARAMS, build_archive, run, set_params, wait_for_queue

pytestmark = pytest.mark.slow

EXPERIMENTS = {"lr-low": 0.05, "lr-high": 0.4}


class TrainingProcessWatch(threading.Thread):
    """Counts the experiments running stages/train_classifier.py with a working directory
    inside `root` (the queue's workspaces); keeps the largest count seen. A matching process
    whose parent also matches (a `sh -c` wrapper's child, a fork before exec) belongs to the
    same experiment and is not counted again.

    So that the count does not hang on timing luck (two short runs overlapping), the first
    experiment seen is paused (SIGSTOP) until a second one runs or `patience` seconds pass,
    then resumed: runs that the queue truly starts side by side are then always seen together,
    and runs one after another never are. Training is deterministic, so a pause changes nothing.
    """

    def __init__(self, root: Path, patience: float = 120):
        super().__init__(daemon=True)
        self.root, self.patience, self.most = str(root), patience, 0
        self.done = threading.Event()

    def training_processes(self) -> dict[str, str]:
        """pid -> parent pid of the matching processes."""
        parents = {}
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                cwd = os.readlink(f"/proc/{pid}/cwd")
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:  # the process ended, or is not ours to inspect
                continue
            if b"stages/train_classifier.py" in cmdline and cwd.startswith(self.root):
                parents[pid] = status.split("PPid:")[1].split()[0]
        return parents

    def run(self) -> None:
        paused, deadline = set(), None
        while not self.done.is_set():
            parents = self.training_processes()
            count = sum(ppid not in parents for ppid in parents.values())
            self.most = max(self.most, count)
            if count == 1 and deadline is None:  # the first experiment: wait for a second
                deadline = time.monotonic() + self.patience
                paused = set(parents)
                for pid in paused:
                    signal_process(pid, signal.SIGSTOP)
            if paused and (count >= 2 or time.monotonic() > deadline):
                for pid in paused:
                    signal_process(pid, signal.SIGCONT)
                paused = set()
            time.sleep(0.1)
        for pid in paused:
            signal_process(pid, signal.SIGCONT)


def signal_process(pid: str, signum: int) -> None:
    try:
        os.kill(int(pid), signum)
    except ProcessLookupError:  # it has just ended
        pass


def test_two_queued_experiments_run_in_parallel_and_match_solo_runs(repo_copy, tmp_path):
    archive = tmp_path / "mine.tar.gz"
    md5 = build_archive(archive)
    set_params(repo_copy, {**QUICK_PARAMS, "data.source": str(archive), "data.md5": md5,
                           "classifier.seeds": [0], "classifier.steps": 150,
                           "classifier.checkpoint_every": 10, "classifier.eval_every": 50})
    run(["dvc", "repro", "prepare"], repo_copy)
    run([*GIT, "add", "-A"], repo_copy)
    run([*GIT, "commit", "-qm", "prepared data"], repo_copy)

    for name, lr in EXPERIMENTS.items():
        run(["dvc", "exp", "run", "--queue", "--name", name, "-S", f"classifier.lr={lr}",
             "train_classifier"], repo_copy)
    watch = TrainingProcessWatch(repo_copy)
    watch.start()
    run(["dvc", "queue", "start", "-j", "2"], repo_copy)
    states = wait_for_queue(repo_copy, timeout=600)
    watch.done.set()
    assert states == {"lr-low": "Success", "lr-high": "Success"}, run(
        ["dvc", "queue", "logs", "lr-high"], repo_copy, check=False).stdout
    assert watch.most == 2  # side by side, not one after the other

    # Each experiment is a git ref; its metrics file is in git (cache: false).
    refs = run(["git", "for-each-ref", "--format=%(refname)", "refs/exps"], repo_copy).stdout
    queued = {}
    for name in EXPERIMENTS:
        (ref,) = [r for r in refs.split() if r.endswith(f"/{name}")]
        shown = run(["git", "show", f"{ref}:metrics/classifier.json"], repo_copy).stdout
        queued[name] = json.loads(shown)

    # The same experiments, one at a time in the workspace, from fresh checkpoints.
    for name, lr in EXPERIMENTS.items():
        run([*GIT, "checkout", "-q", "--", "."], repo_copy)
        run(["rm", "-rf", "checkpoints"], repo_copy)
        set_params(repo_copy, {"classifier.lr": lr})
        run(["dvc", "repro", "train_classifier"], repo_copy)
        solo = json.loads((repo_copy / "metrics/classifier.json").read_text())
        assert queued[name] == solo, name  # metrics hold no timings (those are in logs/)
    assert queued["lr-low"]["train_loss"] != queued["lr-high"]["train_loss"]  # two different runs
