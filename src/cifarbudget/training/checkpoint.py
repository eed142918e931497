"""Checkpoints: written atomically, read with weights_only=True, tied to their params."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from cifarbudget.errors import UserError
from cifarbudget.io import atomic_path


def fingerprint(config: dict) -> str:
    """A short hash of everything that shapes a run; a checkpoint resumes only the same run."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


def save_checkpoint(path: str | Path, state: dict) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        # Through a file object torch names the archive inside "archive", not after the
        # random temporary file: equal states give byte-identical files.
        torch.save(state, f)


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """Load a checkpoint without executing code from it (weights_only=True)."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: not found; run the stage that produces it first (dvc repro)")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt or unsafe files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{path}: not a readable checkpoint ({first}); "
                        "delete it and rerun the stage that produces it") from None


def resume_state(path: str | Path, run_fingerprint: str) -> dict | None:
    """The checkpoint at `path` if it belongs to this run, else None (start over)."""
    path = Path(path)
    if not path.exists():
        return None
    state = load_checkpoint(path)
    if state.get("fingerprint") != run_fingerprint:
        return None
    return state
