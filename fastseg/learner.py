"""fastai Learners for the two architectures, in the idiom of fastai's `unet_learner`."""

from functools import partial

import torch
from fastai.learner import Learner
from fastai.optimizer import SGD, Adam
from fastai.torch_core import params

from fastseg.constants import NUM_CLASSES
from fastseg.losses import segmentation_loss
from fastseg.metrics import seg_metrics
from fastseg.models import create_model


def encoder_decoder_split(model: torch.nn.Module) -> list[list]:
    """Two parameter groups: the (pretrained) encoder, then decoder and head."""
    return [params(model.encoder), params(model.decoder) + params(model.head)]


def make_opt_func(opt: str, mom: float = 0.9):
    """fastai optimizer factory: SGD with momentum `mom` and L2 decay as torch.optim.SGD, or Adam(W)
    with beta1 = `mom`."""
    if opt == "sgd":
        return partial(SGD, mom=mom, decouple_wd=False)
    return partial(Adam, mom=mom)


def seg_learner(dls, arch: str, pretrained: str | None = None, width: float = 1.0,
                num_classes: int = NUM_CLASSES, loss_func=None, metrics=None, opt_func=Adam,
                **kwargs) -> Learner:
    """A Learner over `create_model(arch, ...)` with the encoder | decoder splitter.

    With pretrained weights the encoder starts frozen, as in `unet_learner`; `unfreeze()`,
    `fine_tune()` and `slice(lo, hi)` learning rates work on the two groups.
    """
    model = create_model(arch, num_classes, pretrained=pretrained, width=width)
    learn = Learner(dls, model, loss_func=loss_func or segmentation_loss(),
                    opt_func=opt_func, metrics=metrics if metrics is not None else seg_metrics(num_classes),
                    splitter=encoder_decoder_split, **kwargs)
    if pretrained not in (None, "none"):
        learn.freeze()
    return learn


def segnet_learner(dls, pretrained: str | None = None, width: float = 1.0, **kwargs) -> Learner:
    """SegNet Learner (see `seg_learner`)."""
    return seg_learner(dls, "segnet", pretrained, width, **kwargs)


def skip_learner(dls, pretrained: str | None = None, width: float = 1.0, **kwargs) -> Learner:
    """VGG16-BN skip-model Learner (see `seg_learner`)."""
    return seg_learner(dls, "skip", pretrained, width, **kwargs)
