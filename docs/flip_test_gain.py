"""Test accuracy of trained classifiers with and without `classifier.flip_test`, same weights.

    python docs/flip_test_gain.py models/classifier/seed_0.pt [more model files]

Run from the repository root, after `dvc repro prepare`: the test set is data/prepared.
"""
from __future__ import annotations

import argparse

import torch

from cifarbudget.data.prepared import load_prepared
from cifarbudget.device import pick_device
from cifarbudget.models.classifier import load_classifier
from cifarbudget.training.classifier import evaluate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="classifier files written by train_classifier")
    args = parser.parse_args()
    device = pick_device()
    data = load_prepared()
    labels = torch.from_numpy(data.test_labels)
    for path in args.models:
        model, mean, std = load_classifier(path, device)
        scores = {flip: evaluate(model, data.test_images, labels, mean, std, device, flip)
                  for flip in (False, True)}
        (plain_loss, plain_acc), (flip_loss, flip_acc) = scores[False], scores[True]
        print(f"{path}: test accuracy {plain_acc:.2%} without flip_test, {flip_acc:.2%} with it "
              f"({(flip_acc - plain_acc) * 100:+.2f} points); test loss {plain_loss:.4f} -> "
              f"{flip_loss:.4f}")


if __name__ == "__main__":
    main()
