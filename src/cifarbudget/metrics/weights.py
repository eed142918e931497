"""Pretrained weights of the metrics' networks, loaded by the project with torch's safe loader.

torch-fidelity and torchvision unpickle their weight files themselves, some with
`weights_only=False`, so a file planted in torch's hub cache would run code. The project
instead finds each file (given by a param, cached, or downloaded into the cache), loads it
with `weights_only=True` and hands the tensors to the library's network in place of the
library's own loader.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator
from urllib.parse import urlparse

import torch

from cifarbudget.errors import UserError, first_line


def hub_file(url: str, hub_dir: str | Path | None = None) -> Path:
    """Where torch's hub cache (`hub_dir`, else torch's own) keeps the download of `url`."""
    folder = Path(hub_dir) if hub_dir else Path(torch.hub.get_dir())
    return folder / "checkpoints" / Path(urlparse(url).path).name


def download_to(url: str, path: Path) -> None:
    """Fetch `url` to `path` (torch writes a temporary file and renames it when complete)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.hub.download_url_to_file(url, str(path), progress=False)


def load_state_dict(path: Path, key: str) -> dict[str, torch.Tensor]:
    """The tensors of the weights file `path`, unpickled with torch's safe loader only.

    A file that is corrupt, needs more than tensors (code) or holds anything but a dict of
    tensors is refused, naming the file and the param `key` that leads to it.
    """
    fix = (f"delete it (a cached download is fetched again) or set {key} to a weights file of "
           f"plain tensors")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt or unsafe files
        raise UserError(f"{key}: {path} is not a readable weights file ({first_line(exc)}); "
                        f"{fix}") from None
    if not (isinstance(state, dict) and state
            and all(isinstance(v, torch.Tensor) for v in state.values())):
        raise UserError(f"{key}: {path} holds no state dict of tensors; {fix}")
    return state


@contextlib.contextmanager
def replaced(module, name: str, value) -> Iterator[None]:
    """Set `module.name` to `value` for this block: the library's own weights loader is
    swapped for one returning the tensors the project loaded."""
    previous = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, previous)
