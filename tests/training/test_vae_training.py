"""VAE training: the loss, budgets, the update cap, learning, resume, and the files it writes."""
import csv
import dataclasses

import pytest
import torch

from cifarbudget.config import BudgetParams, GeneratorParams, Params, VaeParams
from cifarbudget.data.prepared import load_prepared
from cifarbudget.errors import UserError
from cifarbudget.io import load_checkpoint
from cifarbudget.training.budget import BudgetExceeded
from cifarbudget.training.generative import train_generator
from cifarbudget.training.vae import Trainer, vae_loss
from tests.conftest import assert_same_state, training_files_in, write_prepared

TINY_VAE = dict(z_dim=8, encoder_width=8, decoder_width=8, batch_size=16, steps=6, log_every=2,
                progress_every=6, checkpoint_every=3)

# Resumes, evaluations and saved models are compared exactly: in both precisions.
pytestmark = pytest.mark.usefixtures("one_torch_thread", "each_precision")


def tiny_params(budget: BudgetParams = BudgetParams(), **vae) -> Params:
    return Params(vae=dataclasses.replace(VaeParams(), **{**TINY_VAE, **vae}), budget=budget,
                  generator=GeneratorParams(model="vae"))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return load_prepared(write_prepared(tmp_path_factory.mktemp("prepared")))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, data, each_precision):
    folder = tmp_path_factory.mktemp("uninterrupted")
    train_generator(tiny_params(), data, training_files_in(folder, "vae"))
    return load_checkpoint(training_files_in(folder, "vae").checkpoint)


def test_the_loss_is_the_squared_error_plus_beta_times_the_closed_form_kl():
    x = torch.zeros(2, 3, 32, 32)
    reconstruction = torch.full((2, 3, 32, 32), 0.5)
    mean, log_var = torch.tensor([[1.0, 0.0], [0.0, 0.0]]), torch.zeros(2, 2)
    terms = vae_loss(x, reconstruction, mean, log_var, beta=0.1)
    assert terms["recon"].item() == pytest.approx(3 * 32 * 32 * 0.25)
    # KL(N(mu, 1) || N(0, 1)) = mu^2 / 2: 0.5 for the first image, 0 for the second.
    assert terms["kl"].item() == pytest.approx(0.25)
    assert terms["loss"].item() == pytest.approx(768 + 0.1 * 0.25)
    # A posterior equal to the prior costs nothing; a narrower one does.
    zero = vae_loss(x, x, torch.zeros(1, 4), torch.zeros(1, 4), beta=1.0)
    assert zero["kl"].item() == 0 and zero["loss"].item() == 0
    assert vae_loss(x, x, torch.zeros(1, 4), torch.full((1, 4), -2.0), 1.0)["kl"] > 0


def test_the_loss_decreases_on_a_small_synthetic_set(tmp_path, data):
    params = tiny_params(steps=60, log_every=10, progress_every=60, checkpoint_every=60)
    train_generator(params, data, training_files_in(tmp_path, "vae"))
    with open(training_files_in(tmp_path, "vae").history) as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == list(range(10, 61, 10))
    first, last = float(rows[0]["loss"]), float(rows[-1]["loss"])
    assert last < 0.7 * first, (first, last)
    assert list(rows[0]) == ["step", "loss", "recon", "kl", "lr"]
    assert training_files_in(tmp_path, "vae").progress.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_parameter_budget_is_checked_before_training(tmp_path, data):
    trainer = Trainer(tiny_params().vae, data, BudgetParams(), torch.device("cpu"))
    counts = trainer.param_counts()
    params = tiny_params(budget=BudgetParams(generative_params=sum(counts.values())))
    with pytest.raises(UserError, match=rf"encoder {counts['encoder']:,} \+ decoder "
                                        rf"{counts['decoder']:,}\); budget\.generative_params"):
        train_generator(params, data, training_files_in(tmp_path, "vae"))
    assert not any(tmp_path.iterdir())  # nothing trained, nothing written


def test_the_update_cap_stops_a_loop_that_would_exceed_it(data):
    params = tiny_params().vae
    trainer = Trainer(params, data, BudgetParams(generative_steps=2), torch.device("cpu"))
    trainer.iteration()
    trainer.iteration()
    with pytest.raises(BudgetExceeded, match="encoder and decoder: update 3 would exceed"):
        trainer.iteration()


def test_an_interrupted_run_resumes_bit_identically(uninterrupted, tmp_path, data, monkeypatch):
    files = training_files_in(tmp_path, "vae")
    original = Trainer.iteration

    def interrupted_at_step_5(self):
        if self.step == 5:
            raise KeyboardInterrupt
        original(self)

    monkeypatch.setattr(Trainer, "iteration", interrupted_at_step_5)
    with pytest.raises(KeyboardInterrupt):
        train_generator(tiny_params(), data, files)
    assert load_checkpoint(files.checkpoint)["step"] == 3
    monkeypatch.setattr(Trainer, "iteration", original)

    resumed = train_generator(tiny_params(), data, files)
    assert resumed.loop.steps_this_run == 3
    assert_same_state(load_checkpoint(files.checkpoint), uninterrupted)


def test_a_checkpoint_of_other_settings_is_not_resumed(tmp_path, data):
    files = training_files_in(tmp_path, "vae")
    train_generator(tiny_params(steps=3), data, files)
    assert train_generator(tiny_params(steps=3, beta=0.5), data, files).loop.steps_this_run == 3
    assert train_generator(tiny_params(steps=3, beta=0.5), data, files).loop.steps_this_run == 0
