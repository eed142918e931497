"""Budgets enforced by code: parameter counts before training, update caps during it."""
from __future__ import annotations

from typing import Callable

import torch

from cifarbudget.errors import UserError


class BudgetExceeded(RuntimeError):
    """An optimizer was asked for more updates than its budget allows."""


def count_trainable(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def skeleton(build: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    """The module `build` makes, on the meta device: its parameters have shapes but no memory,
    so a configuration is counted (and refused) before anything is allocated."""
    with torch.device("meta"):
        return build()


def check_param_budget(counts: dict[str, int], limit: int, budget_key: str) -> int:
    """Raise unless the summed trainable parameters are strictly fewer than `limit`."""
    total = sum(counts.values())
    if total >= limit:
        parts = " + ".join(f"{name} {n:,}" for name, n in counts.items())
        detail = f" ({parts})" if len(counts) > 1 else ""
        raise UserError(f"model has {total:,} trainable parameters{detail}; {budget_key} requires "
                        f"fewer than {limit:,}: reduce the widths or depths in params.yaml")
    return total


class UpdateCap:
    """Wraps an optimizer and refuses any update past `limit`.

    The training loops are written to stop in time; this guard makes it impossible
    for any code path (a resume bug, an extra step) to exceed the budget silently.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, limit: int, name: str, done: int = 0):
        self.optimizer = optimizer
        self.limit = limit
        self.name = name
        self.updates = done

    def step(self) -> None:
        if self.updates >= self.limit:
            raise BudgetExceeded(f"{self.name}: update {self.updates + 1} would exceed the "
                                 f"budget of {self.limit} optimizer updates")
        self.optimizer.step()
        self.updates += 1

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)
