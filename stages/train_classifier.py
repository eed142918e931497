"""Stage train_classifier: train one depthwise-separable ResNet per seed within the budgets.

Writes models/classifier/seed_<seed>.pt, plots/classifier/{history.csv, curves.png,
seeds/seed_<seed>.csv}, metrics/classifier.json and logs/classifier_training.json;
checkpoints/classifier/ lets an interrupted run continue where it stopped.
"""
import _local_src  # noqa: F401  (first: this tree's src/ before any installed copy)

from cifarbudget.config import load_params
from cifarbudget.data.prepared import load_prepared
from cifarbudget.device import pick_device
from cifarbudget.io import atomic_dir, save_checkpoint, write_csv, write_json
from cifarbudget.paths import (CLASSIFIER_CURVES, CLASSIFIER_HISTORY, CLASSIFIER_LOG,
                               CLASSIFIER_METRICS, CLASSIFIER_MODELS, CLASSIFIER_SEED_HISTORIES,
                               classifier_model, classifier_seed_history,
                               classifier_training_files)
from cifarbudget.plots.classifier import plot_training_curves
from cifarbudget.stage import run_stage
from cifarbudget.training.classifier import diagnostics, mean_history, summarize, train_seed


def main() -> None:
    params = load_params()
    data = load_prepared()
    device = pick_device()
    results = [train_seed(seed, data, params, device, classifier_training_files(seed))
               for seed in params.classifier.seeds]

    with atomic_dir(CLASSIFIER_MODELS) as folder:
        for result in results:
            save_checkpoint(folder / classifier_model(result.seed).name, result.model_file)
    with atomic_dir(CLASSIFIER_SEED_HISTORIES) as folder:
        for result in results:
            write_csv(folder / classifier_seed_history(result.seed).name, result.history)
    histories = [result.history for result in results]
    write_csv(CLASSIFIER_HISTORY, mean_history(histories))
    plot_training_curves(histories, CLASSIFIER_CURVES,
                         f"Classifier on {data.name}: {results[0].trainable_params:,} parameters, "
                         f"{results[0].steps:,} steps of {params.classifier.batch_size}")
    metrics = summarize(results)
    write_json(CLASSIFIER_LOG, diagnostics(results, params, device))
    write_json(CLASSIFIER_METRICS, metrics)
    split = "val" if params.classifier.validation_images else "test"
    accuracy = metrics[f"{split}_acc"]
    print(f"{split} accuracy {accuracy['mean']:.4f} ± {accuracy['std']:.4f} over {len(results)} "
          f"seed(s)")


if __name__ == "__main__":
    run_stage(main)
