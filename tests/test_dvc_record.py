"""dvc.lock tells the truth: each stage of dvc.yaml declares, as deps, every project file its
script runs (followed statically through the imports, for every generator.model), so that
`dvc status` sees any change to the code behind a result."""
from __future__ import annotations

import ast
import hashlib
import re
from pathlib import Path

import pytest
import yaml

from cifarbudget.stage_code import stage_code, stage_deps
from tests.conftest import REPO

PACKAGE = "cifarbudget"
GENERATOR_MODELS = ("gan", "vae")


def module_file(root: Path, dotted: str) -> Path | None:
    """The file of module `dotted` under src/ (a package's __init__.py), None if not ours."""
    base = root / "src" / Path(*dotted.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_by_name(node: ast.AST, model: str) -> str | None:
    """The module that an import by name of the chosen model runs: an f-string
    "cifarbudget.<package>.{...}" (the convention of models/generator.py and
    training/generative.py) names the <package> module of generator.model `model`."""
    if isinstance(node, ast.JoinedStr) and len(node.values) == 2:
        prefix, value = node.values
        if (isinstance(prefix, ast.Constant) and isinstance(value, ast.FormattedValue)
                and str(prefix.value).startswith(f"{PACKAGE}.")):
            return f"{prefix.value}{model}"
    return None


def imported_modules(path: Path, root: Path, model: str) -> set[Path]:
    """The project files that importing `path` runs directly: its imports of the package (and
    the packages above each module), its imports by name of `model`'s modules, and sibling
    modules of a stage script."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        by_name = imported_by_name(node, model)
        if by_name:
            found.add(module_file(root, by_name))
            continue
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # `from a.b import c`: c may be a module of its own or a name defined in a.b.
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] != PACKAGE:
                sibling = path.parent / f"{name}.py"
                if len(parts) == 1 and sibling.is_file():
                    found.add(sibling)
                continue
            for depth in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__, a/b/__init__
                file = module_file(root, ".".join(parts[:depth]))
                if file is not None:
                    found.add(file)
    return found


def code_run_by(script: Path, root: Path, model: str) -> set[Path]:
    """`script` and every project file it imports, transitively; __init__.py files that hold
    nothing but a docstring left out."""
    seen, todo = set(), [script]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        todo.extend(imported_modules(path, root, model) - seen)
    return {p for p in seen if p.name != "__init__.py" or has_code(p)}


def has_code(path: Path) -> bool:
    return any(not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant))
               for node in ast.parse(path.read_text()).body)


def stages_for(dvc_yaml: str, model: str) -> dict:
    """dvc.yaml's stages with generator.model filled in."""
    return yaml.safe_load(dvc_yaml.replace("${generator.model}", model))["stages"]


def undeclared_code(root: Path) -> list[str]:
    """'stage (model): file' for each project file a stage runs but does not list in its deps."""
    text = (root / "dvc.yaml").read_text()
    missing = []
    for model in GENERATOR_MODELS:
        for name, stage in stages_for(text, model).items():
            (script,) = re.findall(r"\bstages/\S+\.py\b", stage["cmd"])
            deps = [root / d for d in stage_deps(text, name, model)]
            for file in sorted(code_run_by(root / script, root, model)):
                if not any(file == d or d in file.parents for d in deps):
                    missing.append(f"{name} ({model}): {file.relative_to(root)}")
    return sorted(set(missing))


def test_every_stage_declares_the_code_it_runs():
    missing = undeclared_code(REPO)
    assert not missing, "\n".join(missing)


def test_the_check_names_a_stage_and_the_file_it_misses(tmp_path):
    """The check itself: a dvc.yaml that drops a dependency is caught, by stage and file."""
    for folder in ("src", "stages"):
        (tmp_path / folder).symlink_to(REPO / folder)
    text = (REPO / "dvc.yaml").read_text()
    broken = re.sub(r"\n\s+- src/cifarbudget/device\.py[^\n]*", "", text)
    assert broken != text
    (tmp_path / "dvc.yaml").write_text(broken)
    missing = undeclared_code(tmp_path)
    assert "train_classifier (gan): src/cifarbudget/device.py" in missing
    assert "evaluate (vae): src/cifarbudget/device.py" in missing


def test_the_check_follows_the_import_of_the_chosen_model_by_name(tmp_path):
    """train_generator imports its trainer by name (training/generative.py); the check still
    finds it, for each model."""
    for folder in ("src", "stages"):
        (tmp_path / folder).symlink_to(REPO / folder)
    text = (REPO / "dvc.yaml").read_text()
    broken = text.replace("      - src/cifarbudget/training/${generator.model}.py\n", "")
    assert broken != text
    (tmp_path / "dvc.yaml").write_text(broken)
    missing = undeclared_code(tmp_path)
    assert "train_generator (gan): src/cifarbudget/training/gan.py" in missing
    assert "train_generator (vae): src/cifarbudget/training/vae.py" in missing


@pytest.mark.parametrize("model", GENERATOR_MODELS)
def test_deps_stay_narrow_no_stage_depends_on_all_of_src(model):
    text = (REPO / "dvc.yaml").read_text()
    for name in stages_for(text, model):
        assert not {"src", "src/cifarbudget"} & set(stage_deps(text, name, model)), name


@pytest.mark.parametrize("model", GENERATOR_MODELS)
@pytest.mark.parametrize("stage", ["train_classifier", "train_generator"])
def test_a_training_run_is_identified_by_every_file_its_stage_runs(stage, model):
    """The resume fingerprint's code (stage_code) is the stage's code deps: it holds every file
    the stage's script imports, and nothing outside src/ and stages/."""
    script = REPO / re.findall(r"\bstages/\S+\.py\b",
                               stages_for((REPO / "dvc.yaml").read_text(), model)[stage]["cmd"])[0]
    code = stage_code(stage, model, REPO)
    run = {file.relative_to(REPO).as_posix() for file in code_run_by(script, REPO, model)}
    assert run <= code.keys()
    assert all(path.startswith(("src/", "stages/")) for path in code)
    assert code["src/cifarbudget/training/loop.py"] == hashlib.sha256(
        (REPO / "src/cifarbudget/training/loop.py").read_bytes()).hexdigest()
