"""Layers point down: a module never imports a package above it. Checked statically, on every
import of the package (module level or inside a function)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO

SRC = REPO / "src" / "cifarbudget"
# Each package or module -> the ones it must not import (they build on it).
FORBIDDEN = {
    "data": ("models", "training", "sampling", "metrics", "plots"),
    "models": ("training", "sampling", "metrics", "plots"),
    "sampling": ("training", "metrics", "plots"),
    "metrics": ("training",),
    "plots": ("training",),
}


def imported_packages(path: Path) -> set[str]:
    """The first component below cifarbudget of every project import in `path`."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                 else [node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
        for name in names:
            parts = name.split(".")
            if parts[0] == "cifarbudget" and len(parts) > 1:
                found.add(parts[1])
    return found


def files_of(layer: str, src: Path = SRC) -> list[Path]:
    folder = src / layer
    return sorted(folder.rglob("*.py")) if folder.is_dir() else [src / f"{layer}.py"]


def violations(src: Path = SRC) -> list[str]:
    found = []
    for layer, above in FORBIDDEN.items():
        for path in filter(Path.exists, files_of(layer, src)):
            for package in sorted(imported_packages(path) & set(above)):
                found.append(f"{path.relative_to(src)} imports cifarbudget.{package}")
    return found


def test_no_module_imports_a_layer_above_it():
    assert violations() == []


def test_the_check_finds_an_import_from_above(tmp_path):
    model = tmp_path / "models" / "gan.py"
    model.parent.mkdir()
    model.write_text("def load():\n    from cifarbudget.training.loop import train\n")
    assert violations(tmp_path) == ["models/gan.py imports cifarbudget.training"]


@pytest.mark.parametrize("layer", FORBIDDEN)
def test_every_layer_named_exists(layer):
    assert files_of(layer)[0].exists()
