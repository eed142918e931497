"""Every file and folder the stages read and write, relative to the repository root, where
DVC runs them. dvc.yaml names the same paths as each stage's deps and outs.

`model` is the generative model that generator.model names: "gan" or "vae".
"""
from __future__ import annotations

from pathlib import Path

ARCHIVE = Path("data/raw/archive.tar.gz")
PREPARED = Path("data/prepared")
AUGMENTATIONS_PNG = Path("plots/data/augmentations.png")
SAMPLES = Path("data/samples")
CHECKPOINTS = Path("checkpoints")  # git-ignored working folder: resume after an interruption

CLASSIFIER_MODELS = Path("models/classifier")
CLASSIFIER_PLOTS = Path("plots/classifier")
CLASSIFIER_METRICS = Path("metrics/classifier.json")
CLASSIFIER_LOG = Path("logs/classifier_training.json")  # diagnostics: time, speed, device


def classifier_model(seed: int) -> Path:
    return CLASSIFIER_MODELS / f"seed_{seed}.pt"


def generator_model(model: str) -> Path:
    """The trained generative model: models/<model>/<model>.pt."""
    return Path("models") / model / f"{model}.pt"


def generator_snapshots(model: str) -> Path:
    """The sampling network every <model>.snapshot_every steps."""
    return Path("snapshots") / model


def generator_plots(model: str) -> Path:
    return Path("plots") / model


def training_metrics(model: str) -> Path:
    return Path("metrics") / f"{model}_training.json"


def training_log(model: str) -> Path:
    return Path("logs") / f"{model}_training.json"


def evaluation_metrics(model: str) -> Path:
    return Path("metrics") / f"{model}.json"


def evaluation_log(model: str) -> Path:
    return Path("logs") / f"{model}_evaluation.json"
