"""Reading CIFAR archives: both layouts, Python-2 pickles, validation, and nothing executed."""
import gzip
import io
import os
import pickle
import struct
import subprocess
import sys
import tarfile

import numpy as np
import pytest

from cifarbudget.data.cifar import MAX_ARCHIVE_BYTES, member_limit, read_cifar_archive
from cifarbudget.data.prepared import load_prepared, save_prepared
from cifarbudget.errors import UserError
from tests.conftest import build_archive, error_line


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
     r"cifar-100-python/test: 9 images but fine_labels is not a flat list of 9 integer labels"),
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


def test_a_pickle_with_a_persistent_id_is_refused_on_one_line(tmp_path, splits):
    persistent_id = b"\x80\x02X\x01\x00\x00\x00aQ."  # protocol 2: BINPERSID of 'a'
    archive = archive_of(tmp_path, "cifar100", splits,
                         dump=lambda d: persistent_id if "fine_label_names" in d else pickle.dumps(d))
    with pytest.raises(UserError, match=r"meta: not a readable CIFAR pickle \(UnpicklingError: A "
                                        r"load persistent id instruction was encountered, but no "
                                        r"persistent_load function was specified\.\); the archive"):
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


# --- bounded: archives declaring more than they hold, or more than a CIFAR archive holds ----------
_RECONSTRUCT = np.ndarray.__reduce__(np.empty(0))[0]  # what numpy pickles arrays with
HUGE_ROWS = 300_000  # 921 MB of images: far beyond the memory budget below


class ZeroStrides:
    """Pickles as numpy.ndarray called on one byte with zero strides: any shape, no data."""

    def __reduce__(self):
        return np.ndarray, ((HUGE_ROWS, 3072), np.dtype("u1"), b"\0", 0, (0, 0))


class ShapeWithoutData:
    """Pickles as numpy's _reconstruct of a shape whose state is never set: uninitialised."""

    def __reduce__(self):
        return _RECONSTRUCT, (np.ndarray, (HUGE_ROWS, 3072), b"b")


class ShapeLargerThanData:
    """Pickles as an array state whose shape asks for more bytes than it holds."""

    def __reduce__(self):
        return (_RECONSTRUCT, (np.ndarray, (0,), b"b"),
                (1, (HUGE_ROWS, 3072), np.dtype("u1"), False, b"\0" * 3072))


def with_train_data(data, labels=None):
    def edit(dicts):
        train = dicts["cifar-100-python/train"]
        train["data"] = data
        train["fine_labels"] = [0] * HUGE_ROWS if labels is None else labels
    return edit


@pytest.mark.parametrize("edit, message", [
    (with_train_data(ZeroStrides()), r"train: the pickle asks for a call of numpy\.ndarray"),
    (with_train_data(ShapeWithoutData()), r"train: data is an array without its data"),
    (with_train_data(ShapeLargerThanData()), r"train: not a readable CIFAR pickle .*an array of "
                                             r"shape \(300000, 3072\) .* holds 3072 bytes"),
    (set_entry("cifar-100-python/train", "fine_labels", 7), r"fine_labels is not a flat list"),
    (set_entry("cifar-100-python/train", "fine_labels", "0" * 20), r"is not a flat list of 20"),
    (set_entry("cifar-100-python/train", "fine_labels", lambda d: [10**5000] * 20),
     r"train: label far is outside 0\.\.2"),
])
def test_arrays_and_labels_without_their_data_are_refused(tmp_path, splits, edit, message):
    with pytest.raises(UserError, match=message):
        read_cifar_archive(archive_of(tmp_path, "cifar100", splits, edit=edit), "cifar100")


def test_deeply_nested_labels_are_refused(tmp_path, splits):
    # pickle.dumps cannot write this (it recurses): a placeholder is swapped for the opcodes
    # of [[[...[0]...]]] nested 100,000 deep.
    depth = 100_000
    nested = b"]" * (depth + 1) + b"K\x00" + b"a" * (depth + 1)
    placeholder = pickle.dumps("NESTED", protocol=2)[2:-1]  # without PROTO and STOP

    def dump(d):
        if "fine_labels" in d:
            d = {**d, "fine_labels": "NESTED"}
        return pickle.dumps(d, protocol=2).replace(placeholder, nested)

    archive = archive_of(tmp_path, "cifar100", splits, dump=dump)
    with pytest.raises(UserError, match=r"train: 20 images but fine_labels is not a flat list"):
        read_cifar_archive(archive, "cifar100")


@pytest.mark.parametrize("names, message", [
    (["apple", "bus", "apple"], r"class name 'apple' appears more than once"),
    (["apple", "b\x1b[31mus", "cat"], r"class name 'b\\x1b\[31mus' is not 1 to 100 printable"),
    (["apple", "b\0s", "cat"], r"class name 'b\\x00s' is not 1 to 100 printable"),
    (["apple", "", "cat"], r"class name '' is not 1 to 100 printable"),
    (["apple", "x" * 200_000, "cat"], r"class name 'x{40}' is not 1 to 100 printable"),
])
def test_class_names_must_be_unique_printable_and_short(tmp_path, splits, names, message):
    edit = set_entry("cifar-100-python/meta", "fine_label_names", names)
    with pytest.raises(UserError, match=r"cifar-100-python/meta: fine_label_names: " + message):
        read_cifar_archive(archive_of(tmp_path, "cifar100", splits, edit=edit), "cifar100")


def tar_header(name: str, size: int, kind=tarfile.REGTYPE, sparse_size: int = 0) -> bytes:
    """A GNU tar header; `sparse_size` makes it a sparse member expanding to that many bytes."""
    info = tarfile.TarInfo(name)
    info.size, info.type = size, kind
    header = bytearray(info.tobuf(tarfile.GNU_FORMAT))
    if sparse_size:  # one data region of `size` bytes at offset 0, then a hole
        header[386:410] = b"%011o\0%011o\0" % (0, size)
        header[483:495] = b"%011o\0" % sparse_size
        header[148:156] = b" " * 8
        header[148:156] = b"%06o\0 " % sum(header)
    return bytes(header)


def gzip_members(*parts: bytes) -> bytes:
    """A gzip file of one gzip member per part (a valid gzip stream, decompressed in order)."""
    return b"".join(gzip.compress(part, compresslevel=9, mtime=0) for part in parts)


ZEROS_16MB = bytes(16 << 20)


def gzip_bomb(declared: int) -> bytes:
    """A member named like the CIFAR-100 training file holding `declared` zero bytes: about
    1,000 times smaller compressed (the 16 MB gzip member is repeated, not recompressed)."""
    zeros = gzip.compress(ZEROS_16MB, compresslevel=9, mtime=0)
    return gzip_members(tar_header("cifar-100-python/train", declared)) + zeros * (declared >> 24)


def sparse_bomb(expanded: int) -> bytes:
    """A sparse member named like the CIFAR-100 training file expanding to `expanded` bytes."""
    return gzip_members(tar_header("cifar-100-python/train", 512, tarfile.GNUTYPE_SPARSE,
                                   expanded) + bytes(512 + 1024))


def test_members_larger_than_a_cifar_archive_holds_are_refused_before_reading(tmp_path):
    bomb = tmp_path / "bomb.tar.gz"
    bomb.write_bytes(gzip_members(tar_header("cifar-100-python/train", 3 << 30)))  # header only
    limit = member_limit("cifar-100-python/train")
    assert 155_000_000 < limit < 300_000_000  # the official file's ~155 MB, with the margins
    with pytest.raises(UserError, match=rf"member 'cifar-100-python/train' declares 3,221,225,472 "
                                        rf"bytes, more than the {limit:,} allowed"):
        read_cifar_archive(bomb, "cifar100")
    bomb.write_bytes(sparse_bomb(3 << 30))
    with pytest.raises(UserError, match=r"member 'cifar-100-python/train' is a sparse file"):
        read_cifar_archive(bomb, "cifar100")


def test_an_archive_larger_than_a_cifar_archive_is_refused_before_reading(tmp_path):
    big = tmp_path / "big.tar.gz"
    with open(big, "wb") as f:
        f.truncate(MAX_ARCHIVE_BYTES + 1)  # sparse on disk: no space used
    with pytest.raises(UserError, match=r"big\.tar\.gz: .* bytes, more than a CIFAR archive"):
        read_cifar_archive(big, "cifar100")


def test_decompressing_past_the_total_limit_stops(tmp_path, splits, monkeypatch):
    from cifarbudget.data import cifar

    monkeypatch.setattr(cifar, "MAX_TOTAL_BYTES", 20_000)
    with pytest.raises(UserError, match=r"decompresses to more than 20,000 bytes"):
        read_cifar_archive(archive_of(tmp_path, "cifar100", splits), "cifar100")


def test_repeated_and_too_many_members_are_refused(tmp_path, splits):
    dicts = layout_dicts("cifar100", *splits, CLASSES)
    files = {m: pickle.dumps(d, protocol=2) for m, d in dicts.items()}
    twice = tarfile.TarInfo("cifar-100-python/meta")  # a second, empty meta after the first
    archive = write_tar(tmp_path / "archive.tar.gz", files, extra_members=[twice])
    with pytest.raises(UserError, match=r"two members named 'cifar-100-python/meta'"):
        read_cifar_archive(archive, "cifar100")
    folders = [member(f"cifar-100-python/d{i}", tarfile.DIRTYPE) for i in range(40)]
    archive = write_tar(tmp_path / "archive.tar.gz", files, extra_members=folders)
    with pytest.raises(UserError, match=r"member 'cifar-100-python/d\d+' is one more than the 32"):
        read_cifar_archive(archive, "cifar100")


# The budget: a small multiple of the official CIFAR-100 archive (169 MB), on top of what the
# interpreter and its imports take.
MEMORY_BUDGET = 4 * 169_001_437
READ_UNDER_BUDGET = f"""
import re, resource, sys
from cifarbudget.data.cifar import MAX_ARCHIVE_BYTES, member_limit, read_cifar_archive
from cifarbudget.stage import run_stage

status = open("/proc/self/status").read()
used = int(re.search(r"VmSize:\\s+(\\d+) kB", status).group(1)) * 1024
resource.setrlimit(resource.RLIMIT_AS, (used + {MEMORY_BUDGET}, resource.RLIM_INFINITY))
run_stage(lambda: read_cifar_archive(sys.argv[1], "cifar100"))
"""


# A pickle declaring 8 GiB of bytes (BINBYTES8) and holding 1,000.
DECLARES_8_GIB = b"\x80\x04\x8e" + struct.pack("<Q", 8 << 30) + bytes(1000)


def framed(body: bytes) -> bytes:
    """Protocol 4: the body inside one FRAME, which the unpickler reads whole before parsing."""
    return b"\x80\x04\x95" + struct.pack("<Q", len(body)) + body


@pytest.mark.parametrize("pickled", [
    b"\x80\x04\x8e" + struct.pack("<Q", 1 << 40) + bytes(1000),         # BINBYTES8
    framed(b"\x8d" + struct.pack("<Q", 1 << 40) + bytes(1000)),          # BINUNICODE8 in a frame
    b"\x80\x02]q\x00(K\x01T" + struct.pack("<i", 2**31 - 1) + bytes(10),  # BINSTRING after a list
], ids=["binbytes8", "framed-binunicode8", "binstring"])
def test_a_string_declared_longer_than_its_member_is_refused_before_it_is_allocated(
        tmp_path, pickled):
    archive = write_tar(tmp_path / "hostile.tar.gz", {"cifar-100-python/train": pickled})
    with pytest.raises(UserError, match=r"cifar-100-python/train: the pickle declares a string of "
                                        r"[\d,]+ bytes in a member of [\d,]+; the archive is corrupt"):
        read_cifar_archive(archive, "cifar100")


def hostile_archive(path, dicts_edit=None, raw: bytes | None = None):
    if raw is not None:
        path.write_bytes(raw)
        return path
    dicts = layout_dicts("cifar100", split(20, 3, 1), split(9, 3, 2), CLASSES)
    dicts_edit(dicts)
    return write_tar(path, {m: pickle.dumps(d, protocol=2) for m, d in dicts.items()})


@pytest.mark.parametrize("make", [
    lambda path: hostile_archive(path, with_train_data(ZeroStrides())),
    lambda path: hostile_archive(path, with_train_data(ShapeWithoutData())),
    lambda path: hostile_archive(path, with_train_data(ShapeLargerThanData())),
    lambda path: hostile_archive(path, raw=sparse_bomb(3 << 30)),
    lambda path: hostile_archive(path, raw=gzip_bomb(1536 << 20)),
    lambda path: write_tar(path, {"cifar-100-python/train": DECLARES_8_GIB}),
], ids=["zero-strides", "shape-without-data", "shape-larger-than-data", "sparse", "gzip-bomb",
        "declared-bytes"])
def test_hostile_archives_fail_with_one_line_within_the_memory_budget(tmp_path, make):
    archive = make(tmp_path / "hostile.tar.gz")
    assert archive.stat().st_size < 2 << 20  # a tiny file
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", READ_UNDER_BUDGET, str(archive)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert f"{archive}" in error_line(proc) or "cifar-100-python/train" in error_line(proc)


# --- the prepared data: tampered files are one-line errors, never unbounded reads ----------------
def test_prepared_arrays_declaring_more_than_the_file_holds_are_refused(tmp_path):
    from tests.conftest import write_prepared

    folder = write_prepared(tmp_path / "prepared")
    header = np.lib.format.header_data_from_array_1_0(np.zeros((1, 32, 32, 3), np.uint8))
    with open(folder / "train_images.npy", "wb") as f:  # 300,000 images in the header, none after
        np.lib.format.write_array_header_1_0(f, {**header, "shape": (300_000, 32, 32, 3)})
    with pytest.raises(UserError, match=r"train_images\.npy: not a readable array file .*rerun "
                                        r"`dvc repro prepare`"):
        load_prepared(folder)


@pytest.mark.parametrize("file, content, message", [
    ("test_labels.npy", np.zeros(64, np.float32),
     r"holds float32 of shape \(64,\), expected int64"),
    ("test_labels.npy", np.full(64, 9, np.int64), r"labels outside 0\.\.3"),
    ("train_labels.npy", np.zeros(3, np.int64), r"3 labels for 256 images"),
    ("meta.json", "[1, 2]", r"meta\.json: holds a list, not an object"),
    ("meta.json", '{"name": "cifar100", "classes": ["a", "a", "b", "c"]}',
     r"class name 'a' appears more than once"),
    ("stats.json", '{"mean": [0, 0], "std": [1, 1, 1]}', r"needs a mean and a std of 3 numbers"),
    ("stats.json", "{", r"stats\.json: not valid JSON"),
])
def test_tampered_prepared_files_are_one_line_errors(tmp_path, file, content, message):
    from tests.conftest import write_prepared

    folder = write_prepared(tmp_path / "prepared")
    if isinstance(content, str):
        (folder / file).write_text(content)
    else:
        np.save(folder / file, content)
    with pytest.raises(UserError, match=message):
        load_prepared(folder)


@pytest.mark.slow
def test_a_full_size_archive_is_read_within_the_memory_budget(tmp_path):
    """The budget the hostile archives are held to suffices for an archive of the official size
    (pickled byte for byte as the official files, by Python 2)."""
    rng = np.random.default_rng(0)

    def split_file(n):
        return {"filenames": [f"image_{i:06d}.png" for i in range(n)], "batch_label": "batch",
                "fine_labels": rng.integers(0, 100, n).tolist(), "coarse_labels": [0] * n,
                "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8)}

    archive = tmp_path / "full.tar.gz"
    with tarfile.open(archive, "w:gz", compresslevel=1) as tar:
        for name, make in (("meta", lambda: {"fine_label_names": [f"c{i}" for i in range(100)]}),
                           ("train", lambda: split_file(50_000)),
                           ("test", lambda: split_file(10_000))):
            payload = py2_pickle(make())
            info = tarfile.TarInfo(f"cifar-100-python/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
            del payload
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", READ_UNDER_BUDGET, str(archive)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
