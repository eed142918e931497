"""File I/O: atomic output (every file is written to a temporary sibling, then renamed) and
checkpoints (written atomically, read with weights_only=True).

A crash or an error mid-write leaves the previous file as it was, never a
half-written one; data is flushed to the disk before the rename, so a power loss cannot
leave an empty file in its place. Errors from the file system (read-only folder, full disk)
become a UserError that names the path.
"""
from __future__ import annotations

import contextlib
import csv
import errno
import json
import math
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Iterator

import torch

from cifarbudget.errors import UserError, first_line

REBUILD = "delete it and rerun the stage that produces it"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _explain(path: Path, exc: OSError) -> UserError:
    if exc.errno == errno.ENOSPC:
        hint = "the disk is full; free some space and rerun"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        hint = "the folder is not writable; fix its permissions or run from a writable checkout"
    elif exc.errno in (errno.EEXIST, errno.ENOTDIR):
        hint = "a file stands where a folder is needed; move or delete it and rerun"
    else:
        hint = exc.strerror or str(exc)
    return UserError(f"cannot write {path}: {hint}")


def _sync(path: Path) -> None:
    """Flush a file's (or a folder's entries') data to the disk: after a power loss a renamed
    file is then whole, not empty."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it onto `path` if the block succeeds."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual mode
    except OSError as exc:
        raise _explain(path, exc) from None
    tmp = Path(tmp)
    try:
        yield tmp
        _sync(tmp)
        os.replace(tmp, path)
        _sync(path.parent)
    except OSError as exc:
        raise _explain(path, exc) from None
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary folder next to `path`; swap it in for `path` if the block succeeds."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    except OSError as exc:
        raise _explain(path, exc) from None
    old = path.with_name(f".{path.name}.old")
    try:
        yield tmp
        shutil.rmtree(old, ignore_errors=True)
        if path.exists():
            os.replace(path, old)
        _sync(tmp)
        os.replace(tmp, path)
        _sync(path.parent)
        shutil.rmtree(old, ignore_errors=True)
    except OSError as exc:
        raise _explain(path, exc) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _finite(obj, where: str, replaced: list[str]):
    """`obj` with every NaN or infinite float replaced by None, listed in `replaced`."""
    if isinstance(obj, float) and not math.isfinite(obj):
        replaced.append(f"{where or 'value'} was {obj}")
        return None
    if isinstance(obj, dict):
        return {k: _finite(v, f"{where}.{k}" if where else str(k), replaced)
                for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v, f"{where}[{i}]", replaced) for i, v in enumerate(obj)]
    return obj


def write_json(path: str | Path, obj) -> None:
    """Write strict JSON: NaN and infinities (which JSON has no literal for) become null, and
    a dict gets a `non_finite` entry saying which values they were."""
    replaced: list[str] = []
    obj = _finite(obj, "", replaced)
    if replaced and isinstance(obj, dict):
        obj["non_finite"] = f"{'; '.join(replaced)}: written as null (JSON has no such numbers)"
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, allow_nan=False) + "\n")


def write_csv(path: str | Path, rows: list[dict]) -> None:
    """Write dict rows as CSV; the first row's keys give the columns."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else [])
            writer.writeheader()
            writer.writerows(rows)


def save_figure(fig, path: str | Path, dpi: int = 120) -> None:
    """Save a matplotlib figure atomically as PNG and close it."""
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)


def _canonical(obj):
    """Rebuild containers and intern strings, so that pickle's memo (which depends on object
    identity, not value) writes equal states as equal bytes, whether a value was made fresh
    or loaded from an earlier checkpoint; tensors on the CPU, so that every file loads on a
    machine without the GPU that wrote it."""
    if isinstance(obj, torch.Tensor):
        return obj.cpu()
    if isinstance(obj, dict):
        return {_canonical(k): _canonical(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_canonical(v) for v in obj)
    if isinstance(obj, str):
        return sys.intern(obj)
    return obj


def save_checkpoint(path: str | Path, state: dict) -> None:
    """Write `state` atomically; equal states give byte-identical files."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        # Through a file object torch names the archive inside "archive", not after the
        # random temporary file.
        torch.save(_canonical(state), f)


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """Load a checkpoint without executing code from it (weights_only=True)."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: not found; run the stage that produces it first (dvc repro)")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt or unsafe files
        raise UserError(f"{path}: not a readable checkpoint ({first_line(exc)}); "
                        f"{REBUILD}") from None
    if not isinstance(state, dict) or not state:
        found = "an empty dict" if isinstance(state, dict) else f"a {type(state).__name__}"
        raise UserError(f"{path}: holds {found}, not a checkpoint; {REBUILD}")
    return state


@contextlib.contextmanager
def reading(path: str | Path, what: str) -> Iterator[None]:
    """Turn a failure to interpret a loaded checkpoint (a missing key, a value of the wrong
    type, tensors of another shape) into a one-line error naming the file."""
    try:
        yield
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError, IndexError,
            OverflowError) as exc:
        raise UserError(f"{path}: not {what} ({type(exc).__name__}: {first_line(exc)[:200]}); "
                        f"{REBUILD}") from None
