"""ResNet-18 with GroupNorm and a CIFAR stem: the common choice of federated-learning papers.

BatchNorm's running statistics do not survive averaging across non-IID clients (Hsieh et
al., 2020), so every normalisation layer is a GroupNorm. The CIFAR stem (one 3x3 stride-1
convolution, no max-pool) keeps small images (28-32 px) from shrinking to 1x1 before the
last stage; `stem="imagenet"` gives the 7x7 stride-2 convolution plus max-pool of the
original paper for large images. Stages: 64, 128, 256, 512 channels, two BasicBlocks each.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(groups, channels), channels)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with GroupNorm and a (projected, when shapes change) shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int, groups: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.norm1 = _norm(c_out, groups)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.norm2 = _norm(c_out, groups)
        self.shortcut = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), _norm(c_out, groups))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18 (He et al., 2016) with GroupNorm(`norm_groups`) layers."""

    def __init__(self, in_channels: int = 3, num_classes: int = 10, norm_groups: int = 2, stem: str = "cifar"):
        super().__init__()
        if stem == "cifar":
            self.stem = nn.Sequential(nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False), _norm(64, norm_groups), nn.ReLU())
        elif stem == "imagenet":
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False), _norm(64, norm_groups), nn.ReLU(),
                nn.MaxPool2d(3, 2, 1),
            )
        else:
            raise ValueError(f"model.stem={stem!r} must be cifar or imagenet")
        blocks, c_in = [], 64
        for c_out, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            blocks += [BasicBlock(c_in, c_out, stride, norm_groups), BasicBlock(c_out, c_out, 1, norm_groups)]
            c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a float batch (B, C, H, W); any H, W >= 8 (global average pooling)."""
        x = self.blocks(self.stem(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))
