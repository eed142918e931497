"""Read a CIFAR-10/100 "python version" archive into arrays without executing anything from it.

The official files are protocol-2 pickles of dicts holding lists, strings and
numpy arrays. They are read in memory (nothing is extracted to disk), only after
every tar member has been checked to be a plain file inside the archive's folder,
and through an unpickler that can build numpy arrays and nothing else: a pickle
naming any other global is refused before anything runs.

Nothing is read unbounded: the archive's size, each member's size and the decompressed
total are capped from the official archives' layouts (with a margin) before a byte is
read, and an array is built only from data the pickle holds (never from a shape alone),
so memory stays within a small multiple of the official archive's size on any input.
"""
from __future__ import annotations

import gzip
import math
import pickle
import pickletools
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
from tqdm import tqdm

from cifarbudget.data.prepared import PreparedData, channel_stats, check_class_names
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
    train_images: int  # in the official archive
    test_images: int

    def member(self, file: str) -> str:
        return f"{self.root}/{file}"

    @property
    def members(self) -> tuple[str, ...]:
        return tuple(self.member(f) for f in (*self.train, *self.test, self.meta))

    def data_file_limits(self) -> dict[str, int]:
        """{member: most bytes it may hold} for the data files: the official image count per
        file with a margin."""
        return {self.member(f): int(images / len(files) * PER_IMAGE_BYTES * MARGIN)
                for files, images in ((self.train, self.train_images),
                                      (self.test, self.test_images)) for f in files}


# Keyed like data.name in params.yaml.
LAYOUTS = {
    "cifar100": Layout("CIFAR-100", "cifar-100-python", ("train",), ("test",), "meta",
                       "fine_labels", "fine_label_names", 50_000, 10_000),
    "cifar10": Layout("CIFAR-10", "cifar-10-batches-py",
                      tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",),
                      "batches.meta", "labels", "label_names", 50_000, 10_000),
}
IMAGE_BYTES = 3 * 32 * 32
# Size limits, from the official archives: a data file holds per image its 3,072 bytes plus
# about 40 of labels and file name; meta files and readme are a few KB; there are <= 9 members.
# Pickles written by Python 3 with protocol 2 spell each byte above 127 in two: half more.
PER_IMAGE_BYTES = IMAGE_BYTES * 3 // 2 + 256
MARGIN = 1.1
SMALL_MEMBER_BYTES = 256 << 10
MAX_MEMBERS = 32
READ_CHUNK = 1 << 20
# Any layout's data file may be met (a mismatch is named once all names are known).
DATA_FILE_LIMITS = {member: limit for layout in LAYOUTS.values()
                    for member, limit in layout.data_file_limits().items()}
# The decompressed archive, tar headers included; and the .tar.gz, which images barely
# shrink (gzip adds < 1% to incompressible data).
MAX_TOTAL_BYTES = (max(sum(layout.data_file_limits().values()) for layout in LAYOUTS.values())
                   + MAX_MEMBERS * SMALL_MEMBER_BYTES)
MAX_ARCHIVE_BYTES = MAX_TOTAL_BYTES * 101 // 100


def member_limit(member: str) -> int:
    """The most bytes `member` may hold: a data file's limit, SMALL_MEMBER_BYTES for anything
    else (meta, readme)."""
    return DATA_FILE_LIMITS.get(member, SMALL_MEMBER_BYTES)


class _ForbiddenGlobal(pickle.UnpicklingError):
    pass


def _encode_latin1(text: str, encoding: str = "latin1") -> bytes:
    """`_codecs.encode`, which protocol-2 pickles written by Python 3 use for bytes, latin1 only."""
    if encoding not in ("latin1", "latin-1"):
        raise _ForbiddenGlobal(f"_codecs.encode with the {encoding!r} codec")
    return text.encode("latin1")


class _NdarrayName:
    """Stands for numpy.ndarray, which a pickled array names as the type to rebuild; calling
    it would make an array whose data the pickle need not hold (a shape over one byte with
    zero strides), so a call is refused."""
    __slots__ = ()  # nothing a pickle could set on it

    def __call__(self, *args, **kwargs):
        raise _ForbiddenGlobal("a call of numpy.ndarray")


_NDARRAY = _NdarrayName()


class _PickledArray:
    """What a pickled array unpickles to: numpy's `_reconstruct` gives an empty shell, then
    its state (shape, dtype, data) is set. The array is made from that data only once its
    length matches the shape: never an uninitialised or oversized array from a shape alone."""

    def __init__(self, subtype, shape, dtype_code):
        if subtype is not _NDARRAY:
            raise _ForbiddenGlobal(f"_reconstruct of {type(subtype).__name__}")
        self.array: np.ndarray | None = None

    def __setstate__(self, state) -> None:
        if not (isinstance(state, tuple) and len(state) == 5):
            raise pickle.UnpicklingError("an array state that is not numpy's")
        _, shape, dtype, fortran_order, data = state
        if isinstance(data, str):  # written by Python 2: the bytes as a latin1 str
            data = data.encode("latin1")
        if not (isinstance(dtype, np.dtype) and not dtype.hasobject and dtype.itemsize
                and isinstance(shape, tuple) and all(type(n) is int and n >= 0 for n in shape)
                and isinstance(data, bytes)):
            raise pickle.UnpicklingError("an array state that is not numpy's")
        if math.prod(shape) * dtype.itemsize != len(data):
            raise pickle.UnpicklingError(f"an array of shape {shape} and dtype {dtype} that "
                                         f"holds {len(data)} bytes of data")
        self.array = np.frombuffer(data, dtype).reshape(shape, order="F" if fortran_order else "C")


_ALLOWED_GLOBALS = {  # numpy 2 moved _reconstruct's module: both names are accepted
    ("numpy.core.multiarray", "_reconstruct"): _PickledArray,
    ("numpy._core.multiarray", "_reconstruct"): _PickledArray,
    ("numpy", "ndarray"): _NDARRAY,
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
    names, contents = _read_members(path, layout)
    _check_layout(path, name, names)
    classes = _class_names(contents[layout.member(layout.meta)], layout)
    train_images, train_labels = _read_split(contents, layout, layout.train, len(classes))
    test_images, test_labels = _read_split(contents, layout, layout.test, len(classes))
    mean, std = channel_stats(train_images)
    return PreparedData(train_images=train_images, train_labels=train_labels,
                        test_images=test_images, test_labels=test_labels,
                        classes=classes, mean=mean, std=std, name=name)


class _BoundedReader:
    """The decompressed archive, refusing to yield more than `limit` bytes in all."""

    def __init__(self, stream, limit: int, path: Path):
        self.stream, self.limit, self.path, self.count = stream, limit, path, 0

    def read(self, size: int = -1) -> bytes:
        room = self.limit - self.count
        chunk = self.stream.read(room + 1 if size is None or size < 0 or size > room else size)
        self.count += len(chunk)
        if self.count > self.limit:
            raise UserError(f"{self.path}: decompresses to more than {self.limit:,} bytes, more "
                            f"than a CIFAR archive holds; refusing to read on: use an official "
                            f"CIFAR archive")
        return chunk


class _ArchiveError(Exception):
    """Reading the archive itself failed (corrupt or truncated), not a pickle in it."""


# Bytes of the length that precedes an argument, by pickletools' code for its kind.
_LENGTH_BYTES = {pickletools.TAKEN_FROM_ARGUMENT1: 1, pickletools.TAKEN_FROM_ARGUMENT4: 4,
                 pickletools.TAKEN_FROM_ARGUMENT4U: 4, pickletools.TAKEN_FROM_ARGUMENT8U: 8}
_OPCODES = {ord(op.code): op for op in pickletools.opcodes}
_MAX_TEXT_ARGUMENT = 1 << 16  # a longer line argument is not followed (none declares a length)


class _DeclaredLengths:
    """Follows the opcodes in the bytes handed to the unpickler and refuses a string declared
    longer than the whole member before the unpickler sees that length: the unpickler allocates
    what is declared before reading it (a 1 TiB claim would end in a MemoryError)."""

    def __init__(self, member: str, size: int):
        self.member, self.size = member, size
        self.head = bytearray()  # the current opcode and its argument's first bytes
        self.skip = 0            # payload bytes still to pass over
        self.done = False        # past STOP, or at an opcode the unpickler refuses itself

    def scan(self, data) -> None:
        at = 0
        while at < len(data) and not self.done:
            if self.skip:
                step = min(self.skip, len(data) - at)
                self.skip, at = self.skip - step, at + step
                continue
            self.head.append(data[at])
            at += 1
            self._follow()

    def _follow(self) -> None:
        op = _OPCODES.get(self.head[0])
        if op is None or op.name == "STOP":
            self.done = True
            return
        kind = op.arg.n if op.arg is not None else 0
        if kind >= 0:
            complete = len(self.head) == 1 + kind
        elif kind == pickletools.UP_TO_NEWLINE:
            complete = self.head[-1] == ord("\n") and len(self.head) > 1
            self.done = len(self.head) > _MAX_TEXT_ARGUMENT
        else:
            count = _LENGTH_BYTES[kind]
            complete = len(self.head) == 1 + count
            if complete:
                length = int.from_bytes(self.head[1:], "little",
                                        signed=kind == pickletools.TAKEN_FROM_ARGUMENT4)
                if length > self.size:
                    raise UserError(f"{self.member}: the pickle declares a string of {length:,} "
                                    f"bytes in a member of {self.size:,}; the archive is corrupt: "
                                    f"delete it and rerun `dvc repro download`")
                self.skip = max(length, 0)
        if complete:
            self.head.clear()


class _MemberReader:
    """A member's bytes for the unpickler, taken from the archive 1 MB at a time: a large
    array is then not held twice over while it is read."""

    def __init__(self, file, member: str, size: int):
        self.file, self.lengths = file, _DeclaredLengths(member, size)

    def _read(self, size: int) -> bytes:
        try:
            chunk = self.file.read(size)
        except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
            raise _ArchiveError(exc) from None
        self.lengths.scan(chunk)
        return chunk

    def read(self, size: int = -1) -> bytes:
        chunks, left = [], size if size is not None and size >= 0 else float("inf")
        while left > 0 and (chunk := self._read(int(min(left, READ_CHUNK)))):
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)

    def readinto(self, buffer) -> int:
        view, filled = memoryview(buffer).cast("B"), 0
        while filled < len(view) and (chunk := self._read(min(len(view) - filled, READ_CHUNK))):
            view[filled:filled + len(chunk)] = chunk
            filled += len(chunk)
        return filled

    def readline(self) -> bytes:
        try:
            line = self.file.readline()
        except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
            raise _ArchiveError(exc) from None
        self.lengths.scan(line)
        return line


def _read_members(path: Path, layout: Layout) -> tuple[set[str], dict[str, dict]]:
    """Names of all regular files in the archive, and the unpickled dicts of the layout's
    members (unpickled as they are met, so their bytes are never all held at once)."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise UserError(f"{path}: missing; run `dvc repro download` first") from None
    if size > MAX_ARCHIVE_BYTES:
        raise UserError(f"{path}: {size:,} bytes, more than a CIFAR archive holds "
                        f"({MAX_ARCHIVE_BYTES:,}); point data.source at a CIFAR archive")
    wanted = set(layout.members)
    names, contents = set(), {}
    try:
        # Stream mode: members are read in order, and only up to the decompressed limit.
        with open(path, "rb") as raw, \
                tqdm.wrapattr(raw, "read", total=size, desc=f"reading {path.name}") as stream, \
                gzip.GzipFile(fileobj=stream, mode="rb") as unzipped, \
                tarfile.open(fileobj=_BoundedReader(unzipped, MAX_TOTAL_BYTES, path),
                             mode="r|") as tar:
            for count, member in enumerate(tar, 1):
                _check_member(path, member, count)
                if member.isfile():
                    member_name = PurePosixPath(member.name).as_posix()
                    if member_name in names:
                        raise UserError(f"{path}: holds two members named {member_name!r}, which "
                                        f"a CIFAR archive never has; use an official CIFAR "
                                        f"archive")
                    names.add(member_name)
                    if member_name in wanted:
                        contents[member_name] = _unpickle(
                            _MemberReader(tar.extractfile(member), member_name, member.size),
                            member_name)
    except (tarfile.TarError, EOFError, zlib.error, OSError, _ArchiveError) as exc:
        raise UserError(f"{path}: not a readable .tar.gz archive ({exc}); it is corrupt or truncated: "
                        f"delete it and rerun `dvc repro download`") from None
    return names, contents


def _check_member(path: Path, member: tarfile.TarInfo, count: int) -> None:
    """Refuse members that could land outside an extraction folder (even though none is used)
    or that are larger or more numerous than a CIFAR archive's, before reading them."""
    parts = PurePosixPath(member.name).parts
    limit = member_limit(PurePosixPath(member.name).as_posix())
    if count > MAX_MEMBERS:
        problem = f"is one more than the {MAX_MEMBERS} members allowed"
    elif member.name.startswith("/") or ".." in parts:
        problem = "points outside the archive's folder"
    elif member.issym() or member.islnk():
        problem = f"is a link to {member.linkname!r}"
    elif member.issparse():
        problem = "is a sparse file"
    elif not (member.isfile() or member.isdir()):
        problem = "is a device or special file"
    elif member.size > limit:
        problem = f"declares {member.size:,} bytes, more than the {limit:,} allowed"
    else:
        return
    raise UserError(f"{path}: member {member.name[:200]!r} {problem}, which a CIFAR archive "
                    f"never has; refusing to read it: use an official CIFAR archive")


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


def _unpickle(file: _MemberReader, member: str) -> dict:
    """A CIFAR file's dict, keys as str; official files need encoding="latin1"."""
    try:
        obj = _ArrayUnpickler(file, encoding="latin1").load()
    except (_ArchiveError, UserError):
        raise
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
        keys = ", ".join(k[:40] for k in batch if isinstance(k, str) and k.isprintable())[:400]
        raise UserError(f"{member}: has no {key!r} entry (it has {keys or 'no readable keys'}); "
                        f"point data.source at a CIFAR python archive")
    return batch[key]


def _class_names(meta: dict, layout: Layout) -> list[str]:
    member = layout.member(layout.meta)
    names = _entry(meta, layout.names_key, member)
    if not isinstance(names, list) or not names or not all(isinstance(n, (str, bytes)) for n in names):
        raise UserError(f"{member}: {layout.names_key} must be a non-empty list of class names; "
                        f"the archive is corrupt: delete it and rerun `dvc repro download`")
    names = [_text(n) for n in names]
    check_class_names(names, f"{member}: {layout.names_key}",
                      "point data.source at a CIFAR python archive")
    return names


def _read_split(contents: dict[str, dict], layout: Layout, files: tuple[str, ...],
                num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (N, 32, 32, 3) images and int64 labels from the channel-major rows of `files`."""
    rows, labels = [], []
    for file in files:
        member = layout.member(file)
        batch = contents.pop(member)  # dropped once its arrays are copied into the split's
        data = _entry(batch, "data", member)
        if isinstance(data, _PickledArray):
            data = data.array
        if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2
                and data.shape[1] == IMAGE_BYTES):
            found = ("an array without its data" if data is None
                     else f"{data.dtype} of shape {data.shape}" if isinstance(data, np.ndarray)
                     else type(data).__name__)
            raise UserError(f"{member}: data is {found}, expected uint8 of shape (N, {IMAGE_BYTES}); "
                            f"point data.source at a CIFAR python archive")
        y = _entry(batch, layout.labels_key, member)
        if not (isinstance(y, list) and len(y) == len(data) and all(type(v) is int for v in y)):
            raise UserError(f"{member}: {len(data)} images but {layout.labels_key} is not a flat "
                            f"list of {len(data)} integer labels; the archive is inconsistent: "
                            f"rebuild or download it again")
        out_of_range = [v for v in y if not 0 <= v < num_classes]
        if out_of_range:
            shown = out_of_range[0] if abs(out_of_range[0]) < 10**9 else "far"
            raise UserError(f"{member}: label {shown} is outside 0..{num_classes - 1} "
                            f"(the meta lists {num_classes} classes); the archive is inconsistent: "
                            f"rebuild or download it again")
        rows.append(data)
        labels.append(np.array(y, dtype=np.int64))
    images = rows[0] if len(rows) == 1 else np.concatenate(rows)
    del rows
    if not len(images):
        raise UserError(f"{layout.member(files[0])}: holds no images; rebuild or download the "
                        f"archive again")
    # Each row is 1024 red, then 1024 green, then 1024 blue bytes.
    images = np.ascontiguousarray(images.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    return images, np.concatenate(labels)
