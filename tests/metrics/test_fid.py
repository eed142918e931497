"""FID, KID and IS: closed-form Gaussian cases, and the whole Inception path offline."""
import urllib.error

import numpy as np
import pytest
import torch

from cifarbudget.errors import UserError
from cifarbudget.metrics.fid import (feature_frechet_distance, frechet_distance,
                                     gaussian_statistics, inception_features, inception_metrics,
                                     inception_score, kernel_inception_distance, load_inception)

CPU = torch.device("cpu")


def test_frechet_distance_of_identical_gaussians_is_zero():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(6, 6))
    sigma = a @ a.T + np.eye(6)
    mu = rng.normal(size=6)
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0, abs=1e-9)


def test_frechet_distance_of_shifted_gaussians_is_the_squared_shift():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(5, 5))
    sigma = a @ a.T + np.eye(5)
    mu = rng.normal(size=5)
    shift = np.array([3.0, -1.0, 0.5, 0.0, 2.0])
    assert frechet_distance(mu, sigma, mu + shift, sigma) == pytest.approx(shift @ shift, rel=1e-9)


def test_frechet_distance_of_diagonal_gaussians_matches_the_closed_form():
    var1, var2 = np.array([1.0, 4.0, 9.0, 0.25]), np.array([4.0, 1.0, 9.0, 1.0])
    mu1, mu2 = np.zeros(4), np.array([1.0, 0.0, 0.0, 2.0])
    expected = 5.0 + np.sum((np.sqrt(var1) - np.sqrt(var2)) ** 2)  # |d|^2 + sum (s1 - s2)^2
    distance = frechet_distance(mu1, np.diag(var1), mu2, np.diag(var2))
    assert distance == pytest.approx(expected, rel=1e-9)


def test_gaussian_statistics_are_the_sample_mean_and_unbiased_covariance():
    features = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [2.0, 2.0]])
    mu, sigma = gaussian_statistics(torch.tensor(features, dtype=torch.float32))
    np.testing.assert_allclose(mu, [1.0, 1.0])
    np.testing.assert_allclose(sigma, np.eye(2) * 4 / 3)


@pytest.mark.parametrize("count_a, count_b", [(5, 7), (40, 30)])
def test_feature_frechet_distance_equals_the_distance_of_the_fitted_gaussians(count_a, count_b):
    # (5, 7) takes the route for fewer samples than dimensions, (40, 30) the covariance route.
    rng = np.random.default_rng(2)
    a = rng.normal(size=(count_a, 16))
    b = rng.normal(size=(count_b, 16)) * 2 + 0.3
    expected = frechet_distance(*gaussian_statistics(a), *gaussian_statistics(b))
    assert feature_frechet_distance(a, b) == pytest.approx(expected, rel=1e-6)
    assert feature_frechet_distance(a, a) == pytest.approx(0, abs=1e-6)


def test_inception_score_is_one_for_identical_predictions_and_k_for_confident_distinct_ones():
    uniform = torch.zeros(20, 10)
    assert inception_score(uniform, seed=0)["mean"] == pytest.approx(1.0)
    # 2,000 images, each sure of its class, 4 classes equally often: exp(entropy of the
    # marginal) = 4 (each split of 200 images is only nearly balanced, hence the tolerance).
    confident = torch.eye(4).repeat(500, 1) * 100
    assert inception_score(confident, seed=0)["mean"] == pytest.approx(4.0, rel=0.02)


def test_kid_is_near_zero_for_one_distribution_and_grows_with_a_shift():
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(100, 64, generator=gen), torch.randn(100, 64, generator=gen)
    same = kernel_inception_distance(a, b, seed=0)["mean"]
    shifted = [kernel_inception_distance(a, b + shift, seed=0)["mean"] for shift in (0.5, 1.0)]
    assert abs(same) < 0.05 < shifted[0] < shifted[1]


@pytest.fixture(scope="module")
def inception(random_inception_weights):
    return load_inception(str(random_inception_weights), CPU)


@pytest.fixture(scope="module")
def image_sets():
    """Four random images, and the same images brightened a little and a lot.

    Few images: the Inception network takes about a second per image on a CPU.
    """
    base = np.random.default_rng(0).integers(0, 200, (4, 32, 32, 3)).astype(np.uint8)
    return {shift: (base.astype(int) + shift).clip(0, 255).astype(np.uint8)
            for shift in (0, 20, 55)}


@pytest.fixture(scope="module")
def features(inception, image_sets):
    # A batch size that does not divide the set: the last batch is short, not dropped or padded.
    return {shift: inception_features(inception, images, batch_size=3, device=CPU, desc="test")
            for shift, images in image_sets.items()}


def test_inception_gives_exactly_one_feature_vector_per_image(features):
    assert features[0].pool.shape == (4, 2048)
    assert features[0].logits.shape == (4, 1008)


def test_fid_of_a_set_with_itself_is_zero_and_grows_with_a_shift(features):
    scale = features[0].pool.var(0).sum().item()  # the FID's natural unit: total variance
    same = inception_metrics(features[0], features[0], seed=0)["fid"]
    small = inception_metrics(features[20], features[0], seed=0)["fid"]
    large = inception_metrics(features[55], features[0], seed=0)["fid"]
    assert abs(same) < 1e-4 * scale
    assert 1e-3 * scale < small < large


def test_inception_metrics_report_fid_kid_and_is(features):
    metrics = inception_metrics(features[20], features[0], seed=0)
    assert set(metrics) == {"fid", "kid", "inception_score"}
    assert set(metrics["kid"]) == set(metrics["inception_score"]) == {"mean", "std"}
    assert metrics["kid"]["mean"] > 0


def test_missing_weights_file_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match=r"evaluate.inception_weights: .*nowhere.pth not found"):
        load_inception(str(tmp_path / "nowhere.pth"), CPU)


@pytest.mark.parametrize("content", [b"not a torch file", b""])
def test_corrupt_weights_file_is_a_clear_error(tmp_path, content):
    path = tmp_path / "weights.pth"
    path.write_bytes(content)
    with pytest.raises(UserError, match=r"inception_weights: .* not a readable weights file"):
        load_inception(str(path), CPU)


def test_weights_of_another_network_are_a_clear_error(tmp_path):
    path = tmp_path / "other.pth"
    torch.save(torch.nn.Linear(3, 2).state_dict(), path)
    with pytest.raises(UserError, match="does not hold the FID Inception network"):
        load_inception(str(path), CPU)


def test_failed_download_says_how_to_pass_a_local_file(monkeypatch, tmp_path):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty cache: no earlier download
    with pytest.raises(UserError, match=r"cannot download .*evaluate\.inception_weights=/path/"):
        load_inception("", CPU)
