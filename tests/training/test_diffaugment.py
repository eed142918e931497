"""DiffAugment: the policy string, differentiability, reproducibility from the step's generator."""
import pytest
import torch

from cifarbudget.config import parse_policy
from cifarbudget.device import stateless_generator
from cifarbudget.errors import UserError
from cifarbudget.training.diffaugment import diff_augment

ALL = parse_policy("translation,cutout,color")


def test_policy_names_are_checked_and_empty_disables():
    assert ALL == ("color", "translation", "cutout")  # always applied in this order
    assert parse_policy(" cutout , color ") == ("color", "cutout")
    assert parse_policy("") == ()
    with pytest.raises(UserError, match="gan.diffaugment: unknown operation 'rotate'; give a "
                                        "comma-separated subset of color,translation,cutout"):
        parse_policy("translation,rotate")


def test_no_policy_leaves_images_unchanged():
    x = torch.rand(4, 3, 32, 32)
    assert torch.equal(diff_augment(x, (), stateless_generator(0)), x)


def test_augmentation_is_random_per_image_and_repeats_with_the_same_generator():
    x = torch.rand(1, 3, 32, 32).repeat(8, 1, 1, 1) * 2 - 1
    a = diff_augment(x, ALL, stateless_generator(0, 5))
    assert torch.equal(a, diff_augment(x, ALL, stateless_generator(0, 5)))
    assert not torch.equal(a, diff_augment(x, ALL, stateless_generator(0, 6)))
    assert len({tuple(img.flatten()[:64].tolist()) for img in a}) == 8  # each image its own draw
    assert (a == 0).float().mean() > 0.1  # cutout blanks a quarter of each image


def test_gradients_flow_through_every_operation():
    for op in ALL:
        x = torch.rand(4, 3, 32, 32, requires_grad=True)
        diff_augment(x, (op,), stateless_generator(1)).sum().backward()
        assert x.grad is not None and x.grad.abs().sum() > 0, op
