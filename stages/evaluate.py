"""Stage `evaluate`: FID, KID, IS, classifier metrics and LPIPS of the samples, and the
chosen model's size and updates: metrics/<generator.model>.json."""
from cifarbudget.config import load_params
from cifarbudget.data.prepared import load_prepared
from cifarbudget.device import pick_device
from cifarbudget.io import write_json
from cifarbudget.metrics.classifier_metrics import reference_classifier_path
from cifarbudget.metrics.fid import load_inception
from cifarbudget.metrics.report import evaluate_samples, summary_line
from cifarbudget.models.classifier import load_classifier
from cifarbudget.models.generator import model_summary
from cifarbudget.sampling import load_samples
from cifarbudget.stage import run_stage


def main() -> None:
    params = load_params()
    device = pick_device()
    data = load_prepared()
    images, labels = load_samples()
    model = params.generator.model
    summary = model_summary(model)
    classifier, mean, std = load_classifier(reference_classifier_path(params), device)
    inception = load_inception(params.evaluate.inception_weights, device)
    metrics = {**summary, **evaluate_samples(params.evaluate, images, labels, data, inception,
                                             classifier, mean, std, device)}
    path = f"metrics/{model}.json"
    write_json(path, metrics)
    print(f"{path}: {summary_line(metrics)}")


if __name__ == "__main__":
    run_stage(main)
