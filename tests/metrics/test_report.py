"""The checks on the samples that the evaluate stage measures."""
import numpy as np
import pytest
import torch

from cifarbudget.data.prepared import load_prepared
from cifarbudget.errors import UserError
from cifarbudget.metrics.report import check_samples


def test_samples_must_be_uint8_images_with_the_datasets_classes(prepared_dir):
    data = load_prepared(prepared_dir)
    images = data.test_images[:8]
    check_samples(images, np.arange(8) % 4, data)
    with pytest.raises(UserError, match="expected uint8 images of shape"):
        check_samples(images.astype(np.float32), np.arange(8) % 4, data)
    with pytest.raises(UserError, match=r"labels in \[0, 4\); rerun `dvc repro sample`"):
        check_samples(images, np.arange(8), data)


class CountingInception(torch.nn.Module):
    """Stands in for the FID Inception network: cheap features that identify each image
    (from its mean pixel value; 64 of them rather than 2048, for speed), and a record of every image it was shown."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, batch):
        self.seen.append(batch.shape[0])
        value = batch.float().mean((1, 2, 3))
        pool = value[:, None] * torch.linspace(0.5, 1.5, 64) + torch.randn(len(batch), 64)
        return pool, torch.randn(len(batch), 1008)


def test_fid_compares_10000_samples_with_all_10000_test_images(tmp_path):
    """The protocol of the literature: no test image dropped or repeated, whatever the batch
    size (300 does not divide 10,000, so the last batch of each set is short)."""
    from cifarbudget.config import EvaluateParams
    from cifarbudget.data.prepared import PreparedData
    from cifarbudget.metrics.classifier_metrics import ClassifierJudge
    from cifarbudget.metrics.report import evaluate_samples, test_set_features
    from cifarbudget.models.classifier import build_classifier

    classes = [f"class_{i}" for i in range(100)]
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (10_000, 32, 32, 3), dtype=np.uint8)
    labels = np.arange(10_000) % 100
    data = PreparedData(train_images=images[:100], train_labels=labels[:100],
                        test_images=images[::-1].copy(), test_labels=labels[::-1].copy(),
                        classes=classes, mean=[0.5] * 3, std=[0.25] * 3, name="cifar100")
    inception = CountingInception()
    params = EvaluateParams(inception_weights="", lpips_weights=str(tmp_path / "no-lpips"),
                            batch_size=300, lpips_pairs=10)
    reference = test_set_features(inception, data, params.batch_size, torch.device("cpu"))
    judge = ClassifierJudge(build_classifier([8], [1], 100).eval(), [0.5] * 3, [0.25] * 3,
                            data.test_images, data.test_labels, 100, torch.device("cpu"),
                            params.batch_size)
    metrics, _ = evaluate_samples(params, images, labels, data, inception, reference, judge,
                                  torch.device("cpu"))
    assert metrics["generated_count"] == metrics["reference_count"] == 10_000
    assert sum(inception.seen) == 20_000 and max(inception.seen) == 300
    assert metrics["fid"] >= 0 and np.isfinite(metrics["fid"])
