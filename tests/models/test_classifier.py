import numpy as np
import pytest
import torch

from cifarbudget.config import load_params
from cifarbudget.io import save_checkpoint
from cifarbudget.models.classifier import (Normalize, build_classifier, classifier_features,
                                           load_classifier, model_file_state)
from cifarbudget.training.budget import count_trainable
from tests.conftest import REPO

MEAN, STD = [0.5, 0.4, 0.3], [0.25, 0.2, 0.3]


def test_logits_and_features_have_the_promised_shapes():
    model = build_classifier([8, 16, 24], [1, 2, 1], num_classes=7).eval()
    x = torch.randn(5, 3, 32, 32)
    assert model(x).shape == (5, 7)
    assert model.features(x).shape == (5, 24)
    assert model.feature_dim == 24


def test_every_convolution_is_depthwise_or_pointwise_except_the_stem():
    model = build_classifier([8, 16], [1, 1], num_classes=3)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)][1:]
    assert convs and all(c.groups == c.in_channels or c.kernel_size == (1, 1) for c in convs)


def test_default_model_fits_the_default_budget_for_cifar100():
    params = load_params(REPO / "params.yaml")
    c = params.classifier
    n = count_trainable(build_classifier(c.widths, c.depths, num_classes=100))
    assert n < params.budget.classifier_params


def test_normalize_maps_uint8_pixels_to_standard_scores():
    pixels = torch.tensor([0, 255], dtype=torch.uint8).view(2, 1, 1, 1).expand(2, 3, 1, 1)
    out = Normalize(MEAN, STD, "cpu")(pixels)
    expected_low = -torch.tensor(MEAN) / torch.tensor(STD)
    expected_high = (1 - torch.tensor(MEAN)) / torch.tensor(STD)
    torch.testing.assert_close(out[0, :, 0, 0], expected_low)
    torch.testing.assert_close(out[1, :, 0, 0], expected_high)


def test_saved_classifier_loads_in_eval_mode_with_identical_outputs(tmp_path):
    torch.manual_seed(0)
    model = build_classifier([8, 16], [1, 1], num_classes=4)
    model.train()(torch.randn(16, 3, 32, 32))  # move the batch-norm statistics off their init
    path = tmp_path / "seed_0.pt"
    save_checkpoint(path, model_file_state(model, [8, 16], [1, 1], MEAN, STD, list("abcd")))

    loaded, mean, std = load_classifier(path, "cpu")
    assert not loaded.training and (mean, std) == (MEAN, STD)
    x = torch.randn(6, 3, 32, 32)
    torch.testing.assert_close(loaded(x), model.eval()(x), rtol=0, atol=0)
    saved = torch.load(path, weights_only=True)
    assert set(saved) == {"state_dict", "widths", "depths", "num_classes", "mean", "std", "classes"}


def test_classifier_features_on_uint8_images_match_the_model_and_ignore_batching():
    torch.manual_seed(0)
    model = build_classifier([8, 16], [1, 1], num_classes=4).eval()
    images = np.random.default_rng(0).integers(0, 256, (10, 32, 32, 3), dtype=np.uint8)
    features, logits = classifier_features(model, images, MEAN, STD, "cpu", batch_size=3)
    direct = Normalize(MEAN, STD, "cpu")(torch.from_numpy(images).permute(0, 3, 1, 2))
    with torch.no_grad():
        torch.testing.assert_close(features, model.features(direct))
        torch.testing.assert_close(logits, model(direct))
    _, logits_one_batch = classifier_features(model, images, MEAN, STD, "cpu", batch_size=100)
    torch.testing.assert_close(logits, logits_one_batch)


def test_a_narrowing_stage_is_refused():
    with pytest.raises(ValueError, match="narrow"):
        build_classifier([16, 8], [1, 1], num_classes=3)
