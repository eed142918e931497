"""Checkpoints: written atomically, read with weights_only=True, tied to their params."""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import torch

from cifarbudget.errors import UserError, first_line
from cifarbudget.io import atomic_path


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
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt or unsafe files
        raise UserError(f"{path}: not a readable checkpoint ({first_line(exc)}); "
                        "delete it and rerun the stage that produces it") from None


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
