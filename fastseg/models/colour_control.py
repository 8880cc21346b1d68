"""The demo's colour-only control: a per-pixel model of 1×1 convolutions. It sees each pixel's
colour and nothing around it, so whatever it scores, colour alone explains."""

import torch
from torch import nn

from fastseg.constants import NUM_CLASSES

HIDDEN = 32  # channels of the two hidden 1×1 layers


class ColourControl(nn.Module):
    """1×1 conv + BN + ReLU twice, then a 1×1 conv to logits; any H×W."""

    def __init__(self, num_classes: int = NUM_CLASSES, width: float = 1.0):
        super().__init__()
        hidden = max(4, round(HIDDEN * width))
        self.encoder = nn.Sequential(nn.Conv2d(3, hidden, 1), nn.BatchNorm2d(hidden), nn.ReLU(inplace=True),
                                     nn.Conv2d(hidden, hidden, 1), nn.BatchNorm2d(hidden), nn.ReLU(inplace=True))
        self.head = nn.Conv2d(hidden, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: N×3×H×W. Returns logits N×num_classes×H×W."""
        return self.head(self.encoder(x))
