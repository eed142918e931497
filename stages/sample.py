"""Stage `sample`: draw the evaluation set from the chosen generative model (generator.model:
the GAN's EMA generator or the VAE's decoder), and the sample figures in plots/<model>/."""
import _local_src  # noqa: F401  (first: this tree's src/ before any installed copy)

from cifarbudget.config import load_params
from cifarbudget.data.prepared import load_prepared
from cifarbudget.device import exact_float32, pick_device
from cifarbudget.errors import UserError
from cifarbudget.models.classifier import classifier_features, load_classifier
from cifarbudget.models.generator import load_sampler, sampler_name
from cifarbudget.paths import SAMPLES, classifier_model, generator_model, generator_plots
from cifarbudget.plots.samples import (save_interpolations, save_nearest_neighbours,
                                       save_real_vs_generated, save_sample_grid)
from cifarbudget.sampling import (balanced_labels, comparison_classes,
                                  comparison_draws, evaluation_draws, generate, grid_draws,
                                  interpolation_draws, nearest_neighbours, real_examples,
                                  save_samples)
from cifarbudget.stage import run_stage

GRID_SIDE = 8                                      # samples.png: 8 x 8
INTERPOLATION_PAIRS, INTERPOLATION_STEPS = 8, 10   # interpolations.png: a row per pair
COMPARISON_ROWS, COMPARISON_PER_SIDE = 8, 5        # real_vs_generated.png: a row per class
NEIGHBOUR_QUERIES, NEIGHBOURS = 8, 5               # nearest_neighbours.png: a row per sample


def main() -> None:
    params = load_params()
    s = params.sample
    device = pick_device()
    exact_float32()  # samples and metrics as a CPU run computes them
    data = load_prepared()
    model = params.generator.model
    generator, info = load_sampler(model, device)
    if info["classes"] != data.classes:
        raise UserError(f"{generator_model(model)}: trained on other classes than data/prepared "
                        f"holds; rerun `dvc repro train_generator`")
    plots = generator_plots(model)
    balanced_labels(s.count, data.num_classes)  # a bad count fails before any output is written
    classifier, mean, std = load_classifier(classifier_model(params.classifier.seeds[0]), device)
    k, z_dim = data.num_classes, info["z_dim"]

    def draw(draws, desc):
        return generate(generator, draws, s.batch_size, device, desc)

    grid = grid_draws(GRID_SIDE * GRID_SIDE, k, z_dim, s.seed)
    save_sample_grid(draw(grid, "samples.png"), grid.classes.numpy(), data.classes, GRID_SIDE,
                     plots / "samples.png", plots / "samples.txt", s.seed, sampler_name(model))

    path, ends = interpolation_draws(INTERPOLATION_PAIRS, INTERPOLATION_STEPS, k, z_dim, s.seed)
    save_interpolations(draw(path, "interpolations.png"), ends.numpy(), data.classes,
                        plots / "interpolations.png")

    rows = comparison_classes(k, COMPARISON_ROWS, s.seed)
    real = real_examples(data.test_images, data.test_labels, rows, COMPARISON_PER_SIDE, s.seed)
    fake = draw(comparison_draws(rows, COMPARISON_PER_SIDE, z_dim, s.seed), "real_vs_generated.png")
    save_real_vs_generated(real, fake, rows, data.classes, plots / "real_vs_generated.png")

    evaluation = evaluation_draws(s.count, k, z_dim, s.seed)
    images, labels = draw(evaluation, str(SAMPLES)), evaluation.classes.numpy()

    # The first draws of the (shuffled) evaluation set, so the queries are not hand-picked.
    queries = images[:NEIGHBOUR_QUERIES]
    query_features, _ = classifier_features(classifier, queries, mean, std, device, s.batch_size)
    bank, _ = classifier_features(classifier, data.train_images, mean, std, device, s.batch_size)
    index, similarity = nearest_neighbours(query_features, bank, NEIGHBOURS)
    index = index.flatten().numpy()
    save_nearest_neighbours(queries, labels[:NEIGHBOUR_QUERIES], data.train_images[index],
                            data.train_labels[index], similarity.numpy(), data.classes,
                            plots / "nearest_neighbours.png")

    save_samples(images, labels)
    print(f"{SAMPLES}: {len(images):,} images, {len(images) // k:,} per class, "
          f"from sample.seed={s.seed}; figures in {plots}/")


if __name__ == "__main__":
    run_stage(main)
