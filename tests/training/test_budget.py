import pytest
import torch

from cifarbudget.errors import UserError
from cifarbudget.training.budget import BudgetExceeded, UpdateCap, check_param_budget, count_trainable


def test_count_trainable_ignores_frozen_parameters():
    net = torch.nn.Sequential(torch.nn.Linear(10, 5), torch.nn.Linear(5, 2))
    net[1].weight.requires_grad_(False)
    assert count_trainable(net) == 10 * 5 + 5 + 2


def test_param_budget_is_strict_and_names_counts():
    assert check_param_budget({"net": 99}, 100, "budget.x") == 99
    with pytest.raises(UserError, match=r"100 trainable parameters.*budget\.x requires fewer than 100"):
        check_param_budget({"net": 100}, 100, "budget.x")
    with pytest.raises(UserError, match=r"generator 600 \+ discriminator 500"):
        check_param_budget({"generator": 600, "discriminator": 500}, 1000, "budget.gan_params")


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
