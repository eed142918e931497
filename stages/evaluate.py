"""Stage `evaluate`: FID, KID, IS, classifier metrics and LPIPS of the samples: metrics/gan.json."""
from pathlib import Path

from cifarbudget.config import load_params
from cifarbudget.data.prepared import load_prepared
from cifarbudget.device import pick_device
from cifarbudget.io import write_json
from cifarbudget.metrics.classifier_metrics import reference_classifier_path
from cifarbudget.metrics.fid import load_inception
from cifarbudget.metrics.report import evaluate_gan, gan_model_summary, summary_line
from cifarbudget.models.classifier import load_classifier
from cifarbudget.sampling import load_samples
from cifarbudget.stage import run_stage

GAN_MODEL = Path("models/gan/gan.pt")
METRICS_JSON = Path("metrics/gan.json")


def main() -> None:
    params = load_params()
    device = pick_device()
    data = load_prepared()
    images, labels = load_samples()
    summary = gan_model_summary(GAN_MODEL)
    classifier, mean, std = load_classifier(reference_classifier_path(params), device)
    inception = load_inception(params.evaluate.inception_weights, device)
    metrics = {**summary, **evaluate_gan(params.evaluate, images, labels, data, inception,
                                         classifier, mean, std, device)}
    write_json(METRICS_JSON, metrics)
    print(f"{METRICS_JSON}: {summary_line(metrics)}")


if __name__ == "__main__":
    run_stage(main)
