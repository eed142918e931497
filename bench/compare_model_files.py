"""Tiny runs of the training stages with two trees' code -> sha256 of the model files.

python bench/compare_model_files.py BEFORE_TREE AFTER_TREE [--fp32]: each tree trains the
classifier, the GAN and the VAE (QUICK_PARAMS of the after tree's tests) in a folder of its own, one
thread; --fp32 sets every bf16 param to false: the path of an AVX2-only CPU, on any CPU.
"""
import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

before_tree, after_tree = map(Path, sys.argv[1:3])
fp32 = "--fp32" in sys.argv[3:]
spec = importlib.util.spec_from_file_location("conftest", after_tree / "tests/conftest.py")
conftest = importlib.util.module_from_spec(spec); spec.loader.exec_module(conftest)


def run_tree(tree: Path, work: Path) -> dict:
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": str(tree / "src"), "OMP_NUM_THREADS": "1",
           "CUDA_VISIBLE_DEVICES": ""}
    new = (tree / "stages/train_generator.py").exists()
    for stage, model in (("train_classifier", "gan"), ("train_gan", "gan"), ("train_vae", "vae")):
        shutil.copy(tree / "params.yaml", work / "params.yaml")
        overrides = {**conftest.QUICK_PARAMS, "generator.model": model}
        if fp32:
            overrides |= {"classifier.bf16": False, "gan.bf16": False, "vae.bf16": False}
        if "warmup_steps:" in (tree / "params.yaml").read_text():  # before the warm-up fraction
            overrides["classifier.warmup_steps"] = round(
                overrides.pop("classifier.warmup") * overrides["classifier.steps"])
        conftest.set_params(work, overrides)
        if not (work / "data/prepared").exists():
            conftest.write_prepared(work / "data" / "prepared")
        script = "train_generator" if new and stage != "train_classifier" else stage
        subprocess.run([sys.executable, str(tree / "stages" / f"{script}.py")], cwd=work,
                       env=env, check=True, capture_output=True)
    return {str(p.relative_to(work)): hashlib.sha256(p.read_bytes()).hexdigest()[:16]
            for p in sorted([*(work / "models").rglob("*.pt"), *(work / "snapshots").rglob("*.pt")])}


before = run_tree(before_tree, Path("/tmp/cmp/before"))
after = run_tree(after_tree, Path("/tmp/cmp/after"))
for k in sorted(before.keys() | after.keys()):
    print(k, before.get(k), after.get(k), "identical" if before.get(k) == after.get(k) else "DIFFERENT")
