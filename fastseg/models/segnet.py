"""SegNet (Badrinarayanan et al., arXiv 1511.00561): VGG16-BN encoder, decoder that unpools with the
encoder's own pooling indices. 29.46 M parameters with 21 classes."""

import torch
from torch import nn

from fastseg.constants import NUM_CLASSES
from fastseg.models.blocks import Unpool, conv_bn_relu, scaled
from fastseg.models.dropout import central_dropouts
from fastseg.models.encoder import VGG16_STAGES, VGG16BNEncoder


class SegNetDecoderStage(nn.Module):
    """MaxUnpool with its encoder stage's indices, then conv+BN+ReLU per conv of that stage."""

    def __init__(self, channels: list[int]):
        super().__init__()
        self.unpool = Unpool()
        layers = []
        for c_in, c_out in zip(channels[:-1], channels[1:], strict=True):
            layers += conv_bn_relu(c_in, c_out)
        self.convs = nn.Sequential(*layers)

    def forward(self, x, indices, size):
        """x: N×Cin×h×w; indices: N×Cin×h×w; size: pre-pool N×Cin×H×W. Returns N×Cout×H×W."""
        return self.convs(self.unpool(x, indices, size))


def decoder_channels(width: float) -> list[list[int]]:
    """Channel chains of the decoder stages, deepest first: the encoder's convs mirrored.

    At width 1: [512,512,512,512], [512,512,512,256], [256,256,256,128], [128,128,64], [64,64].
    """
    chains = []
    stages = [[scaled(c, width) for c in s] for s in VGG16_STAGES]
    for s in range(len(stages) - 1, -1, -1):
        c_out = stages[s - 1][-1] if s > 0 else stages[0][-1]
        chains.append([stages[s][-1]] + stages[s][:-1] + [c_out])
    return chains


class SegNet(nn.Module):
    """SegNet over any H×W ≥ 32: each unpool restores its stage's exact pre-pool size. With
    `dropout` > 0 it is Bayesian SegNet's central encoder-decoder (models.dropout)."""

    def __init__(self, num_classes: int = NUM_CLASSES, width: float = 1.0, dropout: float = 0.0):
        super().__init__()
        self.encoder = VGG16BNEncoder(width, dropout)
        self.decoder = nn.ModuleList(SegNetDecoderStage(c) for c in decoder_channels(width))
        self.dropouts = central_dropouts(len(self.decoder), dropout)  # after the deepest decoder stages
        self.head = nn.Conv2d(scaled(64, width), num_classes, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: N×3×H×W normalised RGB. Returns logits N×num_classes×H×W."""
        x, _, indices, sizes = self.encoder(x)
        for stage, drop, idx, size in zip(self.decoder, self.dropouts, reversed(indices), reversed(sizes),
                                          strict=True):
            x = drop(stage(x, idx, size))
        return self.head(x)
