"""Kill -9 and resume, determinism: what users rely on when a long training run dies.

Each test trains a tiny model through `dvc repro`, then kills `dvc repro` (the whole
process group, as a dying machine or a hard Ctrl-C would) at random moments, before and
after the first checkpoint, reruns it, and requires the final model, history and metrics to be
identical, byte for byte, to those of an uninterrupted run.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import BIN, QUICK_PARAMS, build_archive, run, set_params

pytestmark = pytest.mark.slow

STAGES = {
    "train_classifier": {
        "params": {"classifier.steps": 60, "classifier.checkpoint_every": 4,
                   "classifier.eval_every": 20},
        "checkpoints": "checkpoints/classifier",
        "outputs": ["models/classifier/seed_0.pt", "models/classifier/seed_1.pt",
                    "plots/classifier/history.csv"],
        "metrics": "metrics/classifier.json",
    },
    "train_generator": {
        "params": {"gan.steps": 40, "gan.checkpoint_every": 3, "gan.log_every": 4,
                   "gan.progress_every": 20, "gan.snapshot_every": 15},
        "checkpoints": "checkpoints/gan",
        "outputs": ["models/gan/gan.pt", "plots/gan/history.csv", "snapshots/gan/step_000015.pt",
                    "snapshots/gan/step_000030.pt", "snapshots/gan/step_000040.pt"],
        "metrics": "metrics/gan_training.json",
    },
}


def fingerprint_outputs(repo: Path, stage: str) -> dict:
    spec = STAGES[stage]
    result = {path: hashlib.sha256((repo / path).read_bytes()).hexdigest()
              for path in spec["outputs"]}
    result["metrics"] = json.loads((repo / spec["metrics"]).read_text())
    return result


def env() -> dict:
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "DVC_NO_ANALYTICS": "1"}


def fresh_start(repo: Path, stage: str) -> None:
    """As before a stage's first run: no checkpoint and no outputs (DVC keeps the outputs of
    a killed run, `persist: true`, so a rerun after a kill on earlier outputs has nothing to do)."""
    spec = STAGES[stage]
    shutil.rmtree(repo / spec["checkpoints"], ignore_errors=True)
    shutil.rmtree(repo / "snapshots", ignore_errors=True)
    for path in (*spec["outputs"], spec["metrics"]):
        (repo / path).unlink(missing_ok=True)


def start_training(repo: Path, stage: str) -> subprocess.Popen:
    """`dvc repro -f stage` in its own process group (to kill it whole, as a dying machine)."""
    return subprocess.Popen([str(BIN / "dvc"), "repro", "-f", stage], cwd=repo, env=env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def seconds_to_first_checkpoint(proc: subprocess.Popen, checkpoints: Path) -> float:
    start, deadline = time.monotonic(), time.monotonic() + 300
    while not any(checkpoints.glob("*.pt")) and proc.poll() is None:
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.02)
    return time.monotonic() - start


def timed_run(repo: Path, stage: str) -> tuple[float, float]:
    """Run the stage uninterrupted -> (seconds to its first checkpoint, seconds in all)."""
    start = time.monotonic()
    proc = start_training(repo, stage)
    first = seconds_to_first_checkpoint(proc, repo / STAGES[stage]["checkpoints"])
    assert proc.wait() == 0
    return first, time.monotonic() - start


def kill_during_training(repo: Path, stage: str, after: str, delay: float) -> bool | None:
    """SIGKILL a run of the stage `delay` s after its launch (`after="launch"`) or after its
    first checkpoint (`after="checkpoint"`).

    Returns whether the kill left a checkpoint behind, or None if the stage's command had
    already ended.
    """
    checkpoints = repo / STAGES[stage]["checkpoints"]
    proc = start_training(repo, stage)
    if after == "checkpoint":
        seconds_to_first_checkpoint(proc, checkpoints)
    time.sleep(delay)
    if proc.poll() is not None or (repo / STAGES[stage]["metrics"]).exists():
        # The stage's command has ended (the metrics file is its last write); what is left is
        # DVC's bookkeeping, whose in-place dvc.lock write a kill can cut short (README).
        proc.wait()
        return None
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return any(checkpoints.glob("*.pt"))


@pytest.fixture(scope="module")
def tiny_repo(tmp_path_factory) -> Path:
    from tests.conftest import make_repo_copy

    root = tmp_path_factory.mktemp("fault")
    repo = make_repo_copy(root / "repo")
    md5 = build_archive(root / "archive.tar.gz", layout="cifar100", num_classes=4)
    set_params(repo, {**QUICK_PARAMS, "data.source": str(root / "archive.tar.gz"), "data.md5": md5})
    run(["dvc", "repro", "prepare"], repo)
    return repo


@pytest.mark.parametrize("stage", list(STAGES))
def test_kill_at_random_moments_then_rerun_gives_identical_results(tiny_repo, stage, monkeypatch):
    # Bit-exactness holds for one thread count: every run here uses the same one.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    set_params(tiny_repo, STAGES[stage]["params"])
    fresh_start(tiny_repo, stage)
    first_checkpoint, total = timed_run(tiny_repo, stage)
    reference = fingerprint_outputs(tiny_repo, stage)

    # Determinism: a second run from scratch gives the same files, byte for byte.
    fresh_start(tiny_repo, stage)
    run(["dvc", "repro", "-f", stage], tiny_repo)
    assert fingerprint_outputs(tiny_repo, stage) == reference

    # Random moments within the run, timed by the uninterrupted one (to 80% of it, as a rerun
    # may be faster): one counted from the launch (before the first checkpoint when it
    # lands in DVC's start, the imports or the first steps), two from the first checkpoint on.
    rng = random.Random(f"{stage}-kill-points")
    moments = [("launch", rng.uniform(0.1, 0.8) * total), ("checkpoint", 0.0),
               ("checkpoint", rng.uniform(0.1, 0.8) * (total - first_checkpoint))]
    for after, delay in moments:
        for _ in range(4):
            fresh_start(tiny_repo, stage)
            checkpointed = kill_during_training(tiny_repo, stage, after, delay)
            if checkpointed is not None:
                break
            delay /= 2  # the run was faster than the timed one (a machine's load varies)
        assert checkpointed is not None, f"every run ended before its kill ({after})"
        out = run(["dvc", "repro", stage], tiny_repo).stdout
        assert fingerprint_outputs(tiny_repo, stage) == reference, f"killed {after} + {delay:.2f} s"
        # With a checkpoint on disk it continued from there rather than starting over (which,
        # being deterministic, would give the same files, only slower).
        assert ("resuming from" in out) == checkpointed, out
