"""The VGG16-BN encoder, laid out exactly like torchvision's `vgg16_bn().features`.

`features` keeps torchvision's module indices (13 conv+BN+ReLU, 5 max-pools at 6, 13, 23, 33, 43),
so ImageNet weights load by key; each pool also returns its argmax indices for SegNet.
"""

import torch
from torch import nn

from fastseg.models.blocks import conv_bn_relu, scaled
from fastseg.models.dropout import central_dropouts

VGG16_STAGES = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
"""Output channels of each conv, per stage (torchvision's cfg "D")."""


def stage_channels(width: float) -> list[int]:
    """Output channels of each encoder stage at `width`: [64, 128, 256, 512, 512] at 1.0."""
    return [scaled(stage[-1], width) for stage in VGG16_STAGES]


class VGG16BNEncoder(nn.Module):
    """VGG16-BN feature extractor returning every stage's features and pooling records; with
    `dropout`, Bayesian SegNet's dropout after the pools of the 3 deepest stages (models.dropout),
    kept outside `features` so torchvision's indices still load ImageNet weights."""

    def __init__(self, width: float = 1.0, dropout: float = 0.0):
        super().__init__()
        layers: list[nn.Module] = []
        self.stage_ends: list[int] = []
        c_in = 3
        for stage in VGG16_STAGES:
            for c in stage:
                layers += conv_bn_relu(c_in, scaled(c, width))
                c_in = scaled(c, width)
            layers.append(nn.MaxPool2d(2, 2, return_indices=True))
            self.stage_ends.append(len(layers))
        self.features = nn.Sequential(*layers)
        self.dropouts = central_dropouts(len(VGG16_STAGES), dropout)  # deepest stage first

    def forward(self, x: torch.Tensor):
        """x: N×3×H×W. Returns (pooled N×C5×H/32×W/32, skips, indices, sizes): per stage s,
        skips[s] is its pre-pool output (N×Cs×Hs×Ws), indices[s] its pool argmaxes and sizes[s]
        the pre-pool shape."""
        skips, indices, sizes = [], [], []
        start = 0
        for end, drop in zip(self.stage_ends, reversed(self.dropouts), strict=True):
            for layer in self.features[start:end - 1]:
                x = layer(x)
            skips.append(x)
            sizes.append(x.shape)
            x, idx = self.features[end - 1](x)
            x = drop(x)
            indices.append(idx)
            start = end
        return x, skips, indices, sizes
