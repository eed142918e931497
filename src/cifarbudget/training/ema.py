"""Exponential moving averages of a network's weights (the GAN's generator, the classifier)."""
from __future__ import annotations

import torch

# The decay ramps up as (1 + step) / (10 + step) until it reaches the configured one, so an
# early average follows the trained weights rather than their random start.
EMA_WARMUP = 10


def ema_decay(decay: float, step: int) -> float:
    return min(decay, (1 + step) / (EMA_WARMUP + step))


@torch.no_grad()
def update_ema(average: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """average <- decay * average + (1 - decay) * model, for the parameters; batch-norm
    statistics are not averaged: the average uses the model's."""
    torch._foreach_lerp_(list(average.parameters()), list(model.parameters()), 1 - decay)
    for average_buffer, buffer in zip(average.buffers(), model.buffers()):
        average_buffer.copy_(buffer)
