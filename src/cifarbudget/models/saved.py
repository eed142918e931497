"""Rebuilding a network from a model file, safely: its size is checked against the tensors the
file holds (counted on the meta device, without memory) before anything is allocated, and its
class names as `prepare` checks them."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from cifarbudget.data.prepared import check_class_names
from cifarbudget.errors import UserError
from cifarbudget.io import REBUILD


def skeleton(build: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    """The module `build` makes, on the meta device: its parameters have shapes but no memory,
    so a configuration is counted (and refused) before anything is allocated."""
    with torch.device("meta"):
        return build()


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
