"""The download and prepare stage scripts: outputs, one-line errors, exit codes, earlier outputs kept."""
import hashlib
import json
import shutil
import sys

import numpy as np
import pytest

from cifarbudget.data.prepared import load_prepared
from tests.conftest import (REPO, build_archive, error_line, run, set_params, snapshot,
                            write_prepared)


def run_script(stage: str, cwd):
    return run([sys.executable, str(REPO / "stages" / f"{stage}.py")], cwd, check=False, timeout=300)


@pytest.fixture
def workdir(tmp_path):
    """A folder to run stage scripts in, holding params.yaml and earlier prepare outputs."""
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    write_prepared(tmp_path / "data" / "prepared")
    (tmp_path / "plots" / "data").mkdir(parents=True)
    (tmp_path / "plots" / "data" / "augmentations.png").write_bytes(b"earlier figure")
    return tmp_path


def test_download_of_a_missing_local_source_fails_cleanly(workdir):
    set_params(workdir, {"data.source": str(workdir / "nowhere.tar.gz"), "data.md5": "0" * 32})
    line = error_line(run_script("download", workdir))
    assert line == (f"error: data.source: cannot read {workdir / 'nowhere.tar.gz'} (No such file or "
                    f"directory); give the path of an existing archive or an http(s) URL")
    assert not list((workdir / "data" / "raw").iterdir())  # no archive, no temporary file


def archive_with_the_cifar10_layout(workdir):
    build_archive(workdir / "data/raw/archive.tar.gz", layout="cifar10")


def corrupt_archive(workdir):
    (workdir / "data/raw").mkdir()
    (workdir / "data/raw/archive.tar.gz").write_bytes(b"\x1f\x8b not really gzip")


def unknown_dataset_name(workdir):
    set_params(workdir, {"data.name": "mnist"})


def a_file_where_the_plots_folder_goes(workdir):
    build_archive(workdir / "data/raw/archive.tar.gz")
    shutil.rmtree(workdir / "plots/data")
    (workdir / "plots/data").write_text("in the way")


class ZeroStrides:
    """Pickles as numpy.ndarray called on one byte with zero strides: 300,000 images, no data."""

    def __reduce__(self):
        return np.ndarray, ((300_000, 3072), np.dtype("u1"), b"\0", 0, (0, 0))


def archive_declaring_images_it_does_not_hold(workdir):
    def edit(files):
        files["cifar-100-python/train"].update(data=ZeroStrides(), fine_labels=[0] * 300_000)
    build_archive(workdir / "data/raw/archive.tar.gz", edit=edit)


def archive_with_an_escape_sequence_in_a_class_name(workdir):
    def edit(files):
        files["cifar-100-python/meta"]["fine_label_names"][1] = "\x1b[2Jcleared"
    build_archive(workdir / "data/raw/archive.tar.gz", edit=edit)


def archive_with_labels_as_an_int(workdir):
    def edit(files):
        files["cifar-100-python/test"]["fine_labels"] = 7
    build_archive(workdir / "data/raw/archive.tar.gz", edit=edit)


@pytest.mark.parametrize("setup, message", [
    (archive_with_the_cifar10_layout, "error: data/raw/archive.tar.gz: archive has the CIFAR-10 layout "
                                      "but data.name is cifar100; set data.name=cifar10"),
    (corrupt_archive, "error: data/raw/archive.tar.gz: not a readable .tar.gz archive"),
    (unknown_dataset_name, "error: data.name: 'mnist' is not allowed; choose one of cifar10, cifar100"),
    (a_file_where_the_plots_folder_goes, "error: cannot write plots/data/augmentations.png"),
    (archive_declaring_images_it_does_not_hold,
     "error: cifar-100-python/train: the pickle asks for a call of numpy.ndarray"),
    # Printed escaped: the raw sequence would clear the terminal.
    (archive_with_an_escape_sequence_in_a_class_name,
     "error: cifar-100-python/meta: fine_label_names: class name '\\x1b[2Jcleared' is not 1 to "
     "100 printable characters"),
    (archive_with_labels_as_an_int,
     "error: cifar-100-python/test: 80 images but fine_labels is not a flat list of 80"),
], ids=["cifar10-layout", "corrupt-archive", "unknown-name", "output-blocked", "zero-strides",
        "escape-in-class-name", "labels-an-int"])
def test_prepare_bad_input_is_one_line_and_keeps_earlier_outputs(workdir, setup, message):
    setup(workdir)
    before = {k: v for k, v in snapshot(workdir).items() if k.parts[0] in ("data", "plots")}
    line = error_line(run_script("prepare", workdir))
    assert line.startswith(message)
    after = snapshot(workdir)
    assert all(after[k] == v for k, v in before.items())
    assert sorted(p.name for p in (workdir / "data").iterdir()) == sorted(
        p for p in ("prepared", "raw") if (workdir / "data" / p).exists())  # no temporary folders


@pytest.mark.slow
def test_dvc_repro_prepare_from_a_local_archive(repo_copy, tmp_path):
    archive = tmp_path / "mine.tar.gz"
    md5 = build_archive(archive, layout="cifar100", num_classes=5, n_train=300, n_test=100)
    set_params(repo_copy, {"data.source": str(archive), "data.md5": md5, "augment.cutout": 8})
    out = run(["dvc", "repro", "prepare"], repo_copy)
    assert "Running stage 'download'" in out.stdout and "Running stage 'prepare'" in out.stdout
    assert "5 classes (class_0, class_1, class_2, class_3, class_4)" in out.stdout

    raw = repo_copy / "data" / "raw" / "archive.tar.gz"
    assert hashlib.md5(raw.read_bytes()).hexdigest() == md5
    data = load_prepared(repo_copy / "data" / "prepared")
    assert data.train_images.shape == (300, 32, 32, 3) and data.test_images.shape == (100, 32, 32, 3)
    assert data.classes == [f"class_{i}" for i in range(5)] and data.name == "cifar100"
    pixels = data.train_images.reshape(-1, 3) / 255.0
    np.testing.assert_allclose(data.mean, pixels.mean(0), rtol=1e-9)
    np.testing.assert_allclose(data.std, pixels.std(0), rtol=1e-9)
    meta = json.loads((repo_copy / "data" / "prepared" / "meta.json").read_text())
    assert (meta["train_count"], meta["test_count"]) == (300, 100)
    assert (repo_copy / "plots" / "data" / "augmentations.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    status = run(["dvc", "status", "prepare"], repo_copy)
    assert "up to date" in status.stdout
