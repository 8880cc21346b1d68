"""Test-time augmentation for segmentation: each transform is undone on the output before averaging.

fastai's `tta()` averages predictions of flipped inputs without flipping them back, which is wrong
for masks; here a horizontal flip of the input is followed by flipping the probabilities back, and
a rescaled input's probabilities are resized back to the input size.
"""

import torch
import torch.nn.functional as F


def tta_probabilities(model, x: torch.Tensor, flip: bool = False, scales: tuple[float, ...] = (1.0,)) -> torch.Tensor:
    """Average softmax probabilities over scales (× horizontal flip).

    Args:
        x: N×3×H×W normalised images. Returns N×C×H×W probabilities.
    """
    h, w = x.shape[-2:]
    total, count = None, 0
    for scale in scales:
        xs = x if scale == 1.0 else F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)
        variants = [(xs, False)] + ([(xs.flip(-1), True)] if flip else [])
        for inp, flipped in variants:
            prob = model(inp).float().softmax(1)
            if flipped:
                prob = prob.flip(-1)
            if prob.shape[-2:] != (h, w):
                prob = F.interpolate(prob, size=(h, w), mode="bilinear", align_corners=False)
            total = prob if total is None else total + prob
            count += 1
    return total / count


def uses_tta(flip: bool, scales: tuple[float, ...]) -> bool:
    """Whether (flip, scales) asks for anything beyond one plain forward pass."""
    return flip or tuple(scales) != (1.0,)


def predict_classes(model, x: torch.Tensor, flip: bool = False, scales: tuple[float, ...] = (1.0,)) -> torch.Tensor:
    """N×H×W class ids for N×3×H×W normalised images (plain argmax of logits without TTA)."""
    if not uses_tta(flip, scales):
        return model(x).argmax(1)
    return tta_probabilities(model, x, flip, scales).argmax(1)
