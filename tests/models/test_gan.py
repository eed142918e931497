"""The SN-GAN networks: class conditioning, projection, spectral norm, loading for sampling
and for the metrics."""
import pytest
import torch
import torch.nn.functional as F

from cifarbudget.io import save_checkpoint
from cifarbudget.models.gan import (ConditionalBatchNorm2d, Discriminator, Generator, SpectralNorm,
                                    load_sampler)

Z_DIM, CLASSES, WIDTH = 16, 5, 16


def trained_looking_generator(seed: int = 0) -> Generator:
    """A generator whose per-class gains and biases differ, as after training (at
    initialisation every class has gain 1 and bias 0, so the class cannot matter yet)."""
    torch.manual_seed(seed)
    gen = Generator(Z_DIM, CLASSES, WIDTH)
    for layer in gen.modules():
        if isinstance(layer, ConditionalBatchNorm2d):
            torch.nn.init.normal_(layer.gain, 1.0, 0.3)
            torch.nn.init.normal_(layer.bias, 0.0, 0.3)
    return gen


def test_generator_makes_images_in_range_and_the_class_changes_them():
    gen = trained_looking_generator()
    z = torch.randn(1, Z_DIM).repeat(CLASSES, 1)
    images = gen(z, torch.arange(CLASSES))
    assert images.shape == (CLASSES, 3, 32, 32)
    assert images.min() >= -1 and images.max() <= 1
    gen.eval()  # no batch statistics: each image depends on its own (z, y) only
    images = gen(z, torch.arange(CLASSES))
    for a in range(CLASSES):
        for b in range(a + 1, CLASSES):
            assert (images[a] - images[b]).abs().mean() > 1e-3, (a, b)


def test_generator_takes_one_hot_or_mixed_class_weights():
    gen = trained_looking_generator().eval()
    z = torch.randn(4, Z_DIM)
    labels = torch.tensor([0, 1, 2, 4])
    one_hot = F.one_hot(labels, CLASSES).float()
    assert torch.equal(gen(z, one_hot), gen(z, labels))

    norm = gen.blocks[0].norm1
    x = torch.randn(1, WIDTH, 4, 4)
    mixed = norm(x, torch.tensor([[0.25, 0.75, 0, 0, 0]]))
    gain = 0.25 * norm.gain[0] + 0.75 * norm.gain[1]
    bias = 0.25 * norm.bias[0] + 0.75 * norm.bias[1]
    expected = norm.norm(x) * gain[None, :, None, None] + bias[None, :, None, None]
    torch.testing.assert_close(mixed, expected)


def test_discriminator_depends_on_the_label_through_the_projection():
    torch.manual_seed(0)
    disc = Discriminator(CLASSES, WIDTH).eval()
    x = torch.randn(1, 3, 32, 32).repeat(CLASSES, 1, 1, 1)
    scores = disc(x, torch.arange(CLASSES))
    assert scores.shape == (CLASSES,) and scores.dtype == torch.float32
    assert len(set(scores.tolist())) == CLASSES
    with torch.no_grad():  # one embedding shared by every class: the label no longer matters
        disc.embed.weight.copy_(disc.embed.weight[:1].expand(CLASSES, WIDTH))
    same = disc(x, torch.arange(CLASSES))
    assert torch.allclose(same, same[:1].expand(CLASSES))


def spectral_layers(module):
    return [m for m in module.modules() if isinstance(m, SpectralNorm)]


def test_spectral_norm_keeps_each_layers_largest_singular_value_near_one():
    torch.manual_seed(0)
    disc = Discriminator(CLASSES, WIDTH)
    layers = spectral_layers(disc)
    assert len(layers) == 4 * 2 + 2 + 2  # 2 convs per block, 2 shortcuts, linear, embedding
    with torch.no_grad():  # weights far from unit norm, so normalizing has work to do
        for layer in layers:
            layer.weight.mul_(7.0)
            layer.reset_spectral_norm()
    before = [layer.sn_u.clone() for layer in layers]
    disc(torch.randn(1, 3, 32, 32), torch.tensor([0]))
    assert any(not torch.equal(u, layer.sn_u) for u, layer in zip(before, layers))  # it iterates
    with torch.no_grad():
        for _ in range(200):  # what each training forward pass does: one power iteration
            for layer in layers:
                layer.normalized_weight()
    for layer in layers:
        top = torch.linalg.matrix_norm(layer.normalized_weight().flatten(1).detach(), ord=2)
        assert abs(top.item() - 1) < 0.02, (layer, top.item())
        raw = torch.linalg.matrix_norm(layer.weight.flatten(1).detach(), ord=2)
        assert raw > 1.5  # it is the normalization, not the raw weight, that has norm 1


def test_blocks_compute_the_textbook_sn_gan_blocks():
    """The blocks fold pooling into a strided conv and move the generator's shortcut
    conv before its upsampling for speed; the results are those of the plain
    formulation (conv then pool, upsample then conv)."""
    torch.manual_seed(0)
    disc = Discriminator(CLASSES, WIDTH).eval()  # eval: no power iteration between calls
    x = torch.randn(4, 3, 32, 32)
    for block in disc.blocks:
        h = block.conv2(F.relu(block.conv1(x if block.first else F.relu(x))))
        skip = x
        if block.downsample:
            h, skip = F.avg_pool2d(h, 2), F.avg_pool2d(skip, 2)
        expected = h + (block.shortcut(skip) if block.shortcut is not None else skip)
        torch.testing.assert_close(block(x), expected, atol=1e-5, rtol=1e-4)
        x = expected

    gen = trained_looking_generator().eval()
    h, y = torch.randn(4, WIDTH, 4, 4), torch.tensor([0, 1, 2, 3])
    for block in gen.blocks:
        up = F.interpolate(F.relu(block.norm1(h, y)), scale_factor=2, mode="nearest")
        expected = (block.conv2(F.relu(block.norm2(block.conv1(up), y)))
                    + block.shortcut(F.interpolate(h, scale_factor=2, mode="nearest")))
        torch.testing.assert_close(block(h, y), expected, atol=1e-5, rtol=1e-4)
        h = expected


def test_power_iteration_state_is_saved_with_the_weights():
    torch.manual_seed(0)
    disc = Discriminator(CLASSES, WIDTH)
    disc(torch.randn(2, 3, 32, 32), torch.tensor([0, 1]))
    copy = Discriminator(CLASSES, WIDTH)
    copy.load_state_dict(disc.state_dict())
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([3, 4])
    assert torch.equal(copy(x, y), disc(x, y))  # training mode: one more iteration, both alike


@pytest.mark.parametrize("channels_last", [False, True])
def test_networks_run_under_bf16_autocast_with_fp32_scores(channels_last):
    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    gen = Generator(Z_DIM, CLASSES, WIDTH).to(memory_format=fmt)
    disc = Discriminator(CLASSES, WIDTH).to(memory_format=fmt)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        images = gen(torch.randn(4, Z_DIM), torch.tensor([0, 1, 2, 3]))
        scores = disc(images, torch.tensor([0, 1, 2, 3]))
    assert images.is_contiguous(memory_format=fmt)
    assert scores.dtype == torch.float32 and torch.isfinite(scores).all()
    scores.mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in gen.parameters())


def test_load_sampler_returns_the_ema_generator_for_sampling(tmp_path):
    gen, ema = trained_looking_generator(0), trained_looking_generator(1)
    path = tmp_path / "gan.pt"
    save_checkpoint(path, {"generator": gen.state_dict(), "generator_ema": ema.state_dict(),
                           "config": {"z_dim": Z_DIM, "num_classes": CLASSES,
                                      "generator_width": WIDTH, "discriminator_width": WIDTH},
                           "classes": [f"c{i}" for i in range(CLASSES)]})
    loaded, info = load_sampler(path)
    assert info == {"z_dim": Z_DIM, "num_classes": CLASSES,
                    "classes": ["c0", "c1", "c2", "c3", "c4"]}
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    z, y = torch.randn(3, Z_DIM), torch.tensor([0, 2, 4])
    assert torch.equal(loaded(z, y), ema.eval()(z, y))
