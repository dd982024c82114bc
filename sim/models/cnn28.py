"""The CNN of the FedAvg paper (McMahan et al., 2017) for 28x28 inputs (MNIST, FEMNIST).

conv(32, 5x5, same) -> pool -> conv(64, 5x5, same) -> pool -> fc 512 -> classes; about
1.7 M parameters at 28x28. Other sizes work (the linear layer follows `image_size`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class CNN28(nn.Module):
    """Two 'same' 5x5 convolutions with 2x2 max-pooling, one hidden linear layer."""

    def __init__(self, in_channels: int = 1, image_size: int = 28, num_classes: int = 10, hidden: int = 512):
        super().__init__()
        side = image_size // 4
        if side < 1:
            raise ValueError(f"dataset.image_size={image_size} is too small for CNN28 (needs >= 4)")
        self.conv1 = nn.Conv2d(in_channels, 32, 5, padding=2)
        self.conv2 = nn.Conv2d(32, 64, 5, padding=2)
        self.fc1 = nn.Linear(64 * side * side, hidden)
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a float batch (B, C, H, W)."""
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc2(F.relu(self.fc1(torch.flatten(x, 1))))
