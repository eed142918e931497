"""Training augmentation: each operation does what its name says, reproducibly, on whole batches."""
import matplotlib.image
import numpy as np
import pytest
import torch

from cifarbudget.config import AugmentParams
from cifarbudget.data import augment as augment_module
from cifarbudget.data.augment import augment_batch, random_crop
from cifarbudget.data.prepared import load_prepared
from cifarbudget.plots.data import save_augmentation_figure


def batch(n=64, dtype=torch.uint8, seed=0):
    """Random images with no zero pixels, so only cutout makes zeros."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(1, 256, (n, 3, 32, 32), generator=gen).to(dtype)


def augment(x, seed=0, **policy):
    settings = {"crop_padding": 0, "flip": False, "cutout": 0, **policy}
    return augment_batch(x, AugmentParams(**settings), torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_shape_and_dtype_are_preserved(dtype):
    x = batch(dtype=dtype)
    out = augment(x, crop_padding=4, flip=True, cutout=8)
    assert out.shape == x.shape and out.dtype == dtype
    assert not torch.equal(out, x)


def test_flip_mirrors_about_half_the_images_left_to_right():
    x = batch()
    out = augment(x, flip=True)
    flipped = [torch.equal(o, i.flip(2)) for o, i in zip(out, x)]
    kept = [torch.equal(o, i) for o, i in zip(out, x)]
    assert all(f != k for f, k in zip(flipped, kept))  # each image is one or the other
    assert 16 < sum(flipped) < 48


def test_crop_is_a_shifted_window_of_the_reflect_padded_image():
    pad = 4
    x = batch(n=128)
    out = augment(x, crop_padding=pad).numpy()
    padded = np.pad(x.numpy(), ((0, 0), (0, 0), (pad, pad), (pad, pad)), mode="reflect")
    offsets = []
    for o, p in zip(out, padded):
        matches = [(dy, dx) for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)
                   if np.array_equal(o, p[:, dy:dy + 32, dx:dx + 32])]
        assert len(matches) == 1
        offsets.append(matches[0])
    assert len(set(offsets)) > 30  # of the 81 possible shifts, drawn per image


@pytest.mark.parametrize("n, padding, channels_last", [
    (0, 4, False), (1, 4, True), (12, 4, False), (60, 4, True), (12, 1, False), (12, 16, False),
    (12, 31, True)])
def test_the_gathered_crop_is_the_reflect_padded_one(n, padding, channels_last):
    """The crop off the CPU (run here on CPU tensors: no GPU) takes the pixels the CPU's takes,
    bit for bit, and passes back the same gradients up to the order of their sums; for random
    shifts and the four extreme ones, at DiffAugment's padding (4), the largest allowed
    augment.crop_padding (16) and the largest F.pad allows (31)."""
    gen = torch.Generator().manual_seed(1000 * n + padding)
    corners = torch.tensor([0, 2 * padding])
    dy = torch.cat([corners.repeat_interleave(2), torch.randint(0, 2 * padding + 1, (n,),
                                                                generator=gen)])
    dx = torch.cat([corners.repeat(2), torch.randint(0, 2 * padding + 1, (n,), generator=gen)])
    layout = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(n + 4, 3, 32, 32, generator=gen).contiguous(memory_format=layout)
    upstream = torch.randn(n + 4, 3, 32, 32, generator=gen)
    crops, grads = [], []
    for crop in (augment_module._crop_reflect_padded, augment_module._crop_gathered):
        image = x.clone().requires_grad_()
        out = crop(image, padding, dy, dx)
        out.backward(upstream)
        crops.append(out)
        grads.append(image.grad)
    assert torch.equal(crops[0], crops[1])
    torch.testing.assert_close(grads[0], grads[1])


@pytest.mark.parametrize("device, implementation", [("cpu", "_crop_reflect_padded"),
                                                    ("meta", "_crop_gathered")])
def test_only_the_cpu_crops_by_reflect_padding(device, implementation, monkeypatch):
    """CUDA has no deterministic backward of reflect padding, so any other device gathers (a
    meta tensor stands in for a GPU); the CPU keeps the padding its earlier results came from."""
    called = []
    for name in ("_crop_reflect_padded", "_crop_gathered"):
        def spy(*args, _name=name, _crop=getattr(augment_module, name)):
            called.append(_name)
            return _crop(*args)
        monkeypatch.setattr(augment_module, name, spy)
    x = torch.zeros(2, 3, 32, 32, device=device)
    assert random_crop(x, 4, torch.Generator().manual_seed(0)).shape == x.shape
    assert called == [implementation]


@pytest.mark.parametrize("size", [5, 8])
def test_cutout_zeros_one_square_of_the_given_side(size):
    x = batch(n=128)
    out = augment(x, cutout=size)
    zero = out == 0
    assert torch.equal(zero, zero[:, :1].expand_as(zero))  # the same square in every channel
    assert torch.equal(out[~zero], x[~zero])  # everything else untouched
    sides = []
    for mask in zero[:, 0]:
        rows, cols = mask.any(1).nonzero().flatten(), mask.any(0).nonzero().flatten()
        assert len(rows) and len(cols)  # the centre is always inside the image
        box = mask[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
        assert box.all() and mask.sum() == box.numel()  # a filled rectangle
        sides.append((len(rows), len(cols)))
    assert max(sides) == (size, size)  # full size away from the border, clipped at it
    assert all(h <= size and w <= size for h, w in sides)


def test_disabled_policy_is_the_identity():
    x = batch()
    assert torch.equal(augment(x), x)


def test_the_same_seed_gives_the_same_augmentation():
    x = batch(dtype=torch.float32)
    policy = {"crop_padding": 4, "flip": True, "cutout": 6}
    assert torch.equal(augment(x, seed=7, **policy), augment(x, seed=7, **policy))
    assert not torch.equal(augment(x, seed=7, **policy), augment(x, seed=8, **policy))


def test_augmentation_figure_shows_one_row_per_class_with_views(prepared_dir, tmp_path):
    data = load_prepared(prepared_dir)  # 4 classes
    path = tmp_path / "plots" / "augmentations.png"
    save_augmentation_figure(data, AugmentParams(cutout=8), path, views=5)
    image = matplotlib.image.imread(path)
    height, width = image.shape[:2]
    assert 1.2 < width / height < 2.5  # 6 columns for 4 rows, plus class labels
    assert [p.name for p in path.parent.iterdir()] == ["augmentations.png"]


def test_class_names_are_drawn_as_plain_text_not_parsed_as_formulas(tmp_path, prepared_dir):
    data = load_prepared(prepared_dir)
    data.classes = ["$\\frac{$", "a$b$c", "$x^{2", "100$"]  # mathtext fails on the first
    path = tmp_path / "augmentations.png"
    save_augmentation_figure(data, AugmentParams(), path, views=2)
    assert path.read_bytes()[:4] == b"\x89PNG"
