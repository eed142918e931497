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
            [w.item() for w in AdaptiveWeightRule().weights(grad_real, grad_fake, *scores)])
    for g, gr, gf in zip(got, grad_real, grad_fake):
        torch.testing.assert_close(g, stats["w_real"] * gr + stats["w_fake"] * gf)


# The implementation before the weights became device tensors (Python floats, math.sqrt):
# the new one must give the same weights and gradients bit for bit on the CPU.
def reference_weights(rule, grad_real, grad_fake, real_score, fake_score):
    flat_real = torch.cat([g.float().flatten() for g in grad_real])
    flat_fake = torch.cat([g.float().flatten() for g in grad_fake])
    rr, ff, rf = torch.stack([flat_real @ flat_real, flat_fake @ flat_fake,
                              flat_real @ flat_fake]).tolist()
    rr, ff = rr + rule.tiny, ff + rule.tiny
    norm_r, norm_f = math.sqrt(rr), math.sqrt(ff)
    eps = rule.epsilon
    if real_score < rule.alpha1 or real_score < fake_score - rule.delta:
        if rf <= 0:
            return 1 / norm_r + eps, -rf / (ff * norm_r) + eps
        return 1 / norm_r + eps, eps
    if real_score > rule.alpha2 and real_score > fake_score - rule.delta:
        if rf <= 0:
            return -rf / (rr * norm_f) + eps, 1 / norm_f + eps
        return eps, 1 / norm_f + eps
    return 1 / norm_r + eps, 1 / norm_f + eps


def reference_backward(real_scores, fake_scores, params, rule=AdaptiveWeightRule()):
    grad_real = torch.autograd.grad(hinge_real(real_scores), params)
    grad_fake = torch.autograd.grad(hinge_fake(fake_scores), params)
    scores = torch.stack([torch.sigmoid(real_scores.float()).mean(),
                          torch.sigmoid(fake_scores.float()).mean()]).tolist()
    w_real, w_fake = reference_weights(rule, grad_real, grad_fake, *scores)
    return w_real, w_fake, [w_real * gr + w_fake * gf for gr, gf in zip(grad_real, grad_fake)]


def case(rule, rf, real_score, fake_score):
    """The case (1-5) of Algorithm 1, to check that the random draws cover them all."""
    if real_score < rule.alpha1 or real_score < fake_score - rule.delta:
        return 1 if rf <= 0 else 2
    if real_score > rule.alpha2 and real_score > fake_score - rule.delta:
        return 3 if rf <= 0 else 4
    return 5


# The paper's rule, and one whose thresholds overlap (alpha1 > alpha2: cases 1-2 win).
# Case 5 needs alpha1 <= s_r <= alpha2.
@pytest.mark.parametrize("rule, cases", [
    (AdaptiveWeightRule(), {1, 2, 3, 4, 5}),
    (AdaptiveWeightRule(alpha1=0.8, alpha2=0.6, delta=0.1), {1, 2, 3, 4}),
], ids=["paper", "overlapping"])
def test_weights_and_gradients_match_the_python_float_rule_bit_for_bit(rule, cases):
    gen, seen = torch.Generator().manual_seed(0), set()
    shapes = [(4, 3), (5,), (1,)]
    for i in range(2000):
        scale = 10 ** (6 * torch.rand((), generator=gen).item() - 4)  # |g| from 1e-4 to 1e2
        grad_real = [torch.randn(s, generator=gen) * scale for s in shapes]
        grad_fake = [torch.randn(s, generator=gen) * scale for s in shapes]
        if i % 10 == 0:    # orthogonal: g_r . g_f == 0 exactly
            grad_fake = [torch.zeros(s) for s in shapes[:-1]] + [torch.ones(shapes[-1])]
            grad_real = grad_real[:-1] + [torch.zeros(shapes[-1])]
        scores = torch.rand(2, generator=gen)  # fp32, as discriminator_backward passes them
        if i % 7 == 0:     # on the thresholds alpha1 and alpha2
            scores[0] = (rule.alpha1, rule.alpha2)[i % 2]
        elif i % 7 == 1:   # near s_r = s_f - delta (rounded to fp32)
            scores[1] = scores[0] + rule.delta
        real_score, fake_score = scores.tolist()
        expected = reference_weights(rule, grad_real, grad_fake, real_score, fake_score)
        got = rule.weights(grad_real, grad_fake, scores[0], scores[1])
        assert all(w.dtype == torch.float64 and w.dim() == 0 for w in got)
        assert [w.item() for w in got] == list(expected), (i, real_score, fake_score)
        for gr, gf in zip(grad_real, grad_fake):
            assert torch.equal(got[0] * gr + got[1] * gf, expected[0] * gr + expected[1] * gf)
        rf = torch.cat([g.flatten() for g in grad_real]) @ torch.cat(
            [g.flatten() for g in grad_fake])
        seen.add(case(rule, rf.item(), real_score, fake_score))
    assert seen == cases


def test_discriminator_backward_matches_the_python_float_rule_bit_for_bit():
    disc, gen = tiny_discriminator(), torch.Generator().manual_seed(1)
    params = list(disc.parameters())
    for _ in range(200):
        # Shift the scores so that their sigmoid means fall in all five cases.
        shift_real, shift_fake = (6 * torch.rand(2, generator=gen) - 3).tolist()
        real, fake = torch.randn(8, 3, generator=gen), torch.randn(8, 3, generator=gen)
        w_real, w_fake, expected = reference_backward(
            disc(real).squeeze(1) + shift_real, disc(fake).squeeze(1) + shift_fake, params)
        stats = discriminator_backward("aw_hinge", disc(real).squeeze(1) + shift_real,
                                       disc(fake).squeeze(1) + shift_fake, params)
        assert (stats["w_real"].item(), stats["w_fake"].item()) == (w_real, w_fake)
        assert all(torch.equal(p.grad, g) for p, g in zip(params, expected))


def test_aw_discriminator_backward_never_reads_a_value_back_to_the_host(monkeypatch):
    # On the meta device (as on CUDA, unlike the CPU) reading a value would be a sync:
    # meta tensors have no values, and every way to read one is patched to raise.
    disc = tiny_discriminator().to("meta")
    params = list(disc.parameters())
    real, fake = torch.randn(8, 3, device="meta"), torch.randn(8, 3, device="meta")
    real_scores, fake_scores = disc(real).squeeze(1), disc(fake).squeeze(1)

    def sync(*args, **kwargs):
        raise AssertionError("host sync")
    for name in ("tolist", "item", "cpu", "numpy", "__float__", "__bool__"):
        monkeypatch.setattr(torch.Tensor, name, sync)
    stats = discriminator_backward("aw_hinge", real_scores, fake_scores, params)
    monkeypatch.undo()
    for w in (stats["w_real"], stats["w_fake"]):
        assert (w.device.type, w.dtype, w.dim()) == ("meta", torch.float64, 0)
    assert all(p.grad is not None and p.grad.device.type == "meta" for p in params)
