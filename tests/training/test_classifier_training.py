"""Training the classifier: budgets, schedule, shuffling, resume, history and metrics."""

import pytest
import torch

import cifarbudget.training.classifier as training
import cifarbudget.training.loop as loop
from cifarbudget.config import BudgetParams, ClassifierParams, Params
from cifarbudget.data.prepared import load_prepared
from cifarbudget.errors import UserError
from cifarbudget.io import load_checkpoint, save_checkpoint
from cifarbudget.metrics.classifier_metrics import ClassifierJudge
from cifarbudget.models.classifier import build_classifier, classifier_features, load_classifier
from cifarbudget.paths import TrainingFiles
from cifarbudget.training.budget import BudgetExceeded, UpdateCap
from cifarbudget.training.classifier import (diagnostics, evaluate, learning_rate,
                                             mean_history, sgd, summarize, train_seed)
from cifarbudget.training.loop import EpochBatches

CPU = torch.device("cpu")
HISTORY_COLUMNS = ["step", "epoch", "lr", "train_loss", "train_acc", "test_loss", "test_acc"]


def tiny_params(budget_steps: int = 10_000, budget_params: int = 100_000, **classifier) -> Params:
    """A tiny run; built without load_params so tests can also bypass its checks."""
    settings = dict(seeds=[0], widths=[8, 16], depths=[1, 1], steps=12, batch_size=32,
                    warmup=0.2, eval_every=4, checkpoint_every=4) | classifier
    return Params(budget=BudgetParams(classifier_params=budget_params,
                                      classifier_steps=budget_steps),
                  classifier=ClassifierParams(**settings))


# Resumes, evaluations and saved models are compared exactly: in both precisions.
pytestmark = pytest.mark.usefixtures("one_torch_thread", "each_precision")


@pytest.fixture
def data(prepared_dir):
    return load_prepared(prepared_dir)


@pytest.fixture
def update_counter(monkeypatch):
    """Counts optimizer updates actually performed by train_seed."""
    performed = []

    class CountingCap(UpdateCap):
        def step(self):
            super().step()
            performed.append(self.updates)

    monkeypatch.setattr(training, "UpdateCap", CountingCap)
    return performed


def weights(result) -> dict:
    return result.model_file["state_dict"]


def test_learning_rate_warms_up_linearly_then_decays_to_zero():
    rates = [learning_rate(s, peak=0.4, warmup=10 / 110, total_steps=110) for s in range(110)]
    assert rates[0] == pytest.approx(0.04) and rates[9] == pytest.approx(0.4)
    assert all(a >= b for a, b in zip(rates[10:], rates[11:]))
    assert rates[-1] < 1e-3


def test_weight_decay_spares_batch_norm_and_biases_whose_rate_has_its_own_scale():
    model = training.build_classifier([8, 16], [1, 1], num_classes=3)
    decayed, bn_biases, spared = sgd(model, 0.1, 0.9, True, 5e-4, bn_bias_lr=3.0).param_groups
    assert decayed["weight_decay"] == 5e-4 and bn_biases["weight_decay"] == spared["weight_decay"] == 0
    assert all(p.ndim > 1 for p in decayed["params"]) and all(p.ndim == 1 for p in spared["params"])
    bn = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert {id(p) for p in bn_biases["params"]} == {id(m.bias) for m in bn}
    assert (bn_biases["lr_scale"], decayed["lr_scale"], spared["lr_scale"]) == (3.0, 1.0, 1.0)
    assert sum(len(g["params"]) for g in (decayed, bn_biases, spared)) == len(list(model.parameters()))


def test_each_epoch_is_a_fresh_permutation_that_a_restart_redraws_identically():
    def batches(seed):
        return EpochBatches(count=100, batch_size=30, seed=seed, device=CPU, section="classifier")

    shuffler = batches(3)  # 3 full batches per epoch
    epoch0 = torch.cat([shuffler(s) for s in range(3)])
    epoch1 = torch.cat([shuffler(s) for s in range(3, 6)])
    assert len(set(epoch0.tolist())) == 90 and len(set(epoch1.tolist())) == 90
    assert not torch.equal(epoch0, epoch1)
    assert torch.equal(batches(3)(4), shuffler(4))
    assert not torch.equal(batches(4)(4), shuffler(4))


def test_batch_larger_than_the_training_set_is_refused(data, tmp_path):
    with pytest.raises(UserError, match="classifier.batch_size: 1000 exceeds the 256 training"):
        train_seed(0, data, tiny_params(batch_size=1000), CPU, TrainingFiles(tmp_path / "c.pt"))


def test_over_budget_model_is_refused_before_any_update(data, tmp_path, update_counter):
    params = tiny_params(budget_params=1000, widths=[16, 32])
    with pytest.raises(UserError, match=r"model has [\d,]+ trainable parameters; "
                                        r"budget.classifier_params requires fewer than 1,000"):
        train_seed(0, data, params, CPU, TrainingFiles(tmp_path / "c.pt"))
    assert update_counter == [] and not (tmp_path / "c.pt").exists()


def test_training_stops_at_the_step_count_mid_epoch(data, tmp_path, update_counter, monkeypatch):
    per_step = []

    class RecordingMeans(loop.RunningMeans):
        def add(self, stats):
            per_step.append((stats["train_loss"].item(), stats["correct"].item()))
            super().add(stats)

    monkeypatch.setattr(training, "RunningMeans", RecordingMeans)
    # 256 images in batches of 32: 8 steps per epoch; 11 steps end inside the second epoch.
    result = train_seed(0, data, tiny_params(steps=11), CPU, TrainingFiles(tmp_path / "c.pt"))
    assert update_counter == list(range(1, 12)) and result.steps == 11
    assert [row["step"] for row in result.history] == [4, 8, 11]
    assert result.history[-1]["epoch"] == pytest.approx(11 / 8, abs=1e-3)
    # Each row's train metrics cover exactly the updates since the previous row.
    for row, window in zip(result.history, (per_step[0:4], per_step[4:8], per_step[8:11])):
        assert row["train_loss"] == pytest.approx(sum(loss for loss, _ in window) / len(window))
        assert row["train_acc"] == pytest.approx(sum(c for _, c in window) / (32 * len(window)))


def test_update_cap_stops_a_run_asking_for_more_than_the_budget(data, tmp_path, update_counter):
    # Skips load_params, which would refuse steps > budget: the loop itself must still stop.
    params = tiny_params(budget_steps=5, steps=9, checkpoint_every=1)
    with pytest.raises(BudgetExceeded, match="update 6 would exceed the budget of 5"):
        train_seed(0, data, params, CPU, TrainingFiles(tmp_path / "c.pt"))
    assert update_counter == [1, 2, 3, 4, 5]
    assert load_checkpoint(tmp_path / "c.pt")["step"] == 5


def test_short_training_beats_chance_clearly(data, tmp_path):
    result = train_seed(0, data, tiny_params(steps=24, eval_every=8), CPU,
                        TrainingFiles(tmp_path / "c.pt"))
    assert result.final["test_acc"] >= 0.75  # 4 classes: chance is 0.25
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert [list(row) for row in result.history] == [list(HISTORY_COLUMNS)] * 3


def test_flip_test_scores_the_mean_logits_of_each_image_and_its_mirror(data):
    torch.manual_seed(0)
    model = build_classifier([8, 16], [1, 1], data.num_classes).eval()
    images, labels = data.test_images[:64], torch.from_numpy(data.test_labels[:64])
    mirrored = images[:, :, ::-1].copy()  # NHWC: reverse the width

    def logits_of(batch):
        return classifier_features(model, batch, data.mean, data.std, CPU)[1]

    mean_logits = (logits_of(images) + logits_of(mirrored)) / 2
    expected_loss = torch.nn.functional.cross_entropy(mean_logits, labels).item()
    expected_acc = (mean_logits.argmax(1) == labels).float().mean().item()
    loss, acc = evaluate(model, images, labels, data.mean, data.std, CPU, flip_test=True)
    assert loss == pytest.approx(expected_loss, rel=1e-5) and acc == pytest.approx(expected_acc)

    plain_loss, _ = evaluate(model, images, labels, data.mean, data.std, CPU,
                             flip_test=False)
    assert plain_loss == pytest.approx(
        torch.nn.functional.cross_entropy(logits_of(images), labels).item(), rel=1e-5)
    assert plain_loss != pytest.approx(loss, rel=1e-5)  # the mirror views do change the score


@pytest.mark.parametrize("flip_test", [False, True])
def test_the_reported_accuracy_is_what_the_saved_model_scores_on_any_machine(
        data, tmp_path, each_precision, flip_test):
    """Training may run under bf16; its evaluation, in the history and the metrics, is the fp32
    one that a standalone evaluation of the saved model file and the evaluate stage compute."""
    result = train_seed(0, data, tiny_params(flip_test=flip_test), CPU,
                        TrainingFiles(tmp_path / "c.pt"))
    save_checkpoint(tmp_path / "seed_0.pt", result.model_file)
    model, mean, std = load_classifier(tmp_path / "seed_0.pt")
    views = [data.test_images, data.test_images[:, :, ::-1].copy()][:1 + flip_test]
    logits = sum(classifier_features(model, view, mean, std, CPU)[1] for view in views) / len(views)
    labels = torch.from_numpy(data.test_labels)
    assert result.final["test_loss"] == torch.nn.functional.cross_entropy(logits, labels).item()
    assert result.final["test_acc"] == (logits.argmax(1) == labels).float().mean().item()
    judge = ClassifierJudge(model, mean, std, data.test_images, data.test_labels,
                            data.num_classes, CPU, batch_size=50)
    if not flip_test:  # the evaluate stage scores the images as they are
        assert judge.real_accuracy == result.final["test_acc"]


def test_an_interrupt_ends_the_progress_bars_line_before_its_message(
        data, tmp_path, monkeypatch, capsys):
    """The message `run_stage` prints starts on a line of its own, not after the bar."""
    def interrupt(path, state):
        raise KeyboardInterrupt

    monkeypatch.setattr(loop, "save_checkpoint", interrupt)
    capsys.readouterr()
    try:
        train_seed(0, data, tiny_params(), CPU, TrainingFiles(tmp_path / "a.pt"))
    except KeyboardInterrupt as interrupt:  # what the bar wrote when run_stage prints it
        bar, message = capsys.readouterr().err, str(interrupt)
    assert "stopped at step 4" in message
    assert "4/12" in bar and bar.endswith("\n")


def test_resume_after_a_kill_continues_the_step_count_with_identical_weights(
        data, tmp_path, monkeypatch, update_counter):
    params = tiny_params(steps=10, eval_every=3, checkpoint_every=4)
    uninterrupted = train_seed(0, data, params, CPU, TrainingFiles(tmp_path / "a.pt"))

    real_save = loop.save_checkpoint

    def save_then_die(path, state):
        real_save(path, state)
        if state["step"] == 4:
            raise KeyboardInterrupt

    monkeypatch.setattr(loop, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train_seed(0, data, params, CPU, TrainingFiles(tmp_path / "b.pt"))
    monkeypatch.setattr(loop, "save_checkpoint", real_save)
    update_counter.clear()
    resumed = train_seed(0, data, params, CPU, TrainingFiles(tmp_path / "b.pt"))

    assert update_counter == list(range(5, 11))  # only the missing updates, numbered on
    assert resumed.history == uninterrupted.history  # includes a window split by the kill
    for name, tensor in weights(uninterrupted).items():
        assert torch.equal(weights(resumed)[name], tensor), name


def test_a_finished_seed_is_read_back_not_retrained(data, tmp_path, update_counter):
    params = tiny_params(steps=4)
    first = train_seed(0, data, params, CPU, TrainingFiles(tmp_path / "c.pt"))
    update_counter.clear()
    again = train_seed(0, data, params, CPU, TrainingFiles(tmp_path / "c.pt"))
    assert update_counter == [] and again.history == first.history


def test_a_checkpoint_from_other_settings_is_not_resumed(data, tmp_path, update_counter):
    train_seed(0, data, tiny_params(steps=4), CPU, TrainingFiles(tmp_path / "c.pt"))
    update_counter.clear()
    train_seed(0, data, tiny_params(steps=4, lr=0.05), CPU, TrainingFiles(tmp_path / "c.pt"))
    assert update_counter == [1, 2, 3, 4]


def test_metrics_summarize_seeds_with_mean_and_std(data, tmp_path):
    params = tiny_params(steps=4, seeds=[0, 1])
    results = [train_seed(s, data, params, CPU, TrainingFiles(tmp_path / f"{s}.pt"))
               for s in (0, 1)]
    metrics = summarize(results)
    for key in ("test_acc", "train_acc", "train_loss", "test_loss"):
        values = [r.final[key] for r in results]
        assert metrics[key]["mean"] == pytest.approx(sum(values) / 2)
        assert metrics[key]["std"] == pytest.approx(abs(values[0] - values[1]) / 2 ** 0.5)
    assert metrics["params"] == results[0].trainable_params and metrics["steps"] == 4
    assert list(metrics) == ["test_acc", "test_loss", "train_acc", "train_loss", "params", "steps"]
    log = diagnostics(results, params, CPU)
    assert log["device"] == "cpu"
    assert log["train_images_per_second"] > 0 and log["peak_process_rss_mib"] > 0
    assert log["precision"].startswith(("bf16", "fp32"))
    assert log["seeds"]["1"]["test_acc"] == results[1].final["test_acc"]

    mean = mean_history([r.history for r in results])
    assert [row["step"] for row in mean] == [4] and list(mean[0]) == list(HISTORY_COLUMNS)
    assert mean[0]["test_acc"] == pytest.approx(metrics["test_acc"]["mean"])
