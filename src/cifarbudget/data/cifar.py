"""Read a CIFAR-10/100 "python version" archive into arrays without executing anything from it.

The official files are protocol-2 pickles of dicts holding lists, strings and
numpy arrays. They are read in memory (nothing is extracted to disk), only after
every tar member has been checked to be a plain file inside the archive's folder,
and through an unpickler that can build numpy arrays and nothing else: a pickle
naming any other global is refused before anything runs.
"""
from __future__ import annotations

import io
import pickle
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
from tqdm import tqdm

from cifarbudget.data.prepared import PreparedData, channel_stats
from cifarbudget.errors import UserError


@dataclass(frozen=True)
class Layout:
    title: str
    root: str
    train: tuple[str, ...]
    test: tuple[str, ...]
    meta: str
    labels_key: str
    names_key: str

    def member(self, file: str) -> str:
        return f"{self.root}/{file}"

    @property
    def members(self) -> tuple[str, ...]:
        return tuple(self.member(f) for f in (*self.train, *self.test, self.meta))


# Keyed like data.name in params.yaml.
LAYOUTS = {
    "cifar100": Layout("CIFAR-100", "cifar-100-python", ("train",), ("test",), "meta",
                       "fine_labels", "fine_label_names"),
    "cifar10": Layout("CIFAR-10", "cifar-10-batches-py",
                      tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",),
                      "batches.meta", "labels", "label_names"),
}
IMAGE_BYTES = 3 * 32 * 32


class _ForbiddenGlobal(pickle.UnpicklingError):
    pass


def _encode_latin1(text: str, encoding: str = "latin1") -> bytes:
    """`_codecs.encode`, which protocol-2 pickles written by Python 3 use for bytes, latin1 only."""
    if encoding not in ("latin1", "latin-1"):
        raise _ForbiddenGlobal(f"_codecs.encode with the {encoding!r} codec")
    return text.encode("latin1")


# The function numpy pickles arrays with; numpy 2 moved its module, so both names map to it.
_RECONSTRUCT = np.ndarray.__reduce__(np.empty(0))[0]
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _encode_latin1,
}


class _ArrayUnpickler(pickle.Unpickler):
    """Resolves only the globals that pickled numpy arrays need; imports nothing."""

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise _ForbiddenGlobal(f"{module}.{name}") from None


def read_cifar_archive(path: str | Path, name: str) -> PreparedData:
    """The train and test sets of the archive at `path`, which must have the layout of `name`."""
    path = Path(path)
    layout = LAYOUTS[name]
    names, payloads = _read_members(path, set(layout.members))
    _check_layout(path, name, names)
    meta = _unpickle(payloads[layout.member(layout.meta)], layout.member(layout.meta))
    classes = _class_names(meta, layout)
    train_images, train_labels = _read_split(payloads, layout, layout.train, len(classes))
    test_images, test_labels = _read_split(payloads, layout, layout.test, len(classes))
    mean, std = channel_stats(train_images)
    return PreparedData(train_images=train_images, train_labels=train_labels,
                        test_images=test_images, test_labels=test_labels,
                        classes=classes, mean=mean, std=std, name=name)


def _read_members(path: Path, wanted: set[str]) -> tuple[set[str], dict[str, bytes]]:
    """Names of all regular files in the archive, and the bytes of those in `wanted`."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise UserError(f"{path}: missing; run `dvc repro download` first") from None
    names, payloads = set(), {}
    try:
        with open(path, "rb") as raw, \
                tqdm.wrapattr(raw, "read", total=size, desc=f"reading {path.name}") as stream, \
                tarfile.open(fileobj=stream, mode="r:gz") as tar:
            for member in tar:
                _check_member(path, member)
                if member.isfile():
                    member_name = PurePosixPath(member.name).as_posix()
                    names.add(member_name)
                    if member_name in wanted:
                        payloads[member_name] = tar.extractfile(member).read()
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise UserError(f"{path}: not a readable .tar.gz archive ({exc}); it is corrupt or truncated: "
                        f"delete it and rerun `dvc repro download`") from None
    return names, payloads


def _check_member(path: Path, member: tarfile.TarInfo) -> None:
    """Refuse members that could land outside an extraction folder, even though none is used."""
    parts = PurePosixPath(member.name).parts
    if member.name.startswith("/") or ".." in parts:
        problem = "points outside the archive's folder"
    elif member.issym() or member.islnk():
        problem = f"is a link to {member.linkname!r}"
    elif not (member.isfile() or member.isdir()):
        problem = "is a device or special file"
    else:
        return
    raise UserError(f"{path}: member {member.name!r} {problem}, which a CIFAR archive never has; "
                    f"refusing to read it: use an official CIFAR archive")


def _check_layout(path: Path, name: str, names: set[str]) -> None:
    layout = LAYOUTS[name]
    missing = [m for m in layout.members if m not in names]
    if not missing:
        return
    for other_name, other in LAYOUTS.items():
        if other_name != name and all(m in names for m in other.members):
            raise UserError(f"{path}: archive has the {other.title} layout but data.name is {name}; "
                            f"set data.name={other_name}")
    if any(n.startswith(layout.root + "/") for n in names):
        raise UserError(f"{path}: {missing[0]} is missing, so the {layout.title} archive is "
                        f"incomplete; delete it and rerun `dvc repro download`")
    raise UserError(f"{path}: not a {layout.title} python archive (expected {layout.root}/ with "
                    f"{', '.join(m.split('/')[-1] for m in layout.members)}); point data.source at "
                    f"a CIFAR python archive")


def _text(value):
    return value.decode("latin1") if isinstance(value, bytes) else value


def _unpickle(payload: bytes, member: str) -> dict:
    """A CIFAR file's dict, keys as str; official files need encoding="latin1"."""
    try:
        obj = _ArrayUnpickler(io.BytesIO(payload), encoding="latin1").load()
    except _ForbiddenGlobal as exc:
        raise UserError(f"{member}: the pickle asks for {exc}, which a CIFAR file never holds; "
                        f"refused without running anything: use an official CIFAR archive") from None
    except Exception as exc:  # a corrupt pickle can fail in any of a dozen ways
        raise UserError(f"{member}: not a readable CIFAR pickle ({type(exc).__name__}: {exc}); "
                        f"the archive is corrupt: delete it and rerun `dvc repro download`") from None
    if not isinstance(obj, dict):
        raise UserError(f"{member}: holds a {type(obj).__name__}, not the dict of a CIFAR file; "
                        f"point data.source at a CIFAR python archive")
    return {_text(k): v for k, v in obj.items()}


def _entry(batch: dict, key: str, member: str):
    if key not in batch:
        raise UserError(f"{member}: has no {key!r} entry (it has {', '.join(map(str, batch))}); "
                        f"point data.source at a CIFAR python archive")
    return batch[key]


def _class_names(meta: dict, layout: Layout) -> list[str]:
    member = layout.member(layout.meta)
    names = _entry(meta, layout.names_key, member)
    if not isinstance(names, list) or not names or not all(isinstance(n, (str, bytes)) for n in names):
        raise UserError(f"{member}: {layout.names_key} must be a non-empty list of class names; "
                        f"the archive is corrupt: delete it and rerun `dvc repro download`")
    return [_text(n) for n in names]


def _read_split(payloads: dict[str, bytes], layout: Layout, files: tuple[str, ...],
                num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (N, 32, 32, 3) images and int64 labels from the channel-major rows of `files`."""
    rows, labels = [], []
    for file in files:
        member = layout.member(file)
        batch = _unpickle(payloads[member], member)
        data = _entry(batch, "data", member)
        if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2
                and data.shape[1] == IMAGE_BYTES):
            found = (f"{data.dtype} of shape {data.shape}" if isinstance(data, np.ndarray)
                     else type(data).__name__)
            raise UserError(f"{member}: data is {found}, expected uint8 of shape (N, {IMAGE_BYTES}); "
                            f"point data.source at a CIFAR python archive")
        y = np.asarray(_entry(batch, layout.labels_key, member))
        if len(y) != len(data) or (len(y) and (y.ndim != 1 or y.dtype.kind not in "iu")):
            raise UserError(f"{member}: {len(data)} images but {layout.labels_key} is not a list of "
                            f"{len(data)} integer labels; the archive is inconsistent: rebuild or "
                            f"download it again")
        out_of_range = (y < 0) | (y >= num_classes)
        if out_of_range.any():
            raise UserError(f"{member}: label {y[out_of_range][0]} is outside 0..{num_classes - 1} "
                            f"(the meta lists {num_classes} classes); the archive is inconsistent: "
                            f"rebuild or download it again")
        rows.append(data)
        labels.append(y.astype(np.int64))
    images = np.concatenate(rows)
    if not len(images):
        raise UserError(f"{layout.member(files[0])}: holds no images; rebuild or download the "
                        f"archive again")
    # Each row is 1024 red, then 1024 green, then 1024 blue bytes.
    images = np.ascontiguousarray(images.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    return images, np.concatenate(labels)
