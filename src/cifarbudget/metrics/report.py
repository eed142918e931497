"""metrics/<model>.json: every quality metric of the generated samples, on one protocol."""
from __future__ import annotations

import numpy as np
import torch

from cifarbudget.config import EvaluateParams
from cifarbudget.data.prepared import PreparedData
from cifarbudget.errors import UserError
from cifarbudget.metrics.classifier_metrics import ClassifierJudge
from cifarbudget.metrics.fid import (SKIP, InceptionFeatures, inception_features,
                                     inception_metrics)
from cifarbudget.metrics.lpips import lpips_metric


def check_samples(images: np.ndarray, labels: np.ndarray, data: PreparedData) -> None:
    """The samples must be images of the prepared data's shape, labelled with its classes."""
    fix = "rerun `dvc repro sample`"
    if images.dtype != np.uint8 or images.shape[1:] != data.test_images.shape[1:]:
        raise UserError(f"data/samples/images.npy: expected uint8 images of shape "
                        f"(N, {', '.join(map(str, data.test_images.shape[1:]))}), got "
                        f"{images.dtype} {images.shape}; {fix}")
    if len(labels) != len(images) or labels.min() < 0 or labels.max() >= data.num_classes:
        raise UserError(f"data/samples/labels.npy: expected {len(images)} labels in "
                        f"[0, {data.num_classes}); {fix}")


def test_set_features(inception: torch.nn.Module | None, data: PreparedData, batch_size: int,
                      device: torch.device) -> InceptionFeatures | None:
    """Inception features of every test image (None without an Inception network)."""
    if inception is None:
        return None
    return inception_features(inception, data.test_images, batch_size, device,
                              "inception: test set")


def evaluate_samples(params: EvaluateParams, images: np.ndarray, labels: np.ndarray,
                     data: PreparedData, inception: torch.nn.Module | None,
                     reference: InceptionFeatures | None, judge: ClassifierJudge,
                     device: torch.device) -> tuple[dict, dict[str, np.ndarray]]:
    """Inception, classifier and LPIPS metrics of the generated `images` vs the test set
    (`reference`: its Inception features) -> (metrics, the classifier's per-class accuracy
    on generated and real images).

    Without an Inception network (the user set evaluate.inception_weights to "skip"),
    FID, KID and IS are null and `inception_skipped` says why.
    """
    check_samples(images, labels, data)
    if inception is None:
        inception_part = {"fid": None, "kid": None, "inception_score": None,
                          "inception_skipped": f"evaluate.inception_weights is {SKIP!r}"}
        counts = {"generated_count": len(images), "reference_count": len(data.test_images)}
    else:
        generated = inception_features(inception, images, params.batch_size, device,
                                       "inception: generated")
        # The counts are of features actually extracted: no image dropped or repeated.
        inception_part = inception_metrics(generated, reference, params.seed)
        counts = {"generated_count": len(generated), "reference_count": len(reference)}
    judged, per_class = judge(images, labels)
    metrics = {
        **inception_part,
        **judged,
        **lpips_metric(params.lpips_weights, images, params.lpips_pairs, params.seed,
                       params.batch_size, device),
        **counts,
    }
    return metrics, per_class


# What explains a run rather than scores it: logs/<model>_evaluation.json, not a DVC metric.
DIAGNOSTIC_KEYS = ("inception_skipped", "lpips_error", "generated_count", "reference_count")


def split_diagnostics(measured: dict) -> tuple[dict, dict]:
    """`evaluate_samples`' results -> (the metrics, the diagnostics among them)."""
    return ({k: v for k, v in measured.items() if k not in DIAGNOSTIC_KEYS},
            {k: v for k, v in measured.items() if k in DIAGNOSTIC_KEYS})


def summary_line(metrics: dict) -> str:
    """The headline numbers of `evaluate_samples`' results, on one line."""
    lpips = (f"{metrics['lpips']:.4f}" if metrics["lpips"] is not None
             else f"null ({metrics['lpips_error']})")
    inception = (f"FID {metrics['fid']:.2f}, KID {metrics['kid']['mean']:.4f}, "
                 f"IS {metrics['inception_score']['mean']:.2f}" if metrics["fid"] is not None
                 else f"FID/KID/IS skipped ({metrics['inception_skipped']})")
    return (f"{inception}, classifier FID {metrics['classifier_fid']:.2f}, "
            f"classifier accuracy on samples "
            f"{metrics['classifier_accuracy_generated']:.3f} "
            f"(on real images {metrics['classifier_accuracy_real']:.3f}; worst class "
            f"{metrics['worst_class_accuracy_generated']:.3f}), LPIPS {lpips}; "
            f"{metrics['generated_count']:,} generated vs "
            f"{metrics['reference_count']:,} test images")
