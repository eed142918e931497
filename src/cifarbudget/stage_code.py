"""The code behind a result: the project files each stage runs, as its deps in dvc.yaml declare
them (tests/test_dvc_record.py checks that the list is complete), and their digests.

A training stage resumes a checkpoint only if these digests are the ones it was written with:
`dvc repro` reruns a stage whose code changed, and the rerun must then train anew.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import yaml

from cifarbudget.errors import UserError

# This tree's root (src/cifarbudget/ lies two levels below it): the stage scripts import this
# tree's own src/ (stages/_local_src.py), so its dvc.yaml names the code that runs.
ROOT = Path(__file__).resolve().parents[2]
CODE_FOLDERS = ("src/", "stages/")  # deps below these are code; the rest are data


def stage_deps(dvc_yaml: str, stage: str, model: str = "gan") -> list[str]:
    """The deps of `stage` in the text of dvc.yaml, with generator.model `model` filled in."""
    stages = yaml.safe_load(dvc_yaml.replace("${generator.model}", model))["stages"]
    return [next(iter(d)) if isinstance(d, dict) else d for d in stages[stage].get("deps", [])]


def stage_code(stage: str, model: str = "gan", root: Path = ROOT) -> dict[str, str]:
    """{path: sha256} of every file of `stage`'s code deps under `root` (folders expanded,
    bytecode caches left out), the paths relative to `root`."""
    dvc_yaml = root / "dvc.yaml"
    if not dvc_yaml.is_file():
        raise UserError(f"{dvc_yaml}: missing; run the stages from a clone of the repository")
    files = []
    for dep in stage_deps(dvc_yaml.read_text(), stage, model):
        if dep.startswith(CODE_FOLDERS):
            path = root / dep
            files += ([p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
                      if path.is_dir() else [path])
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(files)}


def changed_files(old: dict[str, str], new: dict[str, str]) -> list[str]:
    """The paths whose digest differs between two stage_code results, or that only one has."""
    return sorted(path for path in old.keys() | new.keys() if old.get(path) != new.get(path))
