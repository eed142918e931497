"""The classifier: a ResNet built from depthwise-separable convolutions.

A separable convolution (3x3 depthwise, then 1x1 pointwise) costs about 9 + C
parameters per output channel instead of 9C, so a network under a 100k budget
can still be wide and deep enough for CIFAR. Inputs are normalized float NCHW
images, ``(pixels / 255 - mean) / std``; `normalize` does that for uint8 batches.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from cifarbudget.io import load_checkpoint, reading
from cifarbudget.models.saved import build_saved


class SeparableConv(nn.Sequential):
    """3x3 depthwise, 1x1 pointwise, batch norm.

    No norm or activation between the two convolutions: their composition is one
    linear map, and one batch norm after it halves the memory-bound passes.
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(
            nn.Conv2d(in_channels, in_channels, 3, padding=1, groups=in_channels, bias=False),
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        )


class ResidualBlock(nn.Module):
    """Two separable convolutions with an identity shortcut.

    A block that halves the resolution average-pools its input first, for both the
    branch and the shortcut: a strided depthwise convolution's backward pass is many
    times slower on the CPU. A block that widens pads the shortcut with zero channels,
    so the parameter budget goes to convolutions.
    """

    def __init__(self, in_channels: int, out_channels: int, downsample: bool):
        super().__init__()
        if out_channels < in_channels:
            raise ValueError(f"a stage may not narrow the network "
                             f"({in_channels} -> {out_channels} channels)")
        self.pool = nn.AvgPool2d(2) if downsample else nn.Identity()
        self.conv1 = SeparableConv(in_channels, out_channels)
        self.conv2 = SeparableConv(out_channels, out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.extra_channels = out_channels - in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(x)
        out = self.conv2(self.relu(self.conv1(x)))
        if self.extra_channels:
            x = nn.functional.pad(x, (0, 0, 0, 0, 0, self.extra_channels))
        return self.relu(out + x)


class PatchWhitening(nn.Conv2d):
    """A frozen 2x2 convolution (no padding: 32 -> 31 pixels) that maps each patch of 12
    values to its coordinates along the principal axes of the training set's patches, each
    scaled to unit variance, and to their negatives: 24 channels, so a ReLU after it keeps
    both signs. `fit` computes it; it is never trained."""

    def __init__(self):
        super().__init__(3, 2 * 3 * 2 * 2, 2, bias=False)
        self.weight.requires_grad_(False)

    @torch.no_grad()
    def fit(self, images: torch.Tensor, eps: float = 5e-4) -> None:
        """From normalized NCHW float images: their 2x2 patches' covariance."""
        patches = images.unfold(2, 2, 1).unfold(3, 2, 1).permute(0, 2, 3, 1, 4, 5)
        patches = patches.reshape(-1, 12).double()
        variances, axes = torch.linalg.eigh(torch.cov(patches.T))
        scaled = axes.T.reshape(12, 3, 2, 2) / (variances + eps).sqrt().view(12, 1, 1, 1)
        self.weight.copy_(torch.cat([scaled, -scaled]))


class SeparableResNet(nn.Module):
    """Stem convolution (or a frozen patch whitening and a 1x1 convolution), stages of
    residual blocks (each after the first halves the resolution), global average pooling,
    linear classifier."""

    def __init__(self, widths: list[int], depths: list[int], num_classes: int,
                 bn_scale: bool = True, whiten: bool = False):
        super().__init__()
        self.whiten = whiten
        first = ([PatchWhitening(), nn.Conv2d(24, widths[0], 1, bias=False)] if whiten
                 else [nn.Conv2d(3, widths[0], 3, padding=1, bias=False)])
        self.stem = nn.Sequential(*first, nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True))
        blocks = []
        in_channels = widths[0]
        for stage, (width, depth) in enumerate(zip(widths, depths)):
            for index in range(depth):
                downsample = stage > 0 and index == 0
                blocks.append(ResidualBlock(in_channels, width, downsample))
                in_channels = width
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(in_channels, num_classes)
        self.feature_dim = in_channels
        for module in self.modules():
            if isinstance(module, nn.Conv2d) and not isinstance(module, PatchWhitening):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        # The last norm of each residual branch starts at zero: every block begins as the
        # identity, which lets a deep network train at a high learning rate from step one.
        for block in self.blocks:
            nn.init.zeros_(block.conv2[-1].weight)
        if not bn_scale:  # scales fixed at 1, but for those zeros, which must learn to grow
            starts_at_zero = {id(block.conv2[-1].weight) for block in self.blocks}
            for module in self.modules():
                if isinstance(module, nn.BatchNorm2d) and id(module.weight) not in starts_at_zero:
                    module.weight.requires_grad_(False)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled penultimate features, (B, F)."""
        return self.blocks(self.stem(x)).mean((2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def build_classifier(widths: list[int], depths: list[int], num_classes: int,
                     bn_scale: bool = True, whiten: bool = False) -> SeparableResNet:
    return SeparableResNet(list(widths), list(depths), num_classes, bn_scale, whiten)


class Normalize:
    """uint8 (or float pixel-valued) NCHW batch -> float32 ((pixels / 255 - mean) / std), the
    constants made once on the device rather than copied there every batch."""

    def __init__(self, mean, std, device: torch.device | str):
        mean = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        std = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        # One multiply-add per pixel: x * (1 / (255 std)) - mean / std.
        self.shift, self.scale = -mean / std, 1.0 / (255.0 * std)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.shift, images.float(), self.scale)


def model_file_state(model: SeparableResNet, widths, depths, mean, std, classes) -> dict:
    """What models/classifier/seed_<seed>.pt holds: tensors and plain types only."""
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    return {"state_dict": state, "widths": list(widths), "depths": list(depths),
            "num_classes": len(classes), "mean": [float(m) for m in mean],
            "std": [float(s) for s in std], "classes": list(classes),
            **({"whiten": True} if model.whiten else {})}


def load_classifier(path: str | Path, device: torch.device | str = "cpu"):
    """Read a saved classifier -> (model in eval mode on `device`, mean, std)."""
    saved = load_checkpoint(path)
    with reading(path, "a classifier model file"):
        sizes = {"widths": saved["widths"], "depths": saved["depths"],
                 "num_classes": saved["num_classes"]}
        whiten = saved.get("whiten", False) is True
        model = build_saved(path, saved, sizes, lambda: build_classifier(**sizes, whiten=whiten))
        model.load_state_dict(saved["state_dict"])
        mean, std = [float(m) for m in saved["mean"]], [float(s) for s in saved["std"]]
        if len(mean) != 3 or len(std) != 3:
            raise ValueError("mean and std need 3 channels each")
    return model.to(device).eval(), mean, std


@torch.no_grad()
def classifier_features(model: nn.Module, images: np.ndarray | torch.Tensor, mean, std,
                        device: torch.device | str, batch_size: int = 500
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Classify uint8 (N, H, W, C) images in batches -> (features (N, F), logits (N, K)),
    float32 on the CPU. The model is used as given (call .eval() first). Always in fp32, even
    where training ran under bf16 autocast: every reported accuracy and loss is the one any
    machine computes from the saved model."""
    device = torch.device(device)
    images = torch.as_tensor(images)
    normalize = Normalize(mean, std, device)
    features, logits = [], []
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size].to(device).permute(0, 3, 1, 2)
        feats = model.features(normalize(batch))
        out = model.head(feats)
        features.append(feats.cpu())
        logits.append(out.cpu())
    return torch.cat(features), torch.cat(logits)
