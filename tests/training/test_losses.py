"""Hinge losses and the adaptive weights of the AW discriminator, on hand-made cases."""
import math

import pytest
import torch

from cifarbudget.training.losses import (AdaptiveWeightRule, discriminator_backward,
                                         generator_hinge, hinge_fake, hinge_real)

RULE = AdaptiveWeightRule(tiny=0.0)  # exact hand arithmetic
EPS = RULE.epsilon
SQRT2 = math.sqrt(2)


def test_hinge_terms_count_only_scores_inside_the_margin():
    scores = torch.tensor([2.0, 0.5, -0.5, -2.0])
    assert hinge_real(scores).item() == pytest.approx((0 + 0.5 + 1.5 + 3) / 4)
    assert hinge_fake(scores).item() == pytest.approx((3 + 1.5 + 0.5 + 0) / 4)
    assert generator_hinge(scores).item() == pytest.approx(0.0)
    assert hinge_real(scores.bfloat16()).dtype == torch.float32


def weights(g_real, g_fake, real_score, fake_score):
    return RULE.weights([torch.tensor(g_real)], [torch.tensor(g_fake)], real_score, fake_score)


# Gradients g_r = (1, 0), |g_r| = 1; g_f = (-1, 1) (obtuse, dot -1) or (1, 1) (acute, dot 1),
# |g_f| = sqrt(2). Scores: real badly classified (s_r < alpha1 = 0.5, or s_r < s_f - delta),
# well classified (s_r > alpha2 = 0.75 and s_r > s_f - delta), or in between.
@pytest.mark.parametrize("g_fake, real_score, fake_score, expected", [
    ((-1.0, 1.0), 0.40, 0.30, (1 + EPS, 1 / 2 + EPS)),               # case 1
    ((-1.0, 1.0), 0.60, 0.70, (1 + EPS, 1 / 2 + EPS)),               # case 1 via s_r < s_f - delta
    ((1.0, 1.0), 0.40, 0.30, (1 + EPS, EPS)),                        # case 2
    ((-1.0, 1.0), 0.80, 0.30, (1 / SQRT2 + EPS, 1 / SQRT2 + EPS)),  # case 3
    ((1.0, 1.0), 0.80, 0.30, (EPS, 1 / SQRT2 + EPS)),                # case 4
    ((1.0, 1.0), 0.60, 0.30, (1 + EPS, 1 / SQRT2 + EPS)),            # case 5
], ids=["1-real-bad-obtuse", "1-real-below-fake", "2-real-bad-acute", "3-real-good-obtuse",
        "4-real-good-acute", "5-in-between"])
def test_adaptive_weights_follow_algorithm_1(g_fake, real_score, fake_score, expected):
    assert weights((1.0, 0.0), g_fake, real_score, fake_score) == pytest.approx(expected)


def test_when_real_is_badly_classified_the_step_does_not_undo_the_fake_term():
    g_real, g_fake = torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 1.0])
    w_real, w_fake = weights(g_real.tolist(), g_fake.tolist(), 0.4, 0.3)
    direction = (w_real - EPS) * g_real + (w_fake - EPS) * g_fake
    assert direction @ g_fake == pytest.approx(0.0)  # orthogonal to the fake gradient
    assert direction @ g_real > 0                     # and still improves the real term


def test_zero_gradients_do_not_divide_by_zero():
    w = AdaptiveWeightRule().weights([torch.zeros(3)], [torch.zeros(3)], 0.6, 0.4)
    assert all(math.isfinite(v) for v in w)


def tiny_discriminator():
    torch.manual_seed(0)
    return torch.nn.Linear(3, 1)


@pytest.mark.parametrize("loss", ["hinge", "aw_hinge"])
def test_discriminator_backward_sets_the_weighted_sum_of_the_term_gradients(loss):
    disc = tiny_discriminator()
    params = list(disc.parameters())
    real, fake = torch.randn(8, 3), torch.randn(8, 3)
    stats = discriminator_backward(loss, disc(real).squeeze(1), disc(fake).squeeze(1), params)
    got = [p.grad.clone() for p in params]

    grad_real = torch.autograd.grad(hinge_real(disc(real).squeeze(1)), params)
    grad_fake = torch.autograd.grad(hinge_fake(disc(fake).squeeze(1)), params)
    if loss == "hinge":
        assert stats["w_real"] == stats["w_fake"] == 1.0
    else:
        scores = [torch.sigmoid(disc(x)).mean().item() for x in (real, fake)]
        assert (stats["w_real"], stats["w_fake"]) == pytest.approx(
            AdaptiveWeightRule().weights(grad_real, grad_fake, *scores))
    for g, gr, gf in zip(got, grad_real, grad_fake):
        torch.testing.assert_close(g, stats["w_real"] * gr + stats["w_fake"] * gf)
