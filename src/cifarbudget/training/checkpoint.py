"""Checkpoints: written atomically, read with weights_only=True, tied to their params."""
from __future__ import annotations

import contextlib
import hashlib
import json
import sys
from pathlib import Path
from typing import Callable, Iterator

import torch

from cifarbudget.data.prepared import check_class_names
from cifarbudget.errors import UserError, first_line
from cifarbudget.io import atomic_path
from cifarbudget.training.budget import skeleton

REBUILD = "delete it and rerun the stage that produces it"


def fingerprint(config: dict) -> str:
    """A short hash of everything that shapes a run; a checkpoint resumes only the same run."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


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


def saved_classes(path: str | Path, state: dict, num_classes: int) -> list[str]:
    """The class names a model file holds, checked as `prepare` checks them."""
    classes = state["classes"]
    if not isinstance(classes, list) or len(classes) != num_classes:
        raise ValueError(f"classes must be a list of its {num_classes} class names")
    check_class_names(classes, f"{path}: classes", REBUILD)
    return list(classes)


def _held_elements(state: dict) -> int:
    """The most parameters the tensors of `state` can fill: their distinct storages' bytes
    over 2 (no parameter is smaller than 16 bits). Views cannot inflate it."""
    storages, stack = {}, [state]
    while stack:  # iterative: a deeply nested state cannot exhaust the recursion limit
        item = stack.pop()
        if isinstance(item, torch.Tensor):
            storage = item.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return sum(storages.values()) // 2


def build_saved(path: str | Path, state: dict, sizes: dict[str, object],
                build: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    """`build()` the network a model file describes by its architecture fields `sizes`, only
    once its parameters (counted without memory) fit in the tensors the file holds: huge
    fields are refused before anything is allocated."""
    held = _held_elements(state)
    values = [v for size in sizes.values() for v in (size if isinstance(size, list) else [size])]
    if not all(type(v) is int and v > 0 for v in values) or sum(values) > held:
        shown = ", ".join(f"{k} {str(v)[:40]}" for k, v in sizes.items())
        raise UserError(f"{path}: its architecture ({shown}) is not positive integers or is "
                        f"larger than the {held:,} parameters its tensors hold; {REBUILD}")
    needed = sum(p.numel() for p in skeleton(build).parameters())
    if needed > held:
        raise UserError(f"{path}: its architecture needs {needed:,} parameters, more than the "
                        f"{held:,} its tensors hold; {REBUILD}")
    return build()


def resume_state(path: str | Path, run_fingerprint: str, device: torch.device) -> dict | None:
    """The checkpoint at `path` if it belongs to this run, else None (start over).

    The fingerprint covers the device type, since random draws differ between devices; a
    checkpoint that another device wrote is not resumed, and the message says why.
    """
    path = Path(path)
    if not path.exists():
        return None
    state = load_checkpoint(path)
    if state.get("fingerprint") != run_fingerprint:
        written_on = state.get("device")
        if written_on is not None and written_on != device.type:
            print(f"{path}: written on {written_on}, this run is on {device.type} (whose random "
                  f"draws differ): starting over", file=sys.stderr)
        return None
    return state
