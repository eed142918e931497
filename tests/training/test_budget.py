import pytest
import torch

from cifarbudget.errors import UserError
from cifarbudget.training.budget import (BudgetExceeded, UpdateCap, check_param_budget,
                                         count_trainable)


def test_count_trainable_ignores_frozen_parameters():
    net = torch.nn.Sequential(torch.nn.Linear(10, 5), torch.nn.Linear(5, 2))
    net[1].weight.requires_grad_(False)
    assert count_trainable(net) == 10 * 5 + 5 + 2


def test_param_budget_is_strict_and_names_counts():
    assert check_param_budget({"net": 99}, 100, "budget.x") == 99
    with pytest.raises(UserError, match=r"100 trainable parameters.*budget\.x requires fewer than 100"):
        check_param_budget({"net": 100}, 100, "budget.x")
    with pytest.raises(UserError, match=r"generator 600 \+ discriminator 500"):
        check_param_budget({"generator": 600, "discriminator": 500}, 1000, "budget.generative_params")


def test_update_cap_refuses_the_update_past_the_limit():
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=1.0)
    capped = UpdateCap(opt, limit=3, name="classifier")
    for _ in range(3):
        param.grad = torch.ones(1)
        capped.step()
    assert capped.updates == 3 and param.item() == -3.0
    param.grad = torch.ones(1)
    with pytest.raises(BudgetExceeded, match="update 4 would exceed the budget of 3"):
        capped.step()
    assert param.item() == -3.0  # the refused update changed nothing


def test_update_cap_counts_updates_done_before_a_resume():
    param = torch.nn.Parameter(torch.zeros(1))
    capped = UpdateCap(torch.optim.SGD([param], lr=1.0), limit=5, name="d", done=5)
    param.grad = torch.ones(1)
    with pytest.raises(BudgetExceeded):
        capped.step()


@pytest.fixture
def build_devices(monkeypatch):
    """The device of every network the training code builds: "meta" means counted only."""
    from cifarbudget.training import classifier, gan, vae

    devices = []

    def recording(module, name):
        real = getattr(module, name)

        def build(*args, **kwargs):
            network = real(*args, **kwargs)
            devices.append(next(network.parameters()).device.type)
            return network
        monkeypatch.setattr(module, name, build)

    recording(classifier, "build_classifier")
    recording(gan, "Generator")
    recording(gan, "Discriminator")
    recording(vae, "ConditionalVAE")
    return devices


MANY_CLASSES = 200_000  # each class adds a row to the class embeddings and output layers


def test_an_oversized_classifier_is_refused_before_it_is_allocated(build_devices):
    from cifarbudget.config import Params
    from cifarbudget.training.classifier import budgeted_classifier

    with pytest.raises(UserError, match=r"model has [\d,]+ trainable parameters; budget\."
                                        r"classifier_params requires fewer than 100,000"):
        budgeted_classifier(Params(), MANY_CLASSES)
    assert build_devices == ["meta"]


@pytest.mark.parametrize("model", ["gan", "vae"])
def test_an_oversized_generative_model_is_refused_before_it_is_allocated(build_devices, model):
    from cifarbudget.config import GanParams, VaeParams
    from cifarbudget.training import gan, vae

    module, params = (gan, GanParams()) if model == "gan" else (vae, VaeParams())
    with pytest.raises(UserError, match=r"requires fewer than 1,000,000"):
        module.check_budget(params, MANY_CLASSES, 1_000_000)
    assert set(build_devices) == {"meta"}
