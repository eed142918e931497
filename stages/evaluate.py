"""Stage `evaluate`: FID, KID, IS, classifier metrics and LPIPS of the samples:
metrics/<generator.model>.json (what explains them: logs/<generator.model>_evaluation.json);
the classifier's accuracy per class on generated vs real images:
plots/<generator.model>/per_class_accuracy.{csv,png}; the quality of every training snapshot:
plots/<generator.model>/quality.csv."""
import _local_src  # noqa: F401  (first: this tree's src/ before any installed copy)

from cifarbudget.config import load_params
from cifarbudget.data.prepared import load_prepared
from cifarbudget.device import exact_float32, pick_device
from cifarbudget.errors import UserError
from cifarbudget.io import write_csv, write_json
from cifarbudget.metrics.classifier_metrics import ClassifierJudge
from cifarbudget.metrics.fid import load_inception
from cifarbudget.metrics.quality import snapshot_quality
from cifarbudget.metrics.report import (evaluate_samples, split_diagnostics, summary_line,
                                        test_set_features)
from cifarbudget.models.classifier import load_classifier
from cifarbudget.models.generator import sampler_name, snapshot_files
from cifarbudget.paths import (classifier_model, evaluation_log, evaluation_metrics,
                               generator_plots, generator_snapshots)
from cifarbudget.plots.per_class import save_per_class_accuracy
from cifarbudget.sampling import load_samples
from cifarbudget.stage import run_stage


def main() -> None:
    params = load_params()
    device = pick_device()
    exact_float32()  # samples and metrics as a CPU run computes them
    data = load_prepared()
    images, labels = load_samples()
    model = params.generator.model
    classifier, mean, std = load_classifier(classifier_model(params.classifier.seeds[0]), device)
    judge = ClassifierJudge(classifier, mean, std, data.test_images, data.test_labels,
                            data.num_classes, device, params.evaluate.batch_size)
    inception = load_inception(params.evaluate.inception_weights, device)
    reference = test_set_features(inception, data, params.evaluate.batch_size, device)
    snapshots = snapshot_files(generator_snapshots(model))
    if not snapshots:
        raise UserError(f"{generator_snapshots(model)}: no training snapshot; rerun "
                        f"`dvc repro train_generator`")
    quality = snapshot_quality(params, snapshots, data, judge, inception, reference, device)
    measured, per_class = evaluate_samples(params.evaluate, images, labels, data, inception,
                                           reference, judge, device)
    metrics, diagnostics = split_diagnostics(measured)
    save_per_class_accuracy(
        per_class, data.classes, generator_plots(model) / "per_class_accuracy.csv",
        generator_plots(model) / "per_class_accuracy.png",
        f"Is each class recognisable? Classifier accuracy on {len(images):,} images\n"
        f"from {sampler_name(model)}: {metrics['classifier_accuracy_generated']:.1%} "
        f"(on the real test images: {metrics['classifier_accuracy_real']:.1%})")
    write_csv(generator_plots(model) / "quality.csv", quality)
    write_json(evaluation_log(model), {**diagnostics, "device": str(device)})
    path = evaluation_metrics(model)
    write_json(path, metrics)
    print(f"{path}: {summary_line(measured)}")


if __name__ == "__main__":
    run_stage(main)
