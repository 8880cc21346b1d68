"""Monte Carlo dropout for Bayesian SegNet (Kendall, Badrinarayanan & Cipolla, arXiv 1511.02680).

The paper's best variant, "Central Encoder-Decoder", puts dropout (p = 0.5) after the deepest half
of the network: after the pooling of encoder stages 3, 4 and 5 and after decoder stages 5, 4 and 3
(their mirrors), where features are most abstract; dropout in the shallow stages, whose low-level
features are shared by all classes, cost accuracy in the paper's comparison. At test time the
dropout stays on and N sampled predictions are averaged in softmax space.

`MCDropout` is elementwise dropout that also samples in eval mode while `mc_sampling(model)` is
active, so BatchNorm keeps its running statistics while the dropout masks vary.
"""

from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

CENTRAL_STAGES = 3  # the deepest 3 encoder stages and their 3 mirrored decoder stages


class MCDropout(nn.Module):
    """Dropout with probability `p`: active in training, and in eval mode while sampling."""

    def __init__(self, p: float):
        super().__init__()
        self.p, self.sampling = p, False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.dropout(x, self.p, training=self.training or self.sampling)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def central_dropouts(stages: int, p: float) -> nn.ModuleList:
    """One MCDropout per stage, deepest first, for the CENTRAL_STAGES deepest stages (Identity for
    the others, and everywhere when p is 0: no module draws random numbers, so models without dropout
    compute exactly what they did before dropout existed)."""
    return nn.ModuleList(MCDropout(p) if p > 0 and i < CENTRAL_STAGES else nn.Identity() for i in range(stages))


@contextmanager
def mc_sampling(model: nn.Module):
    """While inside: every MCDropout of `model` samples even in eval mode."""
    drops = [m for m in model.modules() if isinstance(m, MCDropout)]
    for m in drops:
        m.sampling = True
    try:
        yield bool(drops)
    finally:
        for m in drops:
            m.sampling = False


def has_dropout(model: nn.Module) -> bool:
    return any(isinstance(m, MCDropout) and m.p > 0 for m in model.modules())
