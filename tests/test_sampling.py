"""Sampling: class balance, exact uint8 quantization, reproducible draws, figure layouts."""
import numpy as np
import pytest
import torch
from PIL import Image

from cifarbudget.data.prepared import to_uint8
from cifarbudget.errors import UserError
from cifarbudget.models.gan import Generator
from cifarbudget.plots import samples as sample_plots
from cifarbudget.sampling import (Draws, balanced_labels, comparison_classes, comparison_draws,
                                  evaluation_draws, generate, grid_draws, interpolation_draws,
                                  load_samples, nearest_neighbours, real_examples, save_samples,
                                  slerp)

CPU = torch.device("cpu")
CLASSES = [f"class_{i}" for i in range(4)]


@pytest.fixture(scope="module")
def generator():
    torch.manual_seed(0)
    return Generator(z_dim=8, num_classes=4, width=8).eval()


def test_balanced_labels_give_each_class_the_same_count():
    labels = balanced_labels(40, 4)
    assert labels.dtype == np.int64
    assert np.bincount(labels).tolist() == [10, 10, 10, 10]


def test_a_count_that_is_not_a_multiple_of_the_classes_is_a_clear_error():
    with pytest.raises(UserError, match=r"sample.count: 10001 is not a multiple of the 100 "
                                        r"classes.*such as 10000"):
        balanced_labels(10_001, 100)


def test_evaluation_draws_are_balanced_shuffled_and_reproducible():
    draws = evaluation_draws(40, 4, z_dim=8, seed=0)
    assert draws.z.shape == (40, 8)
    assert np.bincount(draws.classes.numpy()).tolist() == [10, 10, 10, 10]
    assert not torch.equal(draws.classes, draws.classes.sort().values)  # any prefix is a fair mix
    again = evaluation_draws(40, 4, z_dim=8, seed=0)
    assert torch.equal(draws.z, again.z) and torch.equal(draws.classes, again.classes)
    assert not torch.equal(draws.z, evaluation_draws(40, 4, z_dim=8, seed=1).z)


def test_generated_images_are_quantized_as_a_png_would_store_them(generator, tmp_path):
    draws = evaluation_draws(12, 4, z_dim=8, seed=0)
    images = generate(generator, draws, batch_size=5, device=CPU)
    assert images.dtype == np.uint8 and images.shape == (12, 32, 32, 3)
    with torch.no_grad():
        floats = generator(draws.z, draws.classes)
    np.testing.assert_array_equal(images, to_uint8(floats))
    # Each pixel is the nearest of the 256 levels to its value in [-1, 1] (half a level away
    # at most), which a PNG then stores losslessly.
    levels = images / 127.5 - 1
    assert np.abs(levels - floats.permute(0, 2, 3, 1).numpy()).max() <= 0.5 / 127.5 + 1e-6
    Image.fromarray(images[0]).save(tmp_path / "first.png")
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "first.png")), images[0])


def test_generation_does_not_depend_on_the_batch_size(generator):
    draws = evaluation_draws(12, 4, z_dim=8, seed=0)
    np.testing.assert_array_equal(generate(generator, draws, 5, CPU),
                                  generate(generator, draws, 12, CPU))


def test_slerp_runs_from_one_endpoint_to_the_other_at_constant_norm():
    a = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    b = torch.tensor([[0.0, 1.0, 0.0], [0.0, 2.0, 0.0]])  # the second pair is parallel
    path = slerp(a, b, torch.linspace(0, 1, 5))
    assert path.shape == (2, 5, 3)
    torch.testing.assert_close(path[:, 0], a)
    torch.testing.assert_close(path[:, -1], b)
    torch.testing.assert_close(path[0].norm(dim=1), torch.ones(5))
    torch.testing.assert_close(path[0, 2], torch.tensor([0.5 ** 0.5, 0.5 ** 0.5, 0.0]))
    assert torch.isfinite(path).all()


def test_interpolations_move_z_and_the_class_weights_between_random_endpoints():
    draws, ends = interpolation_draws(pairs=8, steps=10, num_classes=4, z_dim=8, seed=0)
    assert draws.z.shape == (80, 8) and draws.classes.shape == (80, 4) and ends.shape == (8, 2)
    weights = draws.classes.view(8, 10, 4)
    torch.testing.assert_close(weights.sum(2), torch.ones(8, 10))
    torch.testing.assert_close(weights[:, 0], torch.nn.functional.one_hot(ends[:, 0], 4).float())
    torch.testing.assert_close(weights[:, -1], torch.nn.functional.one_hot(ends[:, 1], 4).float())
    z = draws.z.view(8, 10, 8)
    assert not torch.allclose(z[:, 0], z[:, -1])


def test_one_hot_weights_give_the_labels_images(generator):
    draws, ends = interpolation_draws(pairs=8, steps=10, num_classes=4, z_dim=8, seed=0)
    first_steps = draws.z.view(8, 10, 8)[:, 0]
    first_weights = draws.classes.view(8, 10, 4)[:, 0]
    by_weights = generate(generator, Draws(first_steps, first_weights), 8, CPU)
    by_labels = generate(generator, Draws(first_steps, ends[:, 0]), 8, CPU)
    np.testing.assert_array_equal(by_weights, by_labels)


def test_grid_draws_are_the_first_draws_of_their_stream():
    grid = grid_draws(64, 4, z_dim=8, seed=0)
    assert grid.z.shape == (64, 8) and grid.classes.shape == (64,)
    assert torch.equal(grid_draws(16, 4, z_dim=8, seed=0).z, grid.z[:16])
    assert len(grid.classes.unique()) == 4


def test_comparison_rows_are_distinct_classes_with_their_real_and_generated_images():
    rows = comparison_classes(num_classes=100, rows=8, seed=0)
    assert len(rows) == len(set(rows)) == 8
    assert sorted(comparison_classes(num_classes=3, rows=8, seed=0)) == [0, 1, 2]
    labels = np.array([0] * 10 + [1] * 2)
    images = np.arange(12, dtype=np.uint8)[:, None, None, None] * np.ones((1, 2, 2, 3), np.uint8)
    real = real_examples(images, labels, [1, 0], per_class=5, seed=0)
    assert [len(r) for r in real] == [2, 5]  # class 1 has only two images
    assert set(real[0][:, 0, 0, 0]) == {10, 11} and set(real[1][:, 0, 0, 0]) <= set(range(10))
    draws = comparison_draws([1, 0], per_class=5, z_dim=8, seed=0)
    assert draws.classes.tolist() == [1] * 5 + [0] * 5


def test_nearest_neighbours_by_cosine_similarity():
    bank = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.0]])
    index, similarity = nearest_neighbours(torch.tensor([[3.0, 0.1], [0.0, 5.0]]), bank, k=2)
    assert index.tolist() == [[0, 2], [1, 2]]
    assert similarity[1].tolist() == pytest.approx([1.0, 0.5 ** 0.5])


def test_samples_round_trip_and_a_missing_set_says_to_run_the_stage(tmp_path):
    images = np.zeros((8, 32, 32, 3), np.uint8)
    labels = balanced_labels(8, 4)
    save_samples(images, labels, tmp_path / "samples")
    loaded_images, loaded_labels = load_samples(tmp_path / "samples")
    np.testing.assert_array_equal(loaded_images, images)
    assert loaded_labels.dtype == np.int64 and loaded_labels.tolist() == labels.tolist()
    with pytest.raises(UserError, match=r"images.npy: missing; run `dvc repro sample` first"):
        load_samples(tmp_path / "nothing")


@pytest.fixture
def grids(monkeypatch):
    """The arguments of every image grid the sample figures save."""
    calls = []
    monkeypatch.setattr(sample_plots, "save_image_grid",
                        lambda images, path, **kwargs: calls.append({"images": images, **kwargs}))
    return calls


def cells(n, value=0):
    return np.full((n, 32, 32, 3), value, np.uint8)


def test_sample_grid_is_8_by_8_with_its_class_names_beside_it(grids, tmp_path):
    labels = grid_draws(64, 4, z_dim=8, seed=0).classes.numpy()
    sample_plots.save_sample_grid(cells(64), labels, CLASSES, 8, tmp_path / "samples.png",
                                  tmp_path / "samples.txt", seed=0, source="the VAE's decoder")
    (grid,) = grids
    assert len(grid["images"]) == 64 and grid["nrow"] == 8
    assert "sample.seed=0 (the VAE's decoder, random classes)" in grid["title"]
    assert grid["cell_labels"] == [CLASSES[y] for y in labels]
    lines = (tmp_path / "samples.txt").read_text().splitlines()
    assert [line.split() for line in lines] == [[CLASSES[y] for y in labels[r * 8:r * 8 + 8]]
                                                for r in range(8)]


def test_interpolation_figure_has_one_labelled_row_of_10_steps_per_pair(grids, tmp_path):
    ends = np.array([[0, 1], [2, 3], [3, 0], [1, 1], [0, 2], [2, 1], [3, 3], [1, 0]])
    sample_plots.save_interpolations(cells(80), ends, CLASSES, tmp_path / "interpolations.png")
    (grid,) = grids
    assert len(grid["images"]) == 80 and grid["nrow"] == 10
    assert grid["row_labels"][:2] == ["class_0 → class_1", "class_2 → class_3"]
    assert len(grid["row_labels"]) == 8


def test_real_vs_generated_puts_real_left_generated_right_per_class(grids, tmp_path):
    real = [cells(5, 10), cells(3, 20)]  # the second class has only three real images
    sample_plots.save_real_vs_generated(real, cells(10, 30), [2, 0], CLASSES, tmp_path / "rvg.png")
    (grid,) = grids
    rows = grid["images"].reshape(2, 11, 32, 32, 3)[..., 0, 0, 0]
    assert grid["nrow"] == 11 and grid["row_labels"] == ["class_2", "class_0"]
    assert rows.tolist() == [[10] * 5 + [255] + [30] * 5, [20] * 3 + [255] * 3 + [30] * 5]
    assert grid["cell_labels"][:11] == ["real"] * 5 + [""] + ["generated"] * 5


def test_nearest_neighbour_figure_shows_each_sample_then_its_neighbours(grids, tmp_path):
    similarity = np.linspace(1, 0.5, 40).reshape(8, 5)
    neighbour_labels = np.arange(40) % 3
    sample_plots.save_nearest_neighbours(cells(8, 7), np.arange(8) % 4, cells(40, 9),
                                         neighbour_labels, similarity, CLASSES, tmp_path / "nn.png")
    (grid,) = grids
    rows = grid["images"].reshape(8, 7, 32, 32, 3)[..., 0, 0, 0]
    assert grid["nrow"] == 7 and (rows == [7, 255, 9, 9, 9, 9, 9]).all()
    assert grid["row_labels"] == [CLASSES[i % 4] for i in range(8)]
    assert grid["cell_labels"][:7] == ["generated", "", "class_0\ncos 1.00"] + [
        f"class_{y}\ncos {s:.2f}" for y, s in zip(neighbour_labels[1:5], similarity[0, 1:])]


def test_the_figures_are_written_as_png(tmp_path):
    ends = np.array([[0, 1]] * 8)
    sample_plots.save_interpolations(cells(80), ends, CLASSES, tmp_path / "interpolations.png")
    assert Image.open(tmp_path / "interpolations.png").format == "PNG"
