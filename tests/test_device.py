import torch

from cifarbudget.device import autocast, pick_device, stateless_generator


def test_stateless_generator_depends_only_on_keys():
    a = torch.rand(4, generator=stateless_generator(0, 5))
    torch.rand(100)  # global RNG use in between must not matter
    b = torch.rand(4, generator=stateless_generator(0, 5))
    c = torch.rand(4, generator=stateless_generator(0, 6))
    d = torch.rand(4, generator=stateless_generator(1, 5))
    assert torch.equal(a, b)
    assert not torch.equal(a, c) and not torch.equal(a, d)


def test_autocast_disabled_keeps_fp32():
    device = pick_device()
    x = torch.randn(4, 4, device=device)
    with autocast(device, enabled=False):
        assert (x @ x).dtype == torch.float32
