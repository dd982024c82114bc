"""The Flower quickstart CNN, sized from the data set it is trained on."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sim.config.rules import MIN_IMAGE_SIZE


def _conv_output_size(image_size: int) -> int:
    """Side length after two (5x5 valid conv, 2x2 max-pool) stages."""
    return ((image_size - 4) // 2 - 4) // 2


class Net(nn.Module):
    """conv(6, 5x5) -> pool -> conv(16, 5x5) -> pool -> fc 120 -> fc 84 -> classes.

    This is the model of Flower's PyTorch quickstart (itself the PyTorch CIFAR-10
    tutorial's), with input channels, image size and class count taken as arguments.
    """

    def __init__(self, in_channels: int = 3, image_size: int = 32, num_classes: int = 10):
        super().__init__()
        side = _conv_output_size(image_size)
        if side < 1:
            raise ValueError(
                f"dataset.image_size={image_size} is too small for the CNN (needs >= {MIN_IMAGE_SIZE})"
            )
        self.conv1 = nn.Conv2d(in_channels, 6, 5)
        self.pool = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * side * side, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a float batch of shape (B, C, H, W)."""
        x = self.pool(F.relu(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)
