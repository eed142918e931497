"""Metrics of generated samples measured with the project's own classifier: no download needed.

- accuracy on generated images w.r.t. the labels they were conditioned on, beside the
  accuracy on real test images (the ceiling the classifier allows), overall and per class:
  a class the generator cannot draw shows up as a class its samples are rarely taken for;
- the Fréchet distance between generated and real images in the classifier's feature space;
- intra-class diversity: the mean Euclidean distance between two features of the same class,
  averaged over classes; a collapsed class scores near zero.
"""
from __future__ import annotations

import numpy as np
import torch

from cifarbudget.metrics.fid import feature_frechet_distance
from cifarbudget.models.classifier import classifier_features

def accuracy(logits: torch.Tensor, labels: np.ndarray | torch.Tensor) -> float:
    return (logits.argmax(1) == torch.as_tensor(labels)).float().mean().item()


def per_class_accuracy(logits: torch.Tensor, labels: np.ndarray | torch.Tensor,
                       num_classes: int) -> np.ndarray:
    """Accuracy over the images of each class; NaN for a class with no image."""
    labels = torch.as_tensor(labels)
    correct = (logits.argmax(1) == labels).double()
    hits = torch.zeros(num_classes, dtype=torch.float64).index_add_(0, labels, correct)
    counts = torch.bincount(labels, minlength=num_classes).double()
    return (hits / counts).numpy()  # 0/0 is NaN


def intra_class_diversity(features: torch.Tensor, labels: np.ndarray | torch.Tensor) -> float:
    """Mean pairwise Euclidean feature distance within each class (distinct pairs), averaged
    over the classes with at least two images."""
    labels = torch.as_tensor(labels)
    per_class = []
    for label in labels.unique():
        members = features[labels == label].double()
        n = len(members)
        if n < 2:
            continue
        # The diagonal is zero, so the sum over all ordered pairs counts each distinct pair twice.
        per_class.append((torch.cdist(members, members).sum() / (n * (n - 1))).item())
    return float(np.mean(per_class))


class ClassifierJudge:
    """The classifier as a judge of generated images. Its view of the real test set (features,
    accuracy, diversity) is computed once, then compared with each set of generated images."""

    def __init__(self, model: torch.nn.Module, mean, std, real: np.ndarray,
                 real_labels: np.ndarray, num_classes: int, device: torch.device,
                 batch_size: int):
        self.model, self.mean, self.std = model, mean, std
        self.num_classes, self.device, self.batch_size = num_classes, device, batch_size
        self.real_features, real_logits = self.features(real)
        self.real_accuracy = accuracy(real_logits, real_labels)
        self.real_per_class = per_class_accuracy(real_logits, real_labels, num_classes)
        self.real_diversity = intra_class_diversity(self.real_features, real_labels)

    def features(self, images: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return classifier_features(self.model, images, self.mean, self.std, self.device,
                                   self.batch_size)

    def __call__(self, generated: np.ndarray,
                 labels: np.ndarray) -> tuple[dict, dict[str, np.ndarray]]:
        """Accuracy, Fréchet distance and diversity of `generated` (conditioned on `labels`) vs
        the real images -> (metrics, per-class accuracy {"generated": (K,), "real": (K,)})."""
        features, logits = self.features(generated)
        per_class = {"generated": per_class_accuracy(logits, labels, self.num_classes),
                     "real": self.real_per_class}
        metrics = {
            "classifier_accuracy_generated": accuracy(logits, labels),
            "classifier_accuracy_real": self.real_accuracy,
            "worst_class_accuracy_generated": float(np.nanmin(per_class["generated"])),
            "classifier_fid": feature_frechet_distance(features, self.real_features),
            "diversity": {"generated": intra_class_diversity(features, labels),
                          "real": self.real_diversity},
        }
        return metrics, per_class
