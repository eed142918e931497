"""The classifier recipe's switches: warm-up as a fraction, schedule shape, batch-norm scales and
bias rate, weight averaging, alternating flip, translated test views, the validation split."""
import numpy as np
import pytest
import torch

from cifarbudget.config import AugmentParams, BudgetParams, ClassifierParams, Params
from cifarbudget.data.augment import augment_batch
from cifarbudget.data.prepared import hold_out_validation, load_prepared
from cifarbudget.errors import UserError
from cifarbudget.models.classifier import build_classifier, classifier_features
from cifarbudget.paths import TrainingFiles
from cifarbudget.training.budget import count_trainable
from cifarbudget.training.classifier import (ClassifierTrainer, evaluate, learning_rate,
                                             train_seed, translated)

CPU = torch.device("cpu")
# Resumes, evaluations and saved models are compared exactly: in both precisions.
pytestmark = pytest.mark.usefixtures("one_torch_thread", "each_precision")


def tiny_params(augment: AugmentParams = AugmentParams(), **classifier) -> Params:
    settings = dict(seeds=[0], widths=[8, 16], depths=[1, 1], steps=12, batch_size=32,
                    warmup=0.2, eval_every=6, checkpoint_every=6) | classifier
    return Params(budget=BudgetParams(), classifier=ClassifierParams(**settings), augment=augment)


@pytest.fixture
def data(prepared_dir):
    return load_prepared(prepared_dir)


def test_a_short_run_still_reaches_the_peak_rate():
    """warm-up is a fraction of the steps: 200 steps warm up over 10, not over 500."""
    rates = [learning_rate(s, peak=0.2, warmup=0.05, total_steps=200) for s in range(200)]
    assert max(rates) == rates[9] == pytest.approx(0.2)
    assert rates[0] == pytest.approx(0.02)


def test_the_linear_schedule_decays_in_a_straight_line_to_zero():
    rates = [learning_rate(s, peak=1.0, warmup=0.0, total_steps=100, shape="linear")
             for s in range(100)]
    assert rates[0] == 1.0 and rates[50] == pytest.approx(0.5) and rates[99] == pytest.approx(0.01)
    cosine = learning_rate(25, peak=1.0, warmup=0.0, total_steps=100)
    assert cosine == pytest.approx(0.5 * (1 + np.cos(np.pi / 4)))


def test_fixed_batch_norm_scales_are_not_trained_nor_counted_but_the_zero_ones_are():
    learnable, fixed = (build_classifier([8, 16], [1, 1], 10, bn_scale) for bn_scale in (True, False))
    norms = [m for m in fixed.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    zero_init = {id(block.conv2[-1].weight) for block in fixed.blocks}
    frozen = [m.weight for m in norms if id(m.weight) not in zero_init]
    assert frozen and not any(w.requires_grad for w in frozen)
    assert all(m.weight.requires_grad for m in norms if id(m.weight) in zero_init)
    assert count_trainable(learnable) - count_trainable(fixed) == sum(w.numel() for w in frozen)


def test_batch_norm_biases_learn_at_their_own_rate(data):
    trainer = ClassifierTrainer(0, data, tiny_params(bn_bias_lr=4.0), CPU)
    trainer.iteration()
    lr = learning_rate(0, 0.2, 0.2, 12)
    assert [g["lr"] for g in trainer.optimizer.param_groups] == [lr, 4 * lr, lr]


def test_the_weight_average_is_evaluated_and_saved(data, tmp_path):
    params = tiny_params(ema=0.9)
    result = train_seed(0, data, params, CPU, TrainingFiles(tmp_path / "c.pt"))
    trainer = ClassifierTrainer(0, data, params, CPU)
    trainer.load_state_dict(torch.load(tmp_path / "c.pt", weights_only=True))
    saved = result.model_file["state_dict"]
    for name, value in trainer.ema_model.state_dict().items():
        assert torch.equal(saved[name], value), name
    raw = trainer.model.state_dict()
    assert not torch.equal(saved["head.weight"], raw["head.weight"])  # an average, not the last
    loss, accuracy = evaluate(trainer.ema_model, data.test_images, torch.from_numpy(data.test_labels),
                              data.mean, data.std, CPU, True)
    assert (result.final["test_loss"], result.final["test_acc"]) == (loss, accuracy)


def test_alternating_flip_mirrors_each_image_every_other_epoch(data):
    augment = AugmentParams(crop_padding=0, flip=True, alternating_flip=True)
    trainer = ClassifierTrainer(0, data, tiny_params(augment=augment, batch_size=128), CPU)
    per_epoch = trainer.batches.per_epoch  # 256 images in batches of 128: 2 steps an epoch
    seen = {}
    for step in range(3 * per_epoch):
        rows = trainer.batches(step)
        flips = (trainer.flip_start[rows] + step // per_epoch) % 2 == 1
        for row, flipped in zip(rows.tolist(), flips.tolist()):
            seen.setdefault(row, []).append(flipped)
    assert all(len(f) == 3 and f[0] != f[1] != f[2] for f in seen.values())
    assert 0.3 < trainer.flip_start.float().mean() < 0.7  # a random start per image
    x = torch.arange(2 * 3 * 4 * 4).reshape(2, 3, 4, 4)
    out = augment_batch(x, augment, torch.Generator(), torch.tensor([True, False]))
    assert torch.equal(out[0], x[0].flip(2)) and torch.equal(out[1], x[1])


def test_translated_views_move_by_one_pixel_with_a_reflected_border():
    images = torch.arange(2 * 5 * 5 * 3, dtype=torch.uint8).reshape(2, 5, 5, 3)
    down_right = translated(images, 1)
    assert torch.equal(down_right[:, 1:, 1:], images[:, :-1, :-1])
    assert torch.equal(down_right[:, 0, 1:], images[:, 1, :-1])  # row -1 reflects row 1
    assert torch.equal(translated(images, -1)[:, :-1, :-1], images[:, 1:, 1:])


def test_translate_test_averages_the_flipped_and_translated_views(data):
    torch.manual_seed(0)
    model = build_classifier([8, 16], [1, 1], data.num_classes).eval()
    images = torch.from_numpy(data.test_images[:64])
    labels = torch.from_numpy(data.test_labels[:64])
    views = [images, images.flip(2)]
    views += [translated(v, s) for v in views for s in (1, -1)]
    logits = sum(classifier_features(model, v, data.mean, data.std, CPU)[1] for v in views) / 6
    expected = torch.nn.functional.cross_entropy(logits, labels).item()
    loss, _ = evaluate(model, images, labels, data.mean, data.std, CPU, True, True)
    assert loss == pytest.approx(expected, rel=1e-6)
    assert loss != pytest.approx(evaluate(model, images, labels, data.mean, data.std, CPU,
                                          True)[0], rel=1e-6)


def test_validation_images_are_held_out_class_balanced_and_fixed_by_their_seed(data):
    split = hold_out_validation(data, 40, seed=0)
    assert len(split.test_labels) == 40 and len(split.train_labels) == len(data.train_labels) - 40
    assert np.bincount(split.test_labels).tolist() == [10] * data.num_classes
    key = lambda images: {bytes(image) for image in images}  # noqa: E731
    assert not key(split.test_images) & key(split.train_images)
    assert key(split.test_images) <= key(data.train_images)
    assert np.array_equal(hold_out_validation(data, 40, seed=0).test_images, split.test_images)
    assert not np.array_equal(hold_out_validation(data, 40, seed=1).test_images, split.test_images)
    with pytest.raises(UserError, match=r"classifier.validation_images: 42 is not a multiple of "
                                        r"the 4 classes"):
        hold_out_validation(data, 42, seed=0)


def test_with_validation_images_the_test_set_is_never_scored(data, tmp_path, monkeypatch):
    scored = []
    real = ClassifierTrainer.history_row

    def spy(self, means):
        scored.append(len(self.test_labels))
        return real(self, means)

    monkeypatch.setattr(ClassifierTrainer, "history_row", spy)
    result = train_seed(0, data, tiny_params(validation_images=40), CPU,
                        TrainingFiles(tmp_path / "c.pt"))
    assert scored == [40, 40]
    assert list(result.final) == ["step", "epoch", "lr", "train_loss", "train_acc", "val_loss",
                                  "val_acc"]


def test_patch_whitening_makes_the_training_patches_uncorrelated_with_unit_variance(data):
    trainer = ClassifierTrainer(0, data, tiny_params(whiten=True), CPU)
    whitening = trainer.model.stem[0]
    images = trainer.normalize(torch.from_numpy(data.train_images).permute(0, 3, 1, 2))
    out = whitening(images)[:, :12].permute(0, 2, 3, 1).reshape(-1, 12).double()
    covariance = torch.cov(out.T)
    assert torch.allclose(covariance, torch.eye(12, dtype=torch.float64), atol=0.05)
    assert not whitening.weight.requires_grad
    assert torch.equal(whitening(images)[:, 12:], -whitening(images)[:, :12])


def test_a_whitened_classifier_is_saved_and_read_back_with_its_layer(data, tmp_path):
    from cifarbudget.io import save_checkpoint
    from cifarbudget.models.classifier import load_classifier

    result = train_seed(0, data, tiny_params(whiten=True, steps=2), CPU,
                        TrainingFiles(tmp_path / "c.pt"))
    save_checkpoint(tmp_path / "model.pt", result.model_file)
    model, _, _ = load_classifier(tmp_path / "model.pt")
    assert model.whiten
    assert torch.equal(model.stem[0].weight, result.model_file["state_dict"]["stem.0.weight"])
    plain = train_seed(0, data, tiny_params(steps=2), CPU, TrainingFiles(tmp_path / "p.pt"))
    assert "whiten" not in plain.model_file  # the plain model file is as before
