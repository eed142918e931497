"""Classifier-based GAN metrics: accuracy, Fréchet distance in feature space, diversity."""
import numpy as np
import pytest
import torch

from cifarbudget.data.prepared import load_prepared
from cifarbudget.metrics.classifier_metrics import (ClassifierJudge, accuracy,
                                                    intra_class_diversity, per_class_accuracy)
from cifarbudget.models.classifier import build_classifier


def test_accuracy_counts_the_matching_argmax():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0], [0.0, 5.0]])
    assert accuracy(logits, np.array([0, 1, 1, 0])) == 0.5


def test_per_class_accuracy_scores_each_class_on_its_own_images():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [3.0, 1.0, 0.0], [0.0, 5.0, 0.0],
                           [1.0, 0.0, 0.0]])
    labels = np.array([0, 1, 1, 0, 0])  # class 0: 2 of 3 right; class 1: 1 of 2; class 2: none
    result = per_class_accuracy(logits, labels, num_classes=3)
    assert result[:2] == pytest.approx([2 / 3, 1 / 2]) and np.isnan(result[2])


def test_intra_class_diversity_is_the_mean_distance_within_classes_averaged_over_classes():
    features = torch.tensor([[0.0, 0.0], [3.0, 4.0],               # class 0: one pair, 5 apart
                             [0.0, 0.0], [1.0, 0.0], [0.0, 1.0],   # class 1: 1, 1 and sqrt(2)
                             [9.0, 9.0]])                          # class 2: alone, no pair
    labels = np.array([0, 0, 1, 1, 1, 2])
    expected = (5.0 + (2 + np.sqrt(2)) / 3) / 2
    assert intra_class_diversity(features, labels) == pytest.approx(expected)


def test_a_collapsed_class_has_zero_diversity():
    features = torch.ones(4, 3)
    assert intra_class_diversity(features, np.zeros(4)) == 0.0


def test_the_judge_of_the_real_set_against_itself(prepared_dir):
    data = load_prepared(prepared_dir)
    torch.manual_seed(0)
    model = build_classifier([8, 16], [1, 1], data.num_classes).eval()
    judge = ClassifierJudge(model, data.mean, data.std, data.test_images, data.test_labels,
                            data.num_classes, torch.device("cpu"),
                            batch_size=24)  # does not divide the 64 images
    metrics, per_class = judge(data.test_images, data.test_labels)
    assert metrics["classifier_accuracy_generated"] == metrics["classifier_accuracy_real"]
    assert per_class["generated"].tolist() == per_class["real"].tolist()
    assert metrics["worst_class_accuracy_generated"] == per_class["generated"].min()
    assert metrics["classifier_fid"] == pytest.approx(0, abs=1e-6)
    assert metrics["diversity"]["generated"] == metrics["diversity"]["real"] > 0
    shuffled = np.random.default_rng(0).permutation(data.test_labels)
    wrong, _ = judge(data.test_images, shuffled)
    # Labels that do not match the images change the accuracy on them, not on the real set.
    assert wrong["classifier_accuracy_real"] == metrics["classifier_accuracy_real"]
    assert wrong["diversity"]["generated"] != metrics["diversity"]["generated"]


def test_the_judge_scores_the_real_set_once_however_many_sets_it_judges(prepared_dir):
    data = load_prepared(prepared_dir)
    model = build_classifier([8], [1], data.num_classes).eval()
    seen = []
    model.head.register_forward_hook(lambda module, inputs, output: seen.append(len(inputs[0])))
    judge = ClassifierJudge(model, data.mean, data.std, data.test_images, data.test_labels,
                            data.num_classes, torch.device("cpu"), batch_size=64)
    for _ in range(3):  # as for the snapshots of a run, then its final samples
        judge(data.test_images[:10], data.test_labels[:10])
    assert sum(seen) == len(data.test_images) + 3 * 10
