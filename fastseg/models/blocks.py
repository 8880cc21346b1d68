"""Small building blocks shared by the encoder and the decoders."""

import torch
import torch.nn.functional as F
from torch import nn


def scaled(channels: int, width: float) -> int:
    """Channel count `channels` scaled by `width` (at least 1)."""
    return max(1, round(channels * width))


def conv_bn_relu(c_in: int, c_out: int) -> list[nn.Module]:
    """3×3 conv (padding 1) + BatchNorm + ReLU, as three modules (torchvision's vgg16_bn order)."""
    return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


class Unpool(nn.Module):
    """Max-unpooling 2×2 with stride 2 that places each value at its recorded argmax.

    In eager mode this is `nn.MaxUnpool2d`. During ONNX export, and under
    `torch.use_deterministic_algorithms(True)` (`fit --deterministic`), the same operation is written
    as a scatter into a zero tensor of the pre-pool size: it exports with dynamic sizes (the
    exporter's MaxUnpool cannot take a runtime output size), and PyTorch has a deterministic scatter
    (and gather backward) where `max_unpool2d` refuses deterministic mode.
    """

    def __init__(self):
        super().__init__()
        self.unpool = nn.MaxUnpool2d(2, 2)

    def forward(self, x: torch.Tensor, indices: torch.Tensor, size: torch.Size) -> torch.Tensor:
        """x, indices: N×C×h×w; size: the pre-pool N×C×H×W. Returns N×C×H×W."""
        if torch.onnx.is_in_onnx_export() or torch.are_deterministic_algorithms_enabled():
            return scatter_unpool(x, indices, size)
        return self.unpool(x, indices, output_size=size[-2:])


def scatter_unpool(x: torch.Tensor, indices: torch.Tensor, size: torch.Size) -> torch.Tensor:
    """`max_unpool2d` as a scatter: flat H*W indices per (n, c) plane. Shapes as in `Unpool`."""
    n, c = x.shape[:2]
    flat = x.new_zeros((n, c, size[-2] * size[-1]))
    flat = flat.scatter(2, indices.reshape(n, c, -1), x.reshape(n, c, -1))
    return flat.view(n, c, size[-2], size[-1])


def resize_to(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Bilinear resize of N×C×h×w `x` to the H×W of `like`."""
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)


def he_init(model: nn.Module) -> nn.Module:
    """He (Kaiming) normal initialisation of every conv, as the SegNet paper and torchvision's VGG
    use; BatchNorm starts as identity. Returns `model`."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return model


def set_head_prior(head: nn.Conv2d, shares) -> nn.Conv2d:
    """Set the classifier's biases to the log of each class's pixel share (a class never seen gets
    the share 1e-6), centred on zero, so that the untrained model predicts the class prior: its
    first steps then learn features instead of the prior (~70 % background in VOC and the demo).

    Args:
        head: the final conv, `num_classes` output channels.
        shares: `num_classes` non-negative numbers (any scale; normalised here).
    """
    shares = torch.as_tensor(shares, dtype=torch.float64)
    logits = torch.log((shares / shares.sum()).clamp_min(1e-6))
    with torch.no_grad():
        head.bias.copy_((logits - logits.mean()).to(head.bias.dtype))
    return head

