"""GAN training: budgets, the update cap, learning signals, resume, and the files it writes."""
import csv
import dataclasses
import shutil

import pytest
import torch

from cifarbudget.config import BudgetParams, GanParams, Params
from cifarbudget.data.prepared import load_prepared
from cifarbudget.errors import UserError
from cifarbudget.io import load_checkpoint
from cifarbudget.models.generator import load_snapshot, snapshot_files
from cifarbudget.training.budget import BudgetExceeded, count_trainable
from cifarbudget.training.gan import Trainer
from cifarbudget.training.generative import train_generator
from tests.conftest import assert_same_state, training_files_in, write_prepared

TINY_GAN = dict(z_dim=8, g_width=8, d_width=8, batch_size=16, steps=6, log_every=2,
                progress_every=6, checkpoint_every=3, snapshot_every=4)


# Resumes, evaluations and saved models are compared exactly: in both precisions.
pytestmark = pytest.mark.usefixtures("one_torch_thread", "each_precision")


def tiny_params(budget: BudgetParams = BudgetParams(), **gan) -> Params:
    return Params(gan=dataclasses.replace(GanParams(), **{**TINY_GAN, **gan}), budget=budget)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return load_prepared(write_prepared(tmp_path_factory.mktemp("prepared")))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, data, each_precision):
    """A 6-step run with the tiny settings, done once for the comparisons below."""
    files = training_files_in(tmp_path_factory.mktemp("uninterrupted"), "gan")
    run = train_generator(tiny_params(), data, files)
    return run, load_checkpoint(files.checkpoint), files


def test_the_parameter_budget_is_checked_before_training(tmp_path, data):
    trainer = Trainer(tiny_params().gan, data, BudgetParams(), torch.device("cpu"))
    g, d = (count_trainable(trainer.generator), count_trainable(trainer.discriminator))
    params = tiny_params(budget=BudgetParams(generative_params=g + d))  # strictly fewer is required
    with pytest.raises(UserError, match=rf"generator {g:,} \+ discriminator {d:,}"
                                        r".*budget\.generative_params"):
        train_generator(params, data, training_files_in(tmp_path, "gan"))
    assert not any(tmp_path.iterdir())  # nothing trained, nothing written


def test_the_update_cap_stops_a_loop_that_would_exceed_it(data):
    params = tiny_params(n_dis=2).gan
    trainer = Trainer(params, data, BudgetParams(generative_steps=5), torch.device("cpu"))
    trainer.iteration()
    trainer.iteration()
    with pytest.raises(BudgetExceeded, match="discriminator: update 6 would exceed the budget of 5"):
        trainer.iteration()
    assert (trainer.opt_d.updates, trainer.opt_g.updates) == (5, 2)


def test_every_discriminator_update_counts_and_the_loop_stays_within_budget(tmp_path, data):
    params = tiny_params(budget=BudgetParams(generative_steps=6), steps=3, n_dis=2)
    run = train_generator(params, data, training_files_in(tmp_path, "gan"))
    updates = run.metrics()["updates"]
    assert (updates["discriminator"], updates["generator"]) == (6, 3)


def test_alone_each_network_learns_against_the_other(data):
    """With G frozen, D's loss falls (it separates real from fake); with D frozen, G's falls."""
    def first_and_last(key, **gan):
        params = tiny_params(**gan).gan
        torch.manual_seed(0)
        trainer = Trainer(params, data, BudgetParams(generative_steps=100), torch.device("cpu"))
        windows = []
        for _ in range(4):
            for _ in range(5):
                trainer.iteration()
            windows.append(trainer.means.pop()[key])
        return windows[0], windows[-1]

    first, last = first_and_last("d_loss", lr_g=0.0)
    assert last < 0.6 * first
    first, last = first_and_last("g_loss", lr_d=0.0)
    assert last < first - 0.5


def test_outputs_history_progress_and_metrics(uninterrupted, tmp_path):
    run, state, _ = uninterrupted
    rows = state["history"]
    assert [row["step"] for row in rows] == [2, 4, 6]
    assert list(rows[0]) == ["step", "d_loss", "g_loss", "d_real", "d_fake", "w_real", "w_fake",
                             "lr_g", "lr_d"]
    assert all(0 < row["w_real"] < 1 and 0 < row["w_fake"] < 1 for row in rows)  # AW, not 1
    metrics = run.metrics()
    g_count = count_trainable(run.trainer.generator)
    assert metrics["params"]["generator"] == g_count
    log = run.diagnostics()
    assert log["generator_ema"]["params"] == g_count
    assert log["generator_ema"]["trained"] is False
    assert not any(p.requires_grad for p in run.trainer.generator_ema.parameters())
    assert metrics["updates"]["generator"] == metrics["updates"]["discriminator"] == 6
    assert state["config"] == {"z_dim": 8, "num_classes": 4, "generator_width": 8,
                               "discriminator_width": 8}


def test_history_csv_and_progress_grid_are_written(tmp_path, data):
    outputs = training_files_in(tmp_path, "gan")
    train_generator(tiny_params(steps=3, loss="hinge"), data, outputs)
    with open(outputs.history) as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [2, 3]  # every log_every, and the last step
    assert all(float(r["w_real"]) == float(r["w_fake"]) == 1.0 for r in rows)  # plain hinge
    assert outputs.progress.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_interrupted_run_resumes_bit_identically(uninterrupted, tmp_path, data, monkeypatch):
    outputs = training_files_in(tmp_path, "gan")
    original = Trainer.iteration

    def interrupted_at_step_5(self):
        if self.step == 5:
            raise KeyboardInterrupt
        original(self)

    monkeypatch.setattr(Trainer, "iteration", interrupted_at_step_5)
    with pytest.raises(KeyboardInterrupt, match=r"train_gan stopped at step 5: rerun `dvc repro` "
                                                r"to continue from the checkpoint of step 3 \("):
        train_generator(tiny_params(), data, outputs)
    assert load_checkpoint(outputs.checkpoint)["step"] == 3  # the last checkpoint
    monkeypatch.setattr(Trainer, "iteration", original)

    resumed = train_generator(tiny_params(), data, outputs)
    assert resumed.loop.steps_this_run == 3  # steps 4 to 6 only
    assert_same_state(load_checkpoint(outputs.checkpoint), uninterrupted[1])
    kept = snapshot_files(uninterrupted[2].snapshots)
    assert [p.name for p in snapshot_files(outputs.snapshots)] == [p.name for p in kept]
    for path in kept:
        assert (outputs.snapshots / path.name).read_bytes() == path.read_bytes()


def test_snapshots_keep_the_ema_generator_every_snapshot_every_steps_and_the_last(uninterrupted):
    run, _, files = uninterrupted
    paths = snapshot_files(files.snapshots)
    assert [p.name for p in paths] == ["step_000004.pt", "step_000006.pt"]
    network, step = load_snapshot(paths[-1])
    assert step == 6 and not network.training
    assert_same_state(network.state_dict(), run.trainer.generator_ema.state_dict())


def test_a_run_that_starts_over_drops_the_snapshots_of_the_old_run(uninterrupted, tmp_path, data):
    outputs = training_files_in(tmp_path, "gan")
    shutil.copytree(uninterrupted[2].snapshots, outputs.snapshots)
    train_generator(tiny_params(steps=3, lr_d=1e-3), data, outputs)
    assert [p.name for p in snapshot_files(outputs.snapshots)] == ["step_000003.pt"]


def test_an_interruption_before_the_first_checkpoint_says_a_rerun_starts_over(tmp_path, data,
                                                                              monkeypatch):
    def interrupted_at_step_2(self):
        if self.step == 2:
            raise KeyboardInterrupt
        self.step += 1

    monkeypatch.setattr(Trainer, "iteration", interrupted_at_step_2)
    with pytest.raises(KeyboardInterrupt, match="stopped at step 2, before its first checkpoint "
                                                r"\(one every 3 steps\): a rerun of `dvc repro` "
                                                "starts it over"):
        train_generator(tiny_params(), data, training_files_in(tmp_path, "gan"))


def test_raising_gan_steps_continues_a_finished_run(uninterrupted, tmp_path, data):
    outputs = training_files_in(tmp_path, "gan")
    train_generator(tiny_params(steps=4), data, outputs)
    longer = train_generator(tiny_params(steps=6), data, outputs)
    assert longer.loop.steps_this_run == 2
    assert_same_state(load_checkpoint(outputs.checkpoint), uninterrupted[1])


def test_a_checkpoint_of_other_settings_is_not_resumed(uninterrupted, tmp_path, data):
    outputs = training_files_in(tmp_path, "gan")
    train_generator(tiny_params(steps=3), data, outputs)
    other = train_generator(tiny_params(steps=3, lr_d=1e-3), data, outputs)
    assert other.loop.steps_this_run == 3


def test_batches_larger_than_the_training_set_are_refused(tmp_path, data):
    with pytest.raises(UserError, match="gan.batch_size: 1000 exceeds the 256 training images"):
        train_generator(tiny_params(batch_size=1000), data, training_files_in(tmp_path, "gan"))
