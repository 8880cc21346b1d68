"""The VGG16-BN skip model of the second seed: VGG16-BN encoder, a U-Net-style decoder that
upsamples ×2, concatenates the encoder features of that scale and applies two conv+BN+ReLU."""

import torch
from torch import nn

from fastseg.constants import NUM_CLASSES
from fastseg.models.blocks import conv_bn_relu, resize_to, scaled
from fastseg.models.dropout import central_dropouts
from fastseg.models.encoder import VGG16BNEncoder, stage_channels

DECODER_CHANNELS = (512, 256, 128, 64, 64)  # output channels of the decoder stages, deepest first


class SkipStage(nn.Module):
    """Upsample to the skip's size, concatenate it, two conv+BN+ReLU."""

    def __init__(self, c_in: int, c_skip: int, c_out: int):
        super().__init__()
        self.convs = nn.Sequential(*conv_bn_relu(c_in + c_skip, c_out), *conv_bn_relu(c_out, c_out))

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """x: N×Cin×h×w; skip: N×Cskip×H×W (H≈2h). Returns N×Cout×H×W."""
        return self.convs(torch.cat([resize_to(x, skip), skip], dim=1))


class VGGUNet(nn.Module):
    """Encoder-decoder with skip connections over any H×W ≥ 32; `dropout` as Bayesian SegNet's
    central encoder-decoder (models.dropout)."""

    def __init__(self, num_classes: int = NUM_CLASSES, width: float = 1.0, dropout: float = 0.0):
        super().__init__()
        self.encoder = VGG16BNEncoder(width, dropout)
        skips = stage_channels(width)[::-1]
        outs = [scaled(c, width) for c in DECODER_CHANNELS]
        ins = [skips[0]] + outs[:-1]
        self.decoder = nn.ModuleList(SkipStage(i, s, o) for i, s, o in zip(ins, skips, outs, strict=True))
        self.dropouts = central_dropouts(len(self.decoder), dropout)
        self.head = nn.Conv2d(outs[-1], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: N×3×H×W normalised RGB. Returns logits N×num_classes×H×W."""
        x, skips, _, _ = self.encoder(x)
        for stage, drop, skip in zip(self.decoder, self.dropouts, reversed(skips), strict=True):
            x = drop(stage(x, skip))
        return self.head(x)
