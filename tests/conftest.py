"""Shared fixtures: synthetic CIFAR archives and prepared data, and a scratch copy of the repo."""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import os
import pickle
import shutil
import subprocess
import sys
import tarfile
import typing
from pathlib import Path

import numpy as np
import pytest
import yaml

from cifarbudget.quick import QUICK_PARAMS  # tiny budgets: every stage runs in seconds

# No GPU for the tests or the processes they start: they compare results with CPU runs
# byte for byte (set before torch first looks for CUDA).
os.environ["CUDA_VISIBLE_DEVICES"] = ""
# Under pytest-xdist (`make test`: a worker per core), one thread per worker and per process it
# starts: more threads than cores make torch's threads wait on each other.
if "PYTEST_XDIST_WORKER" in os.environ:
    os.environ["OMP_NUM_THREADS"] = "1"

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the venv's bin: dvc, python


def synthetic_images(labels: np.ndarray, num_classes: int, seed: int) -> np.ndarray:
    """uint8 (N, 32, 32, 3) images a small network can learn: a class colour plus noise."""
    rng = np.random.default_rng(seed)
    palette = np.random.default_rng(1234).integers(30, 226, size=(num_classes, 3))
    noise = rng.normal(0, 25, size=(len(labels), 32, 32, 3))
    stripes = (np.arange(32)[None, :, None, None] * (1 + labels[:, None, None, None] % 4)) % 16
    images = palette[labels][:, None, None, :] + noise + stripes.transpose(0, 2, 1, 3) * 2
    return np.clip(images, 0, 255).astype(np.uint8)


def build_archive(path: Path, layout: str = "cifar100", num_classes: int = 4,
                  n_train: int = 200, n_test: int = 80, seed: int = 0, edit=None) -> str:
    """Write a .tar.gz laid out like the official CIFAR python archives; return its md5.

    Pickles are protocol 2 with numpy arrays, as the official files; images are
    channel-major rows of 3072 bytes. `edit` may change the {member: dict} before writing.
    """
    rng = np.random.default_rng(seed)
    ytr = rng.integers(0, num_classes, n_train)
    yte = np.arange(n_test) % num_classes  # balanced, like the official test sets
    to_rows = lambda x: x.transpose(0, 3, 1, 2).reshape(len(x), 3072)
    xtr = to_rows(synthetic_images(ytr, num_classes, seed))
    xte = to_rows(synthetic_images(yte, num_classes, seed + 1))
    names = [f"class_{i}" for i in range(num_classes)]
    files: dict[str, dict] = {}
    if layout == "cifar100":
        root = "cifar-100-python/"
        files[root + "meta"] = {"fine_label_names": names, "coarse_label_names": ["all"]}
        for split, x, y in (("train", xtr, ytr), ("test", xte, yte)):
            files[root + split] = {"filenames": [f"{split}_{i}.png" for i in range(len(y))],
                                   "batch_label": f"{split} batch", "fine_labels": y.tolist(),
                                   "coarse_labels": [0] * len(y), "data": x}
    elif layout == "cifar10":
        root = "cifar-10-batches-py/"
        files[root + "batches.meta"] = {"label_names": names, "num_cases_per_batch": n_train // 5,
                                        "num_vis": 3072}
        for b, (x, y) in enumerate(zip(np.array_split(xtr, 5), np.array_split(ytr, 5)), 1):
            files[root + f"data_batch_{b}"] = {"batch_label": f"training batch {b} of 5",
                                               "labels": y.tolist(), "data": x,
                                               "filenames": [f"{b}_{i}.png" for i in range(len(y))]}
        files[root + "test_batch"] = {"batch_label": "testing batch 1 of 1", "labels": yte.tolist(),
                                      "data": xte, "filenames": [f"t_{i}.png" for i in range(len(yte))]}
    else:
        raise ValueError(layout)
    if edit:
        edit(files)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, obj in files.items():
            payload = pickle.dumps(obj, protocol=2)
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return hashlib.md5(path.read_bytes()).hexdigest()


def write_prepared(folder: Path, num_classes: int = 4, n_train: int = 256, n_test: int = 64,
                   seed: int = 0) -> Path:
    """Write data/prepared in the format `prepare` produces, with learnable synthetic images."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    ytr = rng.integers(0, num_classes, n_train).astype(np.int64)
    yte = (np.arange(n_test) % num_classes).astype(np.int64)
    xtr = synthetic_images(ytr, num_classes, seed)
    np.save(folder / "train_images.npy", xtr)
    np.save(folder / "train_labels.npy", ytr)
    np.save(folder / "test_images.npy", synthetic_images(yte, num_classes, seed + 1))
    np.save(folder / "test_labels.npy", yte)
    classes = [f"class_{i}" for i in range(num_classes)]
    (folder / "meta.json").write_text(json.dumps(
        {"name": "cifar100", "classes": classes, "train_count": n_train, "test_count": n_test}))
    pixels = xtr.reshape(-1, 3) / 255.0
    (folder / "stats.json").write_text(json.dumps(
        {"mean": pixels.mean(0).tolist(), "std": pixels.std(0).tolist()}))
    return folder


def assert_same_state(a, b, path: str = "") -> None:
    """Two checkpoints (nested dicts of tensors and values) are equal, bit for bit, but for
    the timings of their runs (the "clock")."""
    import torch

    if path == "" and isinstance(a, dict) and isinstance(b, dict):
        a, b = ({k: v for k, v in state.items() if k != "clock"} for state in (a, b))

    assert type(a) is type(b), path
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for key in a:
            assert_same_state(a[key], b[key], f"{path}/{key}")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), path
    else:
        assert a == b, path


def training_files_in(folder: Path, model: str):
    """The training files of `model` ("gan" or "vae") under `folder` instead of the repo."""
    from cifarbudget.paths import TrainingFiles, generator_training_files

    files = generator_training_files(model)
    return TrainingFiles(*(folder / path for path in dataclasses.astuple(files)))


def stage_workdir(folder: Path, overrides: dict, earlier_outputs: tuple[str, ...]) -> Path:
    """A folder to run a stage script in: params.yaml with `overrides`, prepared data, and
    placeholder earlier outputs (to check that a failing stage leaves them intact)."""
    shutil.copy(REPO / "params.yaml", folder / "params.yaml")
    set_params(folder, overrides)
    write_prepared(folder / "data" / "prepared")
    for rel in earlier_outputs:
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(b"earlier " + rel.encode())
    return folder


def run_stage_script(name: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run stages/<name>.py in `cwd` on one thread (tiny networks train faster on one, and
    a busy machine cannot stall them)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(REPO / "stages" / f"{name}.py")], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny networks train faster on one thread, and a busy shared CPU cannot stall them."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module", params=["bf16", "fp32"])
def each_precision(request):
    """The module's tests run under bf16 autocast, then in fp32, whatever this CPU computes
    natively (bf16 is emulated where it has no bf16 units): the results that depend on the
    precision are checked in both on every machine."""
    from cifarbudget.device import FORCE_PRECISION

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(FORCE_PRECISION, request.param)
        yield request.param


@pytest.fixture
def torch_determinism_restored():
    """torch's deterministic mode and cuDNN benchmarking as they were before the test: the
    settings are global, and other tests rely on them."""
    import torch

    before = (torch.are_deterministic_algorithms_enabled(),
              torch.is_deterministic_algorithms_warn_only_enabled(),
              torch.backends.cudnn.benchmark, torch.utils.deterministic.fill_uninitialized_memory)
    yield
    torch.use_deterministic_algorithms(before[0], warn_only=before[1])
    torch.backends.cudnn.benchmark, torch.utils.deterministic.fill_uninitialized_memory = before[2:]


@pytest.fixture
def prepared_dir(tmp_path) -> Path:
    return write_prepared(tmp_path / "data" / "prepared")


def _repo_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         cwd=REPO, check=True, capture_output=True).stdout
    return [f for f in out.decode().split("\0") if f and (REPO / f).is_file()]


def make_repo_copy(dest: Path) -> Path:
    """Copy the repository's source (what git tracks or would track) into `dest`, git-init it."""
    for rel in _repo_files():
        if rel.startswith(("metrics/", "plots/")) or rel == "dvc.lock":
            continue  # the copy starts with no results
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, target)
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "copy"]):
        subprocess.run(cmd, cwd=dest, check=True, env=env, capture_output=True)
    return dest


@pytest.fixture
def repo_copy(tmp_path) -> Path:
    return make_repo_copy(tmp_path / "repo")


def set_params(repo: Path, overrides: dict) -> None:
    """Apply {"section.key": value} overrides to repo/params.yaml."""
    path = repo / "params.yaml"
    params = yaml.safe_load(path.read_text())
    for dotted, value in overrides.items():
        section, key = dotted.split(".", 1)
        params.setdefault(section, {})[key] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def run(cmd: list[str], cwd: Path, check: bool = True, timeout: float = 900,
        env: dict[str, str] = {}) -> subprocess.CompletedProcess:
    """Run a command with the venv first on PATH (so dvc stages find its python), and `env`."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "DVC_NO_ANALYTICS": "1", "PYTHONUNBUFFERED": "1", **env}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}\n"
                             f"stdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-4000:]}")
    return proc


def queue_states(repo: Path) -> dict[str, str]:
    """Experiment name -> state (Queued, Running, Success, Failed) from `dvc queue status`."""
    states = {}
    for line in run(["dvc", "queue", "status"], repo).stdout.splitlines()[1:]:
        words = line.split()  # task, name, created (one or more words), status
        if len(words) > 2 and words[-1] in ("Queued", "Running", "Success", "Failed"):
            states[words[1]] = words[-1]
    return states


def wait_for_queue(repo: Path, timeout: float = 900) -> dict[str, str]:
    """Poll `dvc queue status` until every experiment has ended -> their final states."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        states = queue_states(repo)
        if states and all(s in ("Success", "Failed") for s in states.values()):
            return states
        assert time.monotonic() < deadline, f"the queue did not finish: {states}"
        time.sleep(1)


def exp_table(repo: Path, *args: str) -> list[dict]:
    """`dvc exp show --csv` as rows of column -> value."""
    import csv

    shown = run(["dvc", "exp", "show", "--csv", "--no-pager", *args], repo).stdout
    return list(csv.DictReader(io.StringIO(shown)))


def error_line(proc) -> str:
    """The stage's one `error: ...` line; it must be the last line and come without a traceback."""
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and proc.stderr.rstrip("\n").endswith(errors[0]), proc.stderr
    return errors[0]


def snapshot(folder: Path) -> dict:
    """Every file below `folder` with its bytes: to check that a failed stage changed nothing."""
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


GIT = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com"]
# What the README says to commit after a run: DVC's record and the small results kept in git.
RESULTS_IN_GIT = ["dvc.lock", "metrics", "plots", "logs"]
# metrics/<model>.json, the same for the GAN and the VAE so that they compare.
METRIC_KEYS = ["fid", "kid", "inception_score", "classifier_accuracy_generated",
               "classifier_accuracy_real", "worst_class_accuracy_generated", "classifier_fid",
               "diversity", "lpips"]


@pytest.fixture(scope="session")
def random_inception_weights(tmp_path_factory) -> Path:
    """A weights file for the FID Inception network with random weights: FID runs offline.

    He-normal weights keep the activations at unit scale through the 94 layers (PyTorch's
    default init shrinks them to ~1e-8), so distances between feature sets are measurable.
    """
    import torch
    from torch_fidelity import feature_extractor_inceptionv3 as inception

    # The class loads weights in its constructor; skip that to get the bare architecture.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(inception, "load_state_dict_from_url", lambda *args, **kwargs: {})
        patch.setattr(inception.FeatureExtractorInceptionV3, "load_state_dict",
                      lambda self, state: None)
        net = inception.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    gen = torch.Generator().manual_seed(0)
    for layer in net.modules():
        if isinstance(layer, (torch.nn.Conv2d, torch.nn.Linear)):
            fan_in = layer.weight[0].numel()
            layer.weight.data = torch.randn(layer.weight.shape, generator=gen) * (2 / fan_in) ** 0.5
    path = tmp_path_factory.mktemp("inception") / "random-inception.pth"
    torch.save(net.state_dict(), path)
    return path


def write_untrained_models(root: Path, num_classes: int = 4) -> None:
    """models/gan/gan.pt, a snapshot of its step 0 and models/classifier/seed_0.pt as the
    training stages save them, untrained, with QUICK_PARAMS sizes: enough to run `sample`
    and `evaluate` in seconds."""
    import numpy as np
    import torch

    from cifarbudget.config import BudgetParams, GanParams
    from cifarbudget.data.prepared import PreparedData
    from cifarbudget.io import save_checkpoint
    from cifarbudget.models.classifier import build_classifier, model_file_state
    from cifarbudget.training.gan import Trainer
    from cifarbudget.training.loop import save_snapshot

    classes = [f"class_{i}" for i in range(num_classes)]
    gan = GanParams(z_dim=QUICK_PARAMS["gan.z_dim"], g_width=QUICK_PARAMS["gan.g_width"],
                    d_width=QUICK_PARAMS["gan.d_width"], batch_size=8)
    images, labels = np.zeros((8, 32, 32, 3), np.uint8), np.zeros(8, np.int64)
    data = PreparedData(images, labels, images, labels, classes, [0.5] * 3, [0.25] * 3, "tiny")
    trainer = Trainer(gan, data, BudgetParams(), torch.device("cpu"))
    save_checkpoint(root / "models/gan/gan.pt", trainer.state_dict())
    save_snapshot(root / "snapshots/gan", 0, trainer.generator_ema, classes)
    widths, depths = QUICK_PARAMS["classifier.widths"], QUICK_PARAMS["classifier.depths"]
    classifier = build_classifier(widths, depths, num_classes)
    save_checkpoint(root / "models/classifier/seed_0.pt",
                    model_file_state(classifier, widths, depths, [0.5] * 3, [0.25] * 3, classes))


@contextlib.contextmanager
def recording_params_reads(reads: set[str]):
    """Within the block, every params.yaml key a stage reads after `load_params` (which also
    validates every key) is added to `reads` as "section.key"."""
    import cifarbudget.config as config

    sections = {cls: name for name, cls in typing.get_type_hints(config.Params).items()}
    loaded = []

    def getattribute(self, name):
        value = object.__getattribute__(self, name)
        if loaded and name in type(self).__dataclass_fields__:
            reads.add(f"{sections[type(self)]}.{name}")
        return value

    def load_params(*args, **kwargs):
        params = original(*args, **kwargs)
        loaded.append(True)
        return params

    original = config.load_params
    config.load_params = load_params
    for cls in sections:
        cls.__getattribute__ = getattribute
    try:
        yield reads
    finally:
        config.load_params = original
        for cls in sections:
            del cls.__getattribute__


def undeclared_params_reads(repo: Path, dvc_yaml: str | None = None,
                            only: tuple[str, ...] | None = None) -> list[str]:
    """'stage: key' for each params key a stage of dvc.yaml (`repo`'s, or the text
    `dvc_yaml`) reads without declaring it in its `params`. Runs every stage script (or those
    named in `only`) again, in-process, on the outputs of a finished `dvc repro` (each finds
    its work done or redoes it quickly)."""
    import runpy

    params = yaml.safe_load((repo / "params.yaml").read_text())
    stages = yaml.safe_load((dvc_yaml or (repo / "dvc.yaml").read_text()).replace(
        "${generator.model}", params["generator"]["model"]))["stages"]
    import torch

    missing, cwd, path = [], os.getcwd(), list(sys.path)
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    try:
        os.chdir(repo)
        for name, stage in stages.items():
            if only is not None and name not in only:
                continue
            script = stage["cmd"].split()[-1]
            sys.path.insert(0, str(repo / Path(script).parent))  # as `python script` does
            with recording_params_reads(set()) as reads:
                runpy.run_path(script, run_name="__main__")
            declared = stage.get("params", [])
            missing += [f"{name}: {key}" for key in sorted(reads)
                        if not any(key == d or key.startswith(f"{d}.") for d in declared)]
    finally:
        os.chdir(cwd)
        sys.path[:] = path
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
    return missing
