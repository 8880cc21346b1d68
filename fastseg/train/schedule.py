"""Learning-rate schedules of a fit: fastai's one-cycle, the poly decay of the seeds, or flat."""

import numpy as np
from fastai.callback.schedule import ParamScheduler

from fastseg.config import FitConfig

POLY_POWER = 0.9  # the poly schedule of DeepLab and the SegNet seed: lr·(1 - pct)^0.9


def poly_schedule(lr_max: np.ndarray, power: float = POLY_POWER):
    """ParamScheduler function: per-group learning rates lr_max·(1 - pct)^power at position pct."""
    return lambda pct: lr_max * (1 - pct) ** power


def group_lrs(learn, lr) -> np.ndarray:
    """The per-group learning rates fastai gives `lr` (a number or slice(lo, hi)), as an array."""
    if learn.opt is None:
        learn.create_opt()
    learn.opt.set_hyper("lr", lr)
    return np.array([h["lr"] for h in learn.opt.hypers])


def schedule_fit(learn, cfg: FitConfig, cbs: list) -> None:
    """Train for cfg.epochs at peak rate cfg.lr on the chosen schedule (resume callbacks skip what is
    done): one-cycle (momentum cycle cfg.moms), poly decay, or a flat rate. `cfg` is resolved
    (`train.learner.resolve_run_options`, its lr a number)."""
    lr = slice(cfg.lr_min, cfg.lr) if cfg.lr_min else cfg.lr
    if cfg.sched == "one-cycle":
        learn.fit_one_cycle(cfg.epochs, lr, wd=cfg.wd, moms=tuple(cfg.moms), cbs=cbs)
        return
    lrs = group_lrs(learn, lr)
    if cfg.sched == "poly":
        cbs = cbs + [ParamScheduler({"lr": poly_schedule(lrs)})]
    learn.fit(cfg.epochs, lrs, wd=cfg.wd, cbs=cbs)
