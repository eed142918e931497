"""plots/<model>/quality.csv: how the generated images' quality evolved over training.

Every snapshot `train_generator` kept draws the evaluation set that `sample` draws from the
final network (same sample.seed and sample.count), so the rows differ only by the network,
and the last row is the final network's. Each row holds the metrics that need no download
(the project's classifier) and, with an Inception network, FID and KID of the first
evaluate.snapshot_inception_images of those images against the whole test set: fewer
images than the final protocol's 10,000 (FID is biased upwards at small N, so compare
these columns between rows and runs, not with the final FID).

Nothing here selects a model: metrics/<model>.json scores the final network only.
"""
from __future__ import annotations

from pathlib import Path

import torch
from tqdm import tqdm

from cifarbudget.config import Params
from cifarbudget.data.prepared import PreparedData
from cifarbudget.errors import UserError
from cifarbudget.metrics.classifier_metrics import ClassifierJudge
from cifarbudget.metrics.fid import (InceptionFeatures, feature_frechet_distance,
                                     inception_features, kernel_inception_distance)
from cifarbudget.models.generator import load_snapshot
from cifarbudget.sampling import evaluation_draws, generate

QUALITY_COLUMNS = ("step", "classifier_accuracy_generated", "worst_class_accuracy_generated",
                   "classifier_fid", "diversity_generated")
INCEPTION_COLUMNS = ("fid_subset", "kid_subset")


def snapshot_quality(params: Params, snapshots: list[Path], data: PreparedData,
                     judge: ClassifierJudge, inception: torch.nn.Module | None,
                     reference: InceptionFeatures | None, device: torch.device) -> list[dict]:
    """One row per snapshot, in training order: the step and its quality metrics."""
    rows = []
    for path in tqdm(snapshots, desc="snapshots", unit="snapshot"):
        network, step = load_snapshot(path, device)
        if network.num_classes != data.num_classes:
            raise UserError(f"{path}: drawn for {network.num_classes} classes, but data/prepared "
                            f"holds {data.num_classes}; rerun `dvc repro train_generator`")
        draws = evaluation_draws(params.sample.count, data.num_classes, network.z_dim,
                                 params.sample.seed)
        images = generate(network, draws, params.sample.batch_size, device, f"step {step}")
        judged, _ = judge(images, draws.classes.numpy())
        row = {"step": step, **{k: judged[k] for k in QUALITY_COLUMNS[1:-1]},
               "diversity_generated": judged["diversity"]["generated"]}
        if inception is not None:
            subset = images[:params.evaluate.snapshot_inception_images]
            pool = inception_features(inception, subset, params.evaluate.batch_size, device,
                                      f"inception: step {step}").pool
            row["fid_subset"] = feature_frechet_distance(pool, reference.pool)
            row["kid_subset"] = kernel_inception_distance(pool, reference.pool,
                                                          params.evaluate.seed)["mean"]
        rows.append(row)
    return rows

