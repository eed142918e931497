"""`make quick`: every stage once on tiny budgets, as the DVC experiment `quick`.

DVC runs it in a temporary copy of the repository (`dvc exp run --temp`), so the workspace's
params.yaml and results stay as they are; `dvc exp show` and `dvc plots diff quick` show it,
`dvc exp apply quick` brings it into the workspace. The tests run the pipeline on the same
budgets (tests/conftest.py), so a quick run is what the suite checks.
"""
from __future__ import annotations

import json
import subprocess
import sys

from cifarbudget.stage import run_stage

EXPERIMENT = "quick"

# Tiny budgets under which every stage runs in seconds on a CPU, on any class count.
QUICK_PARAMS = {
    "classifier.seeds": [0, 1], "classifier.widths": [8, 16], "classifier.depths": [1, 1],
    "classifier.steps": 20, "classifier.batch_size": 32, "classifier.warmup": 0.1,
    "classifier.eval_every": 10, "classifier.checkpoint_every": 10,
    # One thread whatever OMP_NUM_THREADS says: the thread count changes the arithmetic
    # (so reruns compare byte for byte), and tiny steps run faster without waiting on a second.
    "classifier.threads": 1,
    "gan.z_dim": 16, "gan.g_width": 16, "gan.d_width": 16, "gan.steps": 10, "gan.batch_size": 16,
    "gan.log_every": 2, "gan.progress_every": 5, "gan.checkpoint_every": 5,
    "gan.snapshot_every": 4,
    "vae.z_dim": 16, "vae.encoder_width": 8, "vae.decoder_width": 16, "vae.steps": 10,
    "vae.batch_size": 16, "vae.log_every": 2, "vae.progress_every": 5, "vae.checkpoint_every": 5,
    "vae.snapshot_every": 4,
    # 100 images: a multiple of CIFAR-100's, CIFAR-10's and the tests' class counts.
    "sample.count": 100, "sample.batch_size": 20,
    "evaluate.batch_size": 20, "evaluate.lpips_pairs": 10, "evaluate.snapshot_inception_images": 20,
    # The Inception network's features of the 10,000 test images take minutes on a CPU: FID,
    # KID and IS are left out (recorded as null, with the reason) rather than made fast and wrong.
    "evaluate.inception_weights": "skip",
}


def override(key: str, value: object) -> str:
    """A `dvc exp run -S` argument; JSON is also the override syntax for lists and strings."""
    return f"{key}={json.dumps(value, separators=(',', ':'))}"


def quick_command(name: str, extra: list[str]) -> list[str]:
    """`dvc exp run` of the whole pipeline on QUICK_PARAMS, then the user's own -S arguments
    (later ones win)."""
    settings = [arg for key, value in QUICK_PARAMS.items() for arg in ("-S", override(key, value))]
    return ["dvc", "exp", "run", "--temp", "--name", name, *settings, *extra]


def main() -> None:
    # Under a name of its own until it succeeds: a failed run leaves the last `quick` as it was.
    unfinished = f"{EXPERIMENT}-unfinished"
    subprocess.run(["dvc", "exp", "remove", unfinished], capture_output=True)  # an old failure's
    status = subprocess.run(quick_command(unfinished, sys.argv[1:])).returncode
    if status != 0:
        sys.exit(2)  # the stage's `error: ...` line is above; the last `quick` is as it was
    subprocess.run(["dvc", "exp", "rename", "--force", unfinished, EXPERIMENT], check=True,
                   capture_output=True)
    print(f"done: `dvc exp show` has its row ({EXPERIMENT}), `dvc plots diff {EXPERIMENT}` its "
          f"charts, `dvc exp apply {EXPERIMENT}` brings it into the workspace")


if __name__ == "__main__":
    run_stage(main)
