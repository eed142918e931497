"""Every file and folder the stages read and write, relative to the repository root, where
DVC runs them. dvc.yaml names the same paths as each stage's deps and outs.

`model` is the generative model that generator.model names: "gan" or "vae".
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

ARCHIVE = Path("data/raw/archive.tar.gz")
PREPARED = Path("data/prepared")
AUGMENTATIONS_PNG = Path("plots/data/augmentations.png")
SAMPLES = Path("data/samples")
CHECKPOINTS = Path("checkpoints")  # git-ignored working folder: resume after an interruption

CLASSIFIER_MODELS = Path("models/classifier")
CLASSIFIER_PLOTS = Path("plots/classifier")
CLASSIFIER_HISTORY = CLASSIFIER_PLOTS / "history.csv"  # the mean over seeds
CLASSIFIER_CURVES = CLASSIFIER_PLOTS / "curves.png"
CLASSIFIER_SEED_HISTORIES = CLASSIFIER_PLOTS / "seeds"
CLASSIFIER_METRICS = Path("metrics/classifier.json")
CLASSIFIER_LOG = Path("logs/classifier_training.json")  # diagnostics: time, speed, device


def classifier_model(seed: int) -> Path:
    return CLASSIFIER_MODELS / f"seed_{seed}.pt"


def classifier_seed_history(seed: int) -> Path:
    return CLASSIFIER_SEED_HISTORIES / f"seed_{seed}.csv"


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


@dataclass(frozen=True)
class TrainingFiles:
    """Where a training run writes as it goes (None: not written)."""
    checkpoint: Path
    history: Path | None = None
    history_figure: Path | None = None
    progress: Path | None = None
    snapshots: Path | None = None  # a folder: the sampling network every snapshot_every steps


def classifier_training_files(seed: int) -> TrainingFiles:
    """One classifier seed's checkpoint; the stage writes its history at the end, with the
    other seeds'."""
    return TrainingFiles(CHECKPOINTS / "classifier" / f"seed_{seed}.pt")


def generator_training_files(model: str) -> TrainingFiles:
    return TrainingFiles(CHECKPOINTS / model / "checkpoint.pt",
                         history=generator_plots(model) / "history.csv",
                         history_figure=generator_plots(model) / "history.png",
                         progress=generator_plots(model) / "progress.png",
                         snapshots=generator_snapshots(model))
