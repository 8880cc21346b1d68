"""Test-time augmentation: every scale and the flip reach the model, and each is undone before the
average (hand-built models whose outputs are known exactly)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fastseg.evaluate.tta import predict_classes, tta_probabilities, uses_tta

BIG = 50.0  # a logit margin whose softmax is one-hot in float32


class Spy(nn.Module):
    """Records each input it is given; `logits(x)` says what it answers (N×C×H×W)."""

    def __init__(self, logits):
        super().__init__()
        self.logits, self.inputs = logits, []

    def forward(self, x):
        self.inputs.append(x.clone())
        return self.logits(x)


def one_hot(x: torch.Tensor, cls: torch.Tensor, c: int = 3) -> torch.Tensor:
    """N×C×H×W logits, BIG on class `cls` (H×W long) at each pixel, 0 elsewhere."""
    n, _, h, w = x.shape
    return F.one_hot(cls.expand(n, h, w), c).permute(0, 3, 1, 2).float() * BIG


def left_right(x: torch.Tensor) -> torch.Tensor:
    """Class 0 on the left half, 1 on the right half, whatever the input."""
    w = x.shape[-1]
    return one_hot(x, (torch.arange(w) >= w // 2).long().expand(x.shape[-2], w))


def test_each_scale_reaches_the_model_and_comes_back_at_input_size():
    x = torch.randn(2, 3, 8, 12)
    spy = Spy(lambda z: one_hot(z, torch.tensor(0 if z.shape[-1] == 12 else 1 if z.shape[-1] == 24 else 2)))
    prob = tta_probabilities(spy, x, scales=(1.0, 2.0, 0.5))
    assert [tuple(i.shape) for i in spy.inputs] == [(2, 3, 8, 12), (2, 3, 16, 24), (2, 3, 4, 6)]
    assert torch.equal(spy.inputs[0], x)
    assert torch.allclose(spy.inputs[1], F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False))
    assert prob.shape == (2, 3, 8, 12)
    assert torch.allclose(prob, torch.full_like(prob, 1 / 3), atol=1e-6)


def test_flip_is_undone_before_averaging():
    x = torch.randn(1, 3, 4, 6)
    spy = Spy(left_right)
    prob = tta_probabilities(spy, x, flip=True)
    assert torch.equal(spy.inputs[1], x.flip(-1))
    half = torch.tensor([0.5, 0.5, 0.0]).view(1, 3, 1, 1).expand_as(prob)
    assert torch.allclose(prob, half, atol=1e-6)  # the flipped pass swapped back: half of each side's class


def test_a_flip_equivariant_model_is_unchanged_by_flip_and_rescaled_probabilities_are_bilinear():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 1)
    x = torch.randn(1, 3, 8, 10)
    plain = conv(x).softmax(1)
    assert torch.allclose(tta_probabilities(conv, x, flip=True), plain, atol=1e-6)
    small = conv(F.interpolate(x, scale_factor=0.5, mode="bilinear", align_corners=False)).softmax(1)
    back = F.interpolate(small, size=(8, 10), mode="bilinear", align_corners=False)
    assert torch.allclose(tta_probabilities(conv, x, scales=(1.0, 0.5)), (plain + back) / 2, atol=1e-6)


@pytest.mark.parametrize(("flip", "scales", "expected"), [(False, (1.0,), False), (False, [1.0], False),
                                                          (True, (1.0,), True), (False, (1.0, 0.75), True),
                                                          (False, (0.5,), True)])
def test_uses_tta(flip, scales, expected):
    assert uses_tta(flip, scales) is expected


def test_predict_classes_is_one_plain_pass_without_tta_and_the_tta_argmax_with_it():
    x = torch.randn(1, 3, 4, 6)
    spy = Spy(left_right)
    assert predict_classes(spy, x).tolist() == [[[0, 0, 0, 1, 1, 1]] * 4]
    assert len(spy.inputs) == 1
    spy = Spy(lambda z: left_right(z) + one_hot(z, torch.tensor(2)) * (BIG - 0.5) / BIG)  # wins once averaged
    assert predict_classes(spy, x, flip=True).tolist() == [[[2] * 6] * 4]
    assert len(spy.inputs) == 2


def test_predict_classes_passes_scales_without_flipping():
    x = torch.randn(1, 3, 4, 6)
    spy = Spy(left_right)
    assert predict_classes(spy, x, scales=(1.0, 2.0)).tolist() == [[[0, 0, 0, 1, 1, 1]] * 4]
    assert [tuple(i.shape[-2:]) for i in spy.inputs] == [(4, 6), (8, 12)]
