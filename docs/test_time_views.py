"""Accuracy of trained classifiers under each set of test-time views, same weights: the image
alone, with its mirror (`classifier.flip_test`), and both moved by a pixel too
(`classifier.translate_test`): test-time switches need no training of their own.

    python docs/test_time_views.py models/classifier/seed_0.pt [more model files]
                                   [--validation-images 5000 --validation-seed 0] [--json OUT]

Run from the repository root, after `dvc repro prepare` (data/prepared). With
--validation-images it scores the validation split that training held out with the same
classifier.validation_images / validation_seed, never the test set.
"""
from __future__ import annotations

import argparse
import json

import torch

from cifarbudget.data.prepared import hold_out_validation, load_prepared
from cifarbudget.device import pick_device
from cifarbudget.models.classifier import load_classifier
from cifarbudget.training.classifier import evaluate

VIEWS = {"plain": (False, False), "flip_test": (True, False),
         "flip_test+translate_test": (True, True)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="classifier files written by train_classifier")
    parser.add_argument("--validation-images", type=int, default=0,
                        help="score the held-out validation split (classifier.validation_images)")
    parser.add_argument("--validation-seed", type=int, default=0,
                        help="classifier.validation_seed of the training run")
    parser.add_argument("--json", help="also write the accuracies here")
    args = parser.parse_args()
    device = pick_device()
    data = load_prepared()
    if args.validation_images:
        data = hold_out_validation(data, args.validation_images, args.validation_seed)
    split = "val" if args.validation_images else "test"
    labels = torch.from_numpy(data.test_labels)
    scores = {}
    for path in args.models:
        model, mean, std = load_classifier(path, device)
        scores[path] = {name: evaluate(model, data.test_images, labels, mean, std, device,
                                       flip, translate)[1]
                        for name, (flip, translate) in VIEWS.items()}
        print(f"{path}: {split} accuracy " + ", ".join(f"{name} {acc:.2%}"
                                                     for name, acc in scores[path].items()))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(scores, f, indent=2)


if __name__ == "__main__":
    main()
