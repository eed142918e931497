"""GAN losses: the hinge loss and its adaptively weighted form (AW, Zadorozhnyy et al. 2021).

All of it runs in fp32: the discriminator returns fp32 scores, and the gradients the AW
rule compares are the fp32 gradients of the discriminator's parameters.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


def hinge_real(scores: torch.Tensor) -> torch.Tensor:
    """The discriminator's loss on real images: mean(max(0, 1 - D(x)))."""
    return F.relu(1 - scores.float()).mean()


def hinge_fake(scores: torch.Tensor) -> torch.Tensor:
    """The discriminator's loss on generated images: mean(max(0, 1 + D(G(z))))."""
    return F.relu(1 + scores.float()).mean()


def generator_hinge(scores: torch.Tensor) -> torch.Tensor:
    """The generator's loss: -mean(D(G(z)))."""
    return -scores.float().mean()


@dataclass(frozen=True)
class AdaptiveWeightRule:
    """Algorithm 1 of "Adaptive Weighted Discriminator for Training GANs" (normalized form).

    The discriminator minimises w_real * L_real + w_fake * L_fake, the weights being
    constants computed each update from g_r = grad L_real and g_f = grad L_fake (over all
    discriminator parameters, flattened) and the mean sigmoid scores s_r = mean sigma(D(x)),
    s_f = mean sigma(D(G(z))):

    1. real badly classified (s_r < alpha1 or s_r < s_f - delta), g_r . g_f <= 0:
           w_real = 1/|g_r| + eps,  w_fake = -(g_r . g_f) / (|g_f|^2 |g_r|) + eps
       (the combined step is g_r with its component along g_f removed: it improves L_real
       without, to first order, undoing L_fake)
    2. real badly classified, g_r . g_f > 0:
           w_real = 1/|g_r| + eps,  w_fake = eps
    3. real well classified (s_r > alpha2 and s_r > s_f - delta), g_r . g_f <= 0:
           w_real = -(g_r . g_f) / (|g_r|^2 |g_f|) + eps,  w_fake = 1/|g_f| + eps
    4. real well classified, g_r . g_f > 0:
           w_real = eps,  w_fake = 1/|g_f| + eps
    5. otherwise: w_real = 1/|g_r| + eps,  w_fake = 1/|g_f| + eps

    Squared norms get `tiny` added so a zero gradient cannot divide by zero. The defaults
    are the paper's (alpha1 0.5, alpha2 0.75, delta 0.05, eps 0.05, tiny 1e-4).
    """

    alpha1: float = 0.5
    alpha2: float = 0.75
    delta: float = 0.05
    epsilon: float = 0.05
    tiny: float = 1e-4

    def weights(self, grad_real: list[torch.Tensor], grad_fake: list[torch.Tensor],
                real_score: torch.Tensor | float, fake_score: torch.Tensor | float
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """(w_real, w_fake), 0-dim float64 tensors on the gradients' device, for
        per-parameter gradients and the mean sigmoid scores (no host sync if the scores
        are tensors on that device too)."""
        flat_real = torch.cat([g.float().flatten() for g in grad_real])
        flat_fake = torch.cat([g.float().flatten() for g in grad_fake])
        rr, ff, rf = torch.stack([flat_real @ flat_real, flat_fake @ flat_fake,
                                  flat_real @ flat_fake]).double()
        rr, ff = rr + self.tiny, ff + self.tiny
        norm_r, norm_f = _sqrt(rr), _sqrt(ff)
        s_r, s_f = (torch.as_tensor(s, dtype=torch.float64, device=rr.device)
                    for s in (real_score, fake_score))
        eps = self.epsilon
        bad = (s_r < self.alpha1) | (s_r < s_f - self.delta)                 # cases 1, 2
        good = ~bad & (s_r > self.alpha2) & (s_r > s_f - self.delta)        # cases 3, 4
        obtuse = rf <= 0
        w_real = torch.where(good, torch.where(obtuse, -rf / (rr * norm_f) + eps, eps),
                             1 / norm_r + eps)
        w_fake = torch.where(bad, torch.where(obtuse, -rf / (ff * norm_r) + eps, eps),
                             1 / norm_f + eps)
        return w_real, w_fake


def _sqrt(x: torch.Tensor) -> torch.Tensor:
    """sqrt of a 0-dim float64 tensor, correctly rounded (as math.sqrt) on every device."""
    # torch's CPU float64 sqrt is 1 ulp off in ~1.5% of cases; CUDA's is IEEE-rounded.
    if x.device.type == "cpu":
        return torch.tensor(math.sqrt(x.item()), dtype=torch.float64)  # CPU: no sync
    return x.sqrt()


def discriminator_backward(loss_name: str, real_scores: torch.Tensor, fake_scores: torch.Tensor,
                           params: list[torch.nn.Parameter],
                           rule: AdaptiveWeightRule = AdaptiveWeightRule()) -> dict:
    """Set the discriminator's gradients for `loss_name`; return the loss terms and weights.

    `real_scores` and `fake_scores` must come from separate forward passes: the AW rule
    differentiates each term on its own graph. Returns tensors d_real_loss, d_fake_loss
    and w_real, w_fake: 0-dim float64 tensors for aw_hinge (computed without a host sync),
    the floats 1.0 and 1.0 for the plain hinge loss.
    """
    loss_real, loss_fake = hinge_real(real_scores), hinge_fake(fake_scores)
    if loss_name == "hinge":
        grads = torch.autograd.grad(loss_real + loss_fake, params)
        w_real = w_fake = 1.0
    elif loss_name == "aw_hinge":
        grad_real = torch.autograd.grad(loss_real, params)
        grad_fake = torch.autograd.grad(loss_fake, params)
        w_real, w_fake = rule.weights(grad_real, grad_fake,
                                      torch.sigmoid(real_scores.float()).mean(),
                                      torch.sigmoid(fake_scores.float()).mean())
        grads = [w_real * gr + w_fake * gf for gr, gf in zip(grad_real, grad_fake)]
    else:
        raise ValueError(f"unknown GAN loss {loss_name!r}; expected hinge or aw_hinge")
    for param, grad in zip(params, grads):
        param.grad = grad
    return {"d_real_loss": loss_real.detach(), "d_fake_loss": loss_fake.detach(),
            "w_real": w_real, "w_fake": w_fake}
