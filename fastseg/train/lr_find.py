"""`fastseg find-lr` (fastai's lr_find with its four suggestions) and `--lr auto`, which reads them back."""

import json
from pathlib import Path

import torch
from fastai.callback.schedule import minimum, slide, steep, valley
from fastai.torch_core import set_seed

from fastseg.config import FitConfig
from fastseg.console import log
from fastseg.data.dataloaders import build_dataloaders
from fastseg.data.splits import dataset_classes
from fastseg.data.stats import training_class_pixels
from fastseg.devices.select import pick_device
from fastseg.errors import FastsegError
from fastseg.io.atomic import atomic_write
from fastseg.io.runs import LR_FIND, check_new_run, default_run_name, ensure_writable
from fastseg.train.callbacks import NaNGuard
from fastseg.train.learner import build_learner, needs_class_pixels
from fastseg.train.plots import plot_lr_find

MIN_NUM_IT = 8  # lr_find's suggestions drop the first 10 % and the last 5 points: 8 leaves 3


def resolve_lr(cfg: FitConfig, run_dir: Path) -> float:
    """cfg.lr, or for "auto" the valley suggestion of the lr_find result in this run's folder, else
    of the newest lr_find.json in runs_dir recorded for the same arch."""
    if cfg.lr != "auto":
        return float(cfg.lr)
    for path in lr_find_candidates(cfg, run_dir):
        lr = json.loads(path.read_text()).get("valley")
        if lr is None and path == run_dir / LR_FIND:  # this run's own find-lr gave no valley
            raise FastsegError(f"--lr auto: {path} has no valley suggestion (too few points); rerun "
                               "`fastseg find-lr` with a larger --num-it or pass a number.")
        if lr:
            log(f"--lr auto: using the lr_find valley {lr:.3e} from {path}")
            return lr
    raise FastsegError(f"--lr auto found no lr_find result with a valley in {run_dir / LR_FIND} nor in any "
                       f"{Path(cfg.runs_dir) / '*' / LR_FIND} of arch {cfg.arch}; run `fastseg find-lr --arch "
                       f"{cfg.arch} --runs-dir {cfg.runs_dir}` first or pass a number.")


def lr_find_candidates(cfg: FitConfig, run_dir: Path) -> list[Path]:
    """This run's lr_find.json, then those of runs_dir/*/ whose recorded arch is cfg.arch, newest first."""
    def same_arch(path: Path) -> bool:
        try:
            return json.loads(path.read_text()).get("arch") == cfg.arch
        except (OSError, ValueError):
            return False
    found = sorted((p for p in Path(cfg.runs_dir).glob(f"*/{LR_FIND}") if p.parent != run_dir and same_arch(p)),
                   key=lambda p: p.stat().st_mtime, reverse=True)
    return [p for p in [run_dir / LR_FIND] if p.is_file()] + found


def find_lr(cfg: FitConfig, num_it: int = 100) -> tuple[Path, dict]:
    """fastai lr_find on the run's data and model; writes lr_find.json and lr_find.png."""
    run_dir = check_new_run(Path(cfg.runs_dir) / (cfg.name or default_run_name(cfg.arch)))
    set_seed(cfg.seed)
    device = pick_device(cfg.device)
    if num_it < MIN_NUM_IT:
        raise FastsegError(f"--num-it {num_it} is too few; lr_find needs at least {MIN_NUM_IT} learning rates.")
    classes = dataset_classes(cfg.data.roots)
    dls = build_dataloaders(cfg.data, device=device, log=log)
    pixels = training_class_pixels(cfg.data, classes.num) if needs_class_pixels(cfg) else None  # the fit's loss
    learn = build_learner(cfg, dls, run_dir, device, pixels, classes)
    learn.remove_cbs([cb for cb in learn.cbs if isinstance(cb, NaNGuard)])  # lr_find drives the loss up on purpose
    ensure_writable(run_dir)
    learn.lr_find(num_it=num_it, show_plot=False, suggest_funcs=())
    rec = learn.recorder
    lrs, losses = rec.lrs[: len(rec.losses)], [float(v) for v in rec.losses]
    suggestions = lr_suggestions(lrs, losses, num_it)
    record = {**suggestions, "arch": cfg.arch, "width": cfg.width}  # --lr auto matches the arch
    atomic_write(run_dir / LR_FIND, lambda tmp: tmp.write_text(json.dumps(record, indent=2)))
    plot_lr_find(lrs, losses, {k: v for k, v in suggestions.items() if v is not None}, run_dir / "lr_find.png")
    return run_dir, suggestions


def lr_suggestions(lrs: list[float], losses: list[float], num_it: int) -> dict:
    """fastai's valley, slide, steep and minimum suggestions, on the points lr_find itself uses
    (the first 10 % and last 5 dropped); a suggestion with too few points is None."""
    lrs_t = torch.tensor(lrs[num_it // 10: -5])
    losses_t = torch.tensor(losses[num_it // 10: -5])
    out = {}
    for func in (valley, slide, steep, minimum):
        try:
            out[func.__name__] = float(func(lrs_t, losses_t, num_it)[0])
        except (IndexError, RuntimeError, ValueError):
            out[func.__name__] = None
    return out
