"""The fastai Learner of a run, in the idiom of fastai's `unet_learner`: model, loss with class
weights, optimizer, metrics and the side callbacks a FitConfig asks for."""

from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import torch
from fastai.callback.progress import ProgressCallback
from fastai.callback.training import GradientClip
from fastai.learner import Learner
from fastai.optimizer import SGD, Adam
from fastai.torch_core import params
from rich.table import Table

from fastseg.classes import VOC, ClassSet
from fastseg.config import OPTIMIZERS, FitConfig
from fastseg.console import console
from fastseg.data.stats import median_frequency_weights, read_weights_file
from fastseg.devices.collectives import world_size
from fastseg.devices.distributed import is_main
from fastseg.devices.precision import precision_callbacks, resolve_amp
from fastseg.errors import FastsegError
from fastseg.evaluate.metrics import seg_metrics
from fastseg.models import create_model
from fastseg.models.blocks import set_head_prior
from fastseg.train.callbacks import L1Penalty, NaNGuard
from fastseg.train.fastpath import InputPath, cuda_settings, install_device_losses
from fastseg.train.losses import segmentation_loss

ONE_CYCLE_MOM_DIP = 0.85 / 0.95  # fastai's one-cycle momentum dip, relative to its upper value


def encoder_decoder_split(model: torch.nn.Module) -> list[list]:
    """Two parameter groups: the (pretrained) encoder, then decoder (where the model has one) and head."""
    decoder = getattr(model, "decoder", None)
    return [params(model.encoder), (params(decoder) if decoder is not None else []) + params(model.head)]


def make_opt_func(opt: str, mom: float = 0.9):
    """fastai optimizer factory: SGD with momentum `mom` and L2 decay as torch.optim.SGD, or Adam(W)
    with beta1 = `mom`.

    Raises:
        FastsegError: `opt` is none of OPTIMIZERS.
    """
    if opt == "sgd":
        return partial(SGD, mom=mom, decouple_wd=False)
    if opt == "adam":
        return partial(Adam, mom=mom)
    raise FastsegError(f"Unknown --opt '{opt}'; choose one of: {', '.join(OPTIMIZERS)}.")


def seg_learner(dls, arch: str, pretrained: str | None = None, width: float = 1.0,
                classes: ClassSet = VOC, loss_func=None, metrics=None, opt_func=Adam, dropout: float = 0.0,
                **kwargs) -> Learner:
    """A Learner over `create_model(arch, ...)` (one output per class of `classes`) with the
    encoder | decoder splitter.

    With pretrained weights the encoder starts frozen, as in `unet_learner`; `unfreeze()`,
    `fine_tune()` and `slice(lo, hi)` learning rates work on the two groups. For example, on
    DataLoaders from `fastseg.data.dataloaders.build_dataloaders`:

        learn = seg_learner(dls, "segnet", pretrained="none", width=0.25)
        learn.fit_one_cycle(24, 5e-2)
    """
    model = create_model(arch, classes.num, pretrained=pretrained, width=width, dropout=dropout)
    learn = Learner(dls, model, loss_func=loss_func or segmentation_loss(),
                    opt_func=opt_func, metrics=metrics if metrics is not None else seg_metrics(classes),
                    splitter=encoder_decoder_split, **kwargs)
    if pretrained not in (None, "none"):
        learn.freeze()
    return learn


def needs_class_pixels(cfg: FitConfig) -> bool:
    """Whether the run needs the training split's class pixel counts (median-freq weights, head prior)."""
    return cfg.head_prior or cfg.class_weights == "median-freq"


def class_weights(cfg: FitConfig, pixels: tuple[np.ndarray, np.ndarray] | None,
                  classes: ClassSet = VOC) -> torch.Tensor | None:
    """None, median-frequency weights from `pixels` (the counts of `data.stats.training_class_pixels`),
    or a weights file's; one float32 weight per class of `classes`, shown as a table."""
    if cfg.class_weights == "none":
        return None
    if cfg.class_weights == "median-freq":
        weights = median_frequency_weights(*pixels)
    else:
        weights = read_weights_file(Path(cfg.class_weights), classes.num)
    show_class_weights(weights, classes)
    return torch.tensor(weights, dtype=torch.float32)


def show_class_weights(weights: np.ndarray, classes: ClassSet = VOC) -> None:
    if not is_main():
        return
    table = Table(title="Class weights")
    for column in ("class", "weight"):
        table.add_column(column)
    for name, w in zip(classes.names, weights, strict=False):
        table.add_row(name, f"{w:.3f}")
    console.print(table)


def momentum_cycle(cfg: FitConfig) -> list[float]:
    """The momentum schedule (start, middle, end): under one-cycle --mom is the upper momentum and
    the cycle dips to mom·0.85/0.95 (fastai's 0.95→0.85→0.95, scaled); constant otherwise."""
    if cfg.sched == "one-cycle":
        return [cfg.mom, cfg.mom * ONE_CYCLE_MOM_DIP, cfg.mom]
    return [cfg.mom] * 3


def resolve_run_options(cfg: FitConfig, device: torch.device) -> FitConfig:
    """`cfg` with the device-dependent options replaced by what the run really uses (amp; channels_last,
    None meaning on with CUDA), the momentum cycle spelt out and each process's augmentation seed (seed
    + rank): what config.json records, and the one place these are decided (resolving twice changes
    nothing)."""
    memory = cfg.channels_last if cfg.channels_last is not None else device.type == "cuda"
    return replace(cfg, amp=resolve_amp(cfg.amp, device), channels_last=memory,
                   moms=cfg.moms or momentum_cycle(cfg), process_seeds=[cfg.seed + r for r in range(world_size())])


def build_learner(cfg: FitConfig, dls, run_dir: Path, device: torch.device,
                  pixels: tuple[np.ndarray, np.ndarray] | None = None, classes: ClassSet = VOC) -> Learner:
    """The Learner of a run: model (a head of one output per class of `classes`), loss, optimizer,
    metrics and side callbacks. `pixels` are the training split's class pixel counts, which the
    caller computes once when `needs_class_pixels`."""
    if needs_class_pixels(cfg) and pixels is None:
        raise ValueError("build_learner needs the class pixel counts for median-freq weights or --head-prior")
    cfg = resolve_run_options(cfg, device)
    cbs = [InputPath(cfg.channels_last), NaNGuard(classes.num, cfg.lr), *precision_callbacks(cfg.amp, device)]
    if cfg.l1:
        cbs.append(L1Penalty(cfg.l1))
    if cfg.clip:
        cbs.append(GradientClip(cfg.clip))
    loss_func = segmentation_loss(class_weights(cfg, pixels, classes))
    learn = seg_learner(dls, cfg.arch, cfg.pretrained, cfg.width, classes, loss_func=loss_func,
                        metrics=seg_metrics(classes), opt_func=make_opt_func(cfg.opt, cfg.mom), dropout=cfg.dropout,
                        wd=cfg.wd, cbs=cbs,
                        path=run_dir, model_dir=".")
    learn.remove_cbs([cb for cb in learn.cbs if isinstance(cb, ProgressCallback)])
    learn.logger = lambda row: None  # RunRecorder prints the table
    install_device_losses(learn)
    if cfg.head_prior:
        set_head_prior(learn.model.head, pixels[0])
    place_model(learn, cfg, device)
    if cfg.freeze_epochs == 0:
        learn.unfreeze()
    return learn


def place_model(learn: Learner, cfg: FitConfig, device: torch.device) -> None:
    """Move the model to `device` in the run's memory format, compiled if asked (under DDP the
    model is compiled once wrapped: `fastseg.devices.distributed.distributed`). `cfg` is resolved
    (`resolve_run_options`)."""
    cuda_settings(device, cfg.deterministic)
    learn.model.to(device)
    if cfg.channels_last:
        learn.model.to(memory_format=torch.channels_last)
    if cfg.compile and world_size() == 1:
        learn.model = torch.compile(learn.model)
