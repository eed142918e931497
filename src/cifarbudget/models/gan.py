"""A class-conditional SN-GAN for 32x32 images (the ResNet variant of Miyato & Koyama, 2018).

Generator: z ~ N(0, I) -> linear to a 4x4 map -> three upsampling residual blocks with
conditional batch norm (a per-class gain and bias) -> batch norm, ReLU, 3x3 conv, tanh.

Discriminator: four residual blocks (the first two halve the resolution), every weight
spectrally normalized, ReLU and global sum pooling, then a projection head:
    D(x, y) = linear(h) + <embedding(y), h>.

The class input of the generator is either int64 labels (B,) or float class weights
(B, num_classes): one-hot weights give exactly the labels' output, and a mixture blends
the per-class gains and biases linearly, which is how samples interpolate between classes.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from cifarbudget.io import load_checkpoint, reading
from cifarbudget.models.saved import build_saved, saved_classes

SAMPLER_NAME = "the GAN's EMA generator"  # the network that stages/sample.py draws from
STEM_SIZE = 4  # side of the generator's first feature map; three 2x upsamplings reach 32


def class_rows(table: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Rows of a per-class `table` (K, C) for labels (B,) or class weights (B, K)."""
    if y.is_floating_point():
        # A broadcast product and sum, not a matmul: autocast would run a matmul in bf16,
        # and with one-hot weights the sum adds exact zeros, giving the row bit for bit.
        return (y.float()[:, :, None] * table[None]).sum(1)
    return table[y]


class ConditionalBatchNorm2d(nn.Module):
    """Batch norm without its own affine part, then a gain and a bias chosen by the class."""

    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.norm = nn.BatchNorm2d(channels, affine=False)
        self.gain = nn.Parameter(torch.ones(num_classes, channels))
        self.bias = nn.Parameter(torch.zeros(num_classes, channels))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.norm(x)
        # In h's dtype: under bf16 autocast the activations stay bf16 rather than fp32.
        gain = class_rows(self.gain, y)[:, :, None, None].to(h.dtype)
        bias = class_rows(self.bias, y)[:, :, None, None].to(h.dtype)
        return h * gain + bias


class GeneratorBlock(nn.Module):
    """CBN, ReLU, 2x nearest upsampling, conv, CBN, ReLU, conv; shortcut: 1x1 conv, upsampling."""

    def __init__(self, in_channels: int, out_channels: int, num_classes: int):
        super().__init__()
        self.norm1 = ConditionalBatchNorm2d(in_channels, num_classes)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = ConditionalBatchNorm2d(out_channels, num_classes)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = F.interpolate(F.relu(self.norm1(x, y)), scale_factor=2, mode="nearest")
        h = self.conv2(F.relu(self.norm2(self.conv1(h), y)))
        # The 1x1 conv before the upsampling: they commute, and it costs a quarter as much.
        return h + F.interpolate(self.shortcut(x), scale_factor=2, mode="nearest")


class Generator(nn.Module):
    def __init__(self, z_dim: int, num_classes: int, width: int):
        super().__init__()
        self.z_dim, self.num_classes, self.width = z_dim, num_classes, width
        self.stem = nn.Linear(z_dim, STEM_SIZE * STEM_SIZE * width)
        self.blocks = nn.ModuleList(GeneratorBlock(width, width, num_classes) for _ in range(3))
        self.out_norm = nn.BatchNorm2d(width)
        self.to_rgb = nn.Conv2d(width, 3, 3, padding=1)
        _init_weights(self)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """z (B, z_dim); y int64 labels (B,) or float class weights (B, num_classes)."""
        h = self.stem(z).view(-1, self.width, STEM_SIZE, STEM_SIZE)
        # Follow the weights' memory format so a channels-last model stays channels-last.
        if self.to_rgb.weight.is_contiguous(memory_format=torch.channels_last):
            h = h.contiguous(memory_format=torch.channels_last)
        for block in self.blocks:
            h = block(h, y)
        return torch.tanh(self.to_rgb(F.relu(self.out_norm(h))))


class SpectralNorm:
    """Mixin for a layer with `weight`: it computes with W / sigma(W), sigma by power iteration.

    The left singular vector estimate `sn_u` is a buffer, so it is saved and restored with
    the weights and a resumed run continues the same iteration. Each forward pass in
    training mode runs one iteration (no gradient); sigma = u^T W v with v = W^T u / |W^T u|
    then carries the gradient through W. All of it in fp32, even under autocast.
    """

    INITIAL_ITERATIONS = 15  # from a random u, so sigma is right from the first step

    def _init_spectral_norm(self) -> None:
        self.register_buffer("sn_u", torch.empty(self.weight.shape[0]))
        self.reset_spectral_norm()

    @torch.no_grad()
    def reset_spectral_norm(self) -> None:
        """Restart the power iteration for the current weight (call after re-initialising it)."""
        self.sn_u.copy_(F.normalize(torch.randn(self.weight.shape[0]), dim=0))
        for _ in range(self.INITIAL_ITERATIONS):
            self._power_iteration(self.weight.flatten(1).float())

    def _power_iteration(self, matrix: torch.Tensor) -> None:
        v = F.normalize(matrix.t() @ self.sn_u, dim=0)
        self.sn_u.copy_(F.normalize(matrix @ v, dim=0))

    def normalized_weight(self) -> torch.Tensor:
        matrix = self.weight.flatten(1)
        with torch.autocast(device_type=matrix.device.type, enabled=False):
            with torch.no_grad():
                if self.training:
                    self._power_iteration(matrix)
                u = self.sn_u.clone()
                v = F.normalize(matrix.t() @ u, dim=0)
            sigma = u @ (matrix @ v)
        return self.weight / sigma


def pooled_kernel(weight: torch.Tensor) -> torch.Tensor:
    """The 4x4 kernel of a 3x3 convolution followed by 2x2 average pooling.

    avg_pool2d(conv2d(x, w, padding=1), 2) == conv2d(x, pooled_kernel(w), stride=2,
    padding=1): each pooled output is the mean of four 3x3 windows offset by one pixel,
    i.e. one 4x4 window. The strided form computes a quarter of the output pixels and
    skips the pooling pass and its backward; on the CPU it halves the cost of the
    discriminator's full-resolution convolution.
    """
    return (F.pad(weight, (0, 1, 0, 1)) + F.pad(weight, (1, 0, 0, 1))
            + F.pad(weight, (0, 1, 1, 0)) + F.pad(weight, (1, 0, 1, 0))) / 4


class SNConv2d(SpectralNorm, nn.Conv2d):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_spectral_norm()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.normalized_weight(), self.bias)

    def forward_pooled(self, x: torch.Tensor) -> torch.Tensor:
        """avg_pool2d(self(x), 2) for a 3x3, padding 1, stride 1 layer, as one convolution."""
        return F.conv2d(x, pooled_kernel(self.normalized_weight()), self.bias, stride=2,
                        padding=1)


class SNLinear(SpectralNorm, nn.Linear):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_spectral_norm()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.normalized_weight(), self.bias)


class SNEmbedding(SpectralNorm, nn.Embedding):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_spectral_norm()

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return F.embedding(y, self.normalized_weight())


class DiscriminatorBlock(nn.Module):
    """[ReLU], conv, ReLU, conv, [2x2 average pool]; shortcut: [pool], 1x1 conv when needed.

    The first block takes raw pixels, so it starts with a conv rather than a ReLU.
    The pooling is folded into the second conv (`forward_pooled`), and the shortcut pools
    before its 1x1 conv: both are linear, so either order gives the same result, and this
    one costs a quarter of the work.
    """

    def __init__(self, in_channels: int, out_channels: int, downsample: bool, first: bool = False):
        super().__init__()
        self.first, self.downsample = first, downsample
        self.conv1 = SNConv2d(in_channels, out_channels, 3, padding=1)
        self.conv2 = SNConv2d(out_channels, out_channels, 3, padding=1)
        needs_projection = downsample or in_channels != out_channels
        self.shortcut = SNConv2d(in_channels, out_channels, 1) if needs_projection else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.conv1(x if self.first else F.relu(x)))
        if self.downsample:
            h, skip = self.conv2.forward_pooled(h), F.avg_pool2d(x, 2)
        else:
            h, skip = self.conv2(h), x
        if self.shortcut is not None:
            skip = self.shortcut(skip)
        return h + skip


class Discriminator(nn.Module):
    def __init__(self, num_classes: int, width: int):
        super().__init__()
        self.num_classes, self.width = num_classes, width
        self.blocks = nn.Sequential(
            DiscriminatorBlock(3, width, downsample=True, first=True),  # 32 -> 16
            DiscriminatorBlock(width, width, downsample=True),          # 16 -> 8
            DiscriminatorBlock(width, width, downsample=False),
            DiscriminatorBlock(width, width, downsample=False),
        )
        self.linear = SNLinear(width, 1)
        self.embed = SNEmbedding(num_classes, width)
        _init_weights(self)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, 32, 32) in [-1, 1] and int64 labels (B,) -> scores (B,), fp32."""
        h = F.relu(self.blocks(x)).sum(dim=(2, 3))
        # The head is tiny; fp32 keeps the scores (and so the losses) at full precision.
        with torch.autocast(device_type=h.device.type, enabled=False):
            h = h.float()
            return self.linear(h).squeeze(1) + (self.embed(y) * h).sum(1)


def _init_weights(module: nn.Module) -> None:
    """Xavier-uniform weights and zero biases for every conv, linear and embedding layer."""
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.Linear, nn.Embedding)):
            nn.init.xavier_uniform_(layer.weight)
            if getattr(layer, "bias", None) is not None:
                nn.init.zeros_(layer.bias)
        if isinstance(layer, SpectralNorm):
            layer.reset_spectral_norm()


def saved_generator(path: str | Path, state: dict, weights: dict, width_key: str,
                    device: torch.device | str):
    """The Generator that a model file or snapshot `state` holds as `weights`, its sizes in
    state["config"] (its width under `width_key`) -> (it in eval mode on `device`, info with
    "z_dim", "num_classes" and "classes", the class names, index = label)."""
    config = state["config"]
    sizes = {"z_dim": config["z_dim"], "num_classes": config["num_classes"],
             "width": config[width_key]}
    generator = build_saved(path, weights, sizes, lambda: Generator(**sizes))
    generator.load_state_dict(weights)
    info = {"z_dim": sizes["z_dim"], "num_classes": sizes["num_classes"],
            "classes": saved_classes(path, state, sizes["num_classes"])}
    return generator.to(device).eval().requires_grad_(False), info


def load_sampler(path: str | Path, device: torch.device | str = "cpu"):
    """Read models/gan/gan.pt -> (the EMA generator in eval mode, info: see saved_generator)."""
    state = load_checkpoint(path)
    with reading(path, "a GAN model file"):
        return saved_generator(path, state, state["generator_ema"], "generator_width", device)
