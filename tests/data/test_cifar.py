"""Reading CIFAR archives: both layouts, Python-2 pickles, validation, and nothing executed."""
import io
import pickle
import struct
import tarfile

import numpy as np
import pytest

from cifarbudget.data.cifar import read_cifar_archive
from cifarbudget.data.prepared import load_prepared, save_prepared
from cifarbudget.errors import UserError
from tests.conftest import build_archive


# --- Python-2 style protocol-2 pickles, byte for byte as the official files ----------------------
def _py2_str(s):
    b = s.encode("latin1") if isinstance(s, str) else s
    return b"U" + bytes([len(b)]) + b if len(b) < 256 else b"T" + struct.pack("<I", len(b)) + b


def _py2_int(i):
    return b"K" + bytes([i]) if 0 <= i < 256 else b"J" + struct.pack("<i", i)


def _py2_tuple(items):
    return b"(" + b"".join(items) + b"t"


def _py2_value(v):
    if isinstance(v, np.ndarray):  # uint8 array, pickled by numpy 1 under Python 2
        dtype = (b"cnumpy\ndtype\n" + _py2_tuple([_py2_str("u1"), _py2_int(0), _py2_int(1)]) + b"R"
                 + _py2_tuple([_py2_int(3), _py2_str("|"), b"N", b"N", b"N", _py2_int(-1),
                               _py2_int(-1), _py2_int(0)]) + b"b")
        head = (b"cnumpy.core.multiarray\n_reconstruct\n"
                + _py2_tuple([b"cnumpy\nndarray\n", _py2_tuple([_py2_int(0)]), _py2_str("b")]) + b"R")
        state = _py2_tuple([_py2_int(1), _py2_tuple([_py2_int(d) for d in v.shape]), dtype,
                            b"\x89", _py2_str(v.tobytes())])
        return head + state + b"b"
    if isinstance(v, str):
        return _py2_str(v)
    if isinstance(v, int):
        return _py2_int(v)
    return b"](" + b"".join(_py2_value(x) for x in v) + b"e"  # a list


def py2_pickle(d: dict) -> bytes:
    return b"\x80\x02}(" + b"".join(_py2_str(k) + _py2_value(v) for k, v in d.items()) + b"u."


# --- archives --------------------------------------------------------------------------------------
def rows_of(images: np.ndarray) -> np.ndarray:
    """uint8 (N, 32, 32, 3) -> the official channel-major (N, 3072) rows."""
    return images.transpose(0, 3, 1, 2).reshape(len(images), 3072)


def split(n: int, num_classes: int, seed: int):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), list(rng.integers(0, num_classes, n).tolist())


def layout_dicts(layout: str, train, test, classes) -> dict[str, dict]:
    """{member: dict} of an archive in `layout` holding (images, labels) train and test splits."""
    if layout == "cifar100":
        meta = {"fine_label_names": classes, "coarse_label_names": ["all"]}
        files = {"cifar-100-python/meta": meta}
        for name, (x, y) in (("train", train), ("test", test)):
            files[f"cifar-100-python/{name}"] = {"batch_label": name, "fine_labels": y,
                                                 "coarse_labels": [0] * len(y), "data": rows_of(x)}
        return files
    files = {"cifar-10-batches-py/batches.meta": {"label_names": classes, "num_vis": 3072}}
    bounds = np.linspace(0, len(train[1]), 6).astype(int)
    for b in range(5):
        s = slice(bounds[b], bounds[b + 1])
        files[f"cifar-10-batches-py/data_batch_{b + 1}"] = {
            "batch_label": f"training batch {b + 1} of 5", "labels": train[1][s], "data": rows_of(train[0][s])}
    files["cifar-10-batches-py/test_batch"] = {"batch_label": "testing batch 1 of 1", "labels": test[1],
                                               "data": rows_of(test[0])}
    return files


def write_tar(path, files: dict[str, bytes], extra_members=()):
    with tarfile.open(path, "w:gz") as tar:
        for name, payload in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
        for info in extra_members:  # after the valid files: every member must be checked
            tar.addfile(info)
    return path


CLASSES = ["apple", "bus", "cat"]


@pytest.fixture
def splits():
    return split(20, len(CLASSES), seed=1), split(9, len(CLASSES), seed=2)


def archive_of(tmp_path, layout, splits, dump=lambda d: pickle.dumps(d, protocol=2), edit=None):
    dicts = layout_dicts(layout, *splits, CLASSES)
    if edit:
        edit(dicts)
    return write_tar(tmp_path / "archive.tar.gz", {m: dump(d) for m, d in dicts.items()})


# --- reading ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("layout", ["cifar100", "cifar10"])
def test_reads_both_layouts_from_conftest_archives(tmp_path, layout):
    build_archive(tmp_path / "a.tar.gz", layout=layout, num_classes=4, n_train=200, n_test=80)
    data = read_cifar_archive(tmp_path / "a.tar.gz", layout)
    assert data.train_images.shape == (200, 32, 32, 3) and data.train_images.dtype == np.uint8
    assert data.test_images.shape == (80, 32, 32, 3)
    assert data.train_labels.dtype == data.test_labels.dtype == np.int64
    assert data.classes == ["class_0", "class_1", "class_2", "class_3"] and data.name == layout
    assert np.array_equal(data.test_labels, np.arange(80) % 4)


def test_class_count_comes_from_the_meta_not_from_the_layout(tmp_path):
    build_archive(tmp_path / "a.tar.gz", layout="cifar100", num_classes=10, n_train=100, n_test=20)
    data = read_cifar_archive(tmp_path / "a.tar.gz", "cifar100")
    assert data.num_classes == 10 and data.train_labels.max() <= 9


@pytest.mark.parametrize("layout", ["cifar100", "cifar10"])
def test_python2_pickles_give_the_exact_pixels_and_labels(tmp_path, layout, splits):
    (xtr, ytr), (xte, yte) = splits
    archive = archive_of(tmp_path, layout, splits, dump=py2_pickle)
    with tarfile.open(archive) as tar:  # the numpy-1 global, as in the official files
        assert b"cnumpy.core.multiarray\n_reconstruct\n" in tar.extractfile(tar.getmembers()[-1]).read()
    data = read_cifar_archive(archive, layout)
    assert np.array_equal(data.train_images, xtr) and np.array_equal(data.test_images, xte)
    assert data.train_labels.tolist() == ytr and data.test_labels.tolist() == yte
    assert data.classes == CLASSES


def test_bytes_keys_and_names_are_normalised(tmp_path, splits):
    def to_bytes(d):
        return {k.encode(): [n.encode() for n in v] if k.endswith("names") else v for k, v in d.items()}
    archive = archive_of(tmp_path, "cifar100", splits, dump=lambda d: pickle.dumps(to_bytes(d), protocol=3))
    data = read_cifar_archive(archive, "cifar100")
    assert data.classes == CLASSES and len(data.train_labels) == 20


def test_stats_are_per_channel_over_the_training_set_only(tmp_path):
    rng = np.random.default_rng(0)
    xtr = rng.integers(0, 256, (30, 32, 32, 3), dtype=np.uint8)
    xtr[..., 2] //= 4  # channels differ, so a mix-up shows
    xte = np.full((10, 32, 32, 3), 255, np.uint8)  # would pull the mean up if it were included
    archive = archive_of(tmp_path, "cifar10", ((xtr, [0] * 30), (xte, [1] * 10)))
    data = read_cifar_archive(archive, "cifar10")
    pixels = xtr.reshape(-1, 3) / 255.0
    np.testing.assert_allclose(data.mean, pixels.mean(0), rtol=1e-12)
    np.testing.assert_allclose(data.std, pixels.std(0), rtol=1e-12)


def test_what_is_saved_loads_back_identically(tmp_path, splits):
    data = read_cifar_archive(archive_of(tmp_path, "cifar100", splits), "cifar100")
    save_prepared(data, tmp_path / "prepared")
    loaded = load_prepared(tmp_path / "prepared")
    for name in ("train_images", "train_labels", "test_images", "test_labels"):
        assert np.array_equal(getattr(loaded, name), getattr(data, name))
        assert getattr(loaded, name).dtype == getattr(data, name).dtype
    assert (loaded.classes, loaded.name, loaded.mean, loaded.std) == (CLASSES, "cifar100", data.mean, data.std)


# --- bad archives ----------------------------------------------------------------------------------
@pytest.mark.parametrize("layout, name, message", [
    ("cifar10", "cifar100", r"archive has the CIFAR-10 layout but data\.name is cifar100; set data\.name=cifar10$"),
    ("cifar100", "cifar10", r"archive has the CIFAR-100 layout but data\.name is cifar10; set data\.name=cifar100$"),
])
def test_a_layout_mismatch_names_the_fix(tmp_path, splits, layout, name, message):
    with pytest.raises(UserError, match=message):
        read_cifar_archive(archive_of(tmp_path, layout, splits), name)


def test_an_unknown_layout_and_an_incomplete_archive(tmp_path, splits):
    other = write_tar(tmp_path / "other.tar.gz", {"images/train": b"x"})
    with pytest.raises(UserError, match=r"not a CIFAR-100 python archive \(expected cifar-100-python/ with "
                                        r"train, test, meta\); point data\.source at a CIFAR python archive"):
        read_cifar_archive(other, "cifar100")
    archive = archive_of(tmp_path, "cifar10", splits,
                         edit=lambda d: d.pop("cifar-10-batches-py/data_batch_3"))
    with pytest.raises(UserError, match=r"cifar-10-batches-py/data_batch_3 is missing, so the CIFAR-10 "
                                        r"archive is incomplete; delete it and rerun `dvc repro download`"):
        read_cifar_archive(archive, "cifar10")


def set_entry(member, key, value):
    def edit(dicts):
        dicts[member][key] = value(dicts[member]) if callable(value) else value
    return edit


@pytest.mark.parametrize("edit, message", [
    (set_entry("cifar-100-python/train", "fine_labels", lambda d: d["fine_labels"][:-1] + [3]),
     r"cifar-100-python/train: label 3 is outside 0\.\.2 \(the meta lists 3 classes\)"),
    (set_entry("cifar-100-python/test", "fine_labels", lambda d: [-1] + d["fine_labels"][1:]),
     r"cifar-100-python/test: label -1 is outside 0\.\.2"),
    (set_entry("cifar-100-python/train", "data", lambda d: d["data"].astype(np.float32)),
     r"cifar-100-python/train: data is float32 of shape \(20, 3072\), expected uint8 of shape \(N, 3072\)"),
    (set_entry("cifar-100-python/train", "data", lambda d: d["data"][:, :1024]),
     r"data is uint8 of shape \(20, 1024\), expected uint8"),
    (set_entry("cifar-100-python/test", "fine_labels", lambda d: d["fine_labels"][:-2]),
     r"cifar-100-python/test: 9 images but fine_labels is not a list of 9 integer labels"),
    (set_entry("cifar-100-python/meta", "fine_label_names", []),
     r"cifar-100-python/meta: fine_label_names must be a non-empty list of class names"),
    (lambda d: d["cifar-100-python/train"].pop("data"),
     r"cifar-100-python/train: has no 'data' entry \(it has batch_label, fine_labels, coarse_labels\)"),
])
def test_inconsistent_contents_are_named(tmp_path, splits, edit, message):
    with pytest.raises(UserError, match=message):
        read_cifar_archive(archive_of(tmp_path, "cifar100", splits, edit=edit), "cifar100")


def test_corrupt_truncated_and_missing_archives(tmp_path, splits):
    fix = r"it is corrupt or truncated: delete it and rerun `dvc repro download`$"
    garbage = tmp_path / "garbage.tar.gz"
    garbage.write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(UserError, match=r"garbage\.tar\.gz: not a readable \.tar\.gz archive .*" + fix):
        read_cifar_archive(garbage, "cifar100")
    whole = archive_of(tmp_path, "cifar100", splits).read_bytes()
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(whole[:len(whole) // 2])
    with pytest.raises(UserError, match=r"truncated\.tar\.gz: not a readable \.tar\.gz archive .*" + fix):
        read_cifar_archive(truncated, "cifar100")
    with pytest.raises(UserError, match=r"nowhere\.tar\.gz: missing; run `dvc repro download` first"):
        read_cifar_archive(tmp_path / "nowhere.tar.gz", "cifar100")


def test_a_corrupt_pickle_is_named(tmp_path, splits):
    archive = archive_of(tmp_path, "cifar100", splits,
                         dump=lambda d: b"\x80\x02}(garbage" if "fine_label_names" in d else pickle.dumps(d))
    with pytest.raises(UserError, match=r"cifar-100-python/meta: not a readable CIFAR pickle .*the archive "
                                        r"is corrupt"):
        read_cifar_archive(archive, "cifar100")


# --- nothing from the archive runs, nothing escapes its folder --------------------------------------
def malicious_pickle(module: str, name: str, argument: str) -> bytes:
    """A protocol-2 pickle that calls module.name(argument) when loaded by a plain unpickler."""
    return (b"\x80\x02c" + f"{module}\n{name}\n".encode() + b"X" + struct.pack("<I", len(argument))
            + argument.encode() + b"\x85R.")


@pytest.mark.parametrize("module, name, code", [
    ("os", "system", "touch {marker}"),
    ("posix", "system", "touch {marker}"),
    ("builtins", "eval", "open({marker!r}, 'w').close()"),
    ("builtins", "exec", "open({marker!r}, 'w').close()"),
])
def test_a_malicious_pickle_is_refused_without_running(tmp_path, splits, module, name, code):
    marker = tmp_path / "pwned"
    payload = malicious_pickle(module, name, code.format(marker=str(marker)))
    pickle.loads(payload)  # the payload is real: a plain unpickler runs it
    assert marker.exists()
    marker.unlink()
    archive = archive_of(tmp_path, "cifar100", splits,
                         dump=lambda d: payload if "fine_label_names" in d else pickle.dumps(d, protocol=2))
    with pytest.raises(UserError, match=fr"cifar-100-python/meta: the pickle asks for {module}\.{name}, which "
                                        r"a CIFAR file never holds; refused without running anything"):
        read_cifar_archive(archive, "cifar100")
    assert not marker.exists()


def test_bytes_may_only_be_decoded_as_latin1(tmp_path, splits):
    payload = b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00xX\x04\x00\x00\x00zlib\x86R."
    archive = archive_of(tmp_path, "cifar100", splits,
                         dump=lambda d: payload if "fine_label_names" in d else pickle.dumps(d, protocol=2))
    with pytest.raises(UserError, match=r"asks for _codecs\.encode with the 'zlib' codec"):
        read_cifar_archive(archive, "cifar100")


def member(name, kind=tarfile.REGTYPE, linkname=""):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info


@pytest.mark.parametrize("bad, problem", [
    (member("../evil"), "points outside the archive's folder"),
    (member("cifar-100-python/../../evil"), "points outside the archive's folder"),
    (member("/tmp/evil"), "points outside the archive's folder"),
    (member("cifar-100-python/link", tarfile.SYMTYPE, "/etc/passwd"), "is a link to '/etc/passwd'"),
    (member("cifar-100-python/hard", tarfile.LNKTYPE, "cifar-100-python/train"), "is a link to"),
    (member("cifar-100-python/tty", tarfile.CHRTYPE), "is a device or special file"),
])
def test_members_escaping_the_folder_are_refused(tmp_path, splits, bad, problem):
    files = {m: pickle.dumps(d, protocol=2) for m, d in layout_dicts("cifar100", *splits, CLASSES).items()}
    archive = write_tar(tmp_path / "archive.tar.gz", files, extra_members=[bad])
    with tarfile.open(archive) as tar:
        assert tar.getmembers()[-1].name == bad.name  # the archive really holds the bad name
    with pytest.raises(UserError, match=f"member '{bad.name}' {problem}.*refusing to read it"):
        read_cifar_archive(archive, "cifar100")
    assert not (tmp_path.parent / "evil").exists()
