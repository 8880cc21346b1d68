"""Build a Learner from a FitConfig, and run find-lr, fit and resume."""

import json
from contextlib import ExitStack
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
from fastai.callback.core import Callback
from fastai.callback.progress import ProgressCallback
from fastai.callback.schedule import ParamScheduler, minimum, slide, steep, valley
from fastai.callback.training import GradientClip
from fastai.torch_core import set_seed
from rich.progress import Progress
from rich.table import Table

from fastseg.atomic import atomic_write
from fastseg.callbacks import Interrupt, NaNGuard, Resume, SeedEpochs
from fastseg.config import FitConfig, check_device, load_config, save_config
from fastseg.console import console, log
from fastseg.constants import VOC_CLASSES
from fastseg.data.dataloaders import DataConfig, build_dataloaders
from fastseg.data.splits import build_split
from fastseg.data.voc import resolve_voc_root
from fastseg.distributed import broadcast_object, distributed, init_from_env, is_main, world_size
from fastseg.errors import FastsegError, Interrupted, io_error
from fastseg.fastpath import cuda_settings, install_device_losses
from fastseg.learner import make_opt_func, seg_learner
from fastseg.losses import (
    L1Penalty,
    cached_class_pixels,
    median_frequency_weights,
    read_weights_file,
    segmentation_loss,
)
from fastseg.metrics import seg_metrics
from fastseg.models.blocks import set_head_prior
from fastseg.models.io import model_metadata
from fastseg.plots import plot_lr_find
from fastseg.precision import amp_warning, precision_callbacks, resolve_amp
from fastseg.recorder import RunRecorder
from fastseg.runs import (
    CONFIG,
    LAST,
    LR_FIND,
    METRICS,
    check_new_run,
    default_run_name,
    ensure_writable,
    read_metrics_csv,
    run_lock,
)
from fastseg.serialize import load_state

MIN_NUM_IT = 8  # lr_find's suggestions drop the first 10 % and the last 5 points: 8 leaves 3


def pick_device(requested: str | None) -> torch.device:
    """The device `--device` names (cpu, cuda, cuda:N; checked by `check_device`), or CUDA when
    present, else the CPU."""
    if requested is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    check_device(requested)
    return torch.device(requested)


def class_weights(cfg: FitConfig, pixels: tuple[np.ndarray, np.ndarray] | None = None) -> torch.Tensor | None:
    """None, median-frequency weights of the training split (from `pixels`, the counts of
    `training_class_pixels`, when the caller has them), or a file's."""
    if cfg.class_weights == "none":
        return None
    if cfg.class_weights == "median-freq":
        weights = median_frequency_weights(*(pixels or training_class_pixels(cfg)))
    else:
        weights = read_weights_file(Path(cfg.class_weights))
    show_class_weights(weights)
    return torch.tensor(weights, dtype=torch.float32)


def training_class_pixels(cfg: FitConfig) -> tuple[np.ndarray, np.ndarray]:
    """Per class of the training split: its pixels and the pixels of the images holding it (one
    pass over the masks, then cached beside the data)."""
    samples = build_split(cfg.data.train_split, cfg.data.roots)
    with Progress(console=console, transient=True, disable=not console.is_terminal) as bar:
        task = bar.add_task("class frequencies", total=len(samples))
        return cached_class_pixels(samples, class_stats_dir(cfg), progress=lambda: bar.advance(task))


def class_stats_dir(cfg: FitConfig) -> Path:
    """Where the class-statistics cache lives: beside the data, in the folder holding the resolved
    VOC2012 root (`VOCdevkit/fastseg-cache`), whatever --voc pointed at."""
    return resolve_voc_root(cfg.data.voc).parent / "fastseg-cache"


def show_class_weights(weights: np.ndarray) -> None:
    if not is_main():
        return
    table = Table(title="Class weights")
    for column in ("class", "weight"):
        table.add_column(column)
    for name, w in zip(VOC_CLASSES, weights, strict=False):
        table.add_row(name, f"{w:.3f}")
    console.print(table)


def channels_last(cfg: FitConfig, device: torch.device) -> bool:
    """cfg.channels_last, or for None: on with CUDA."""
    return cfg.channels_last if cfg.channels_last is not None else device.type == "cuda"


def momentum_cycle(cfg: FitConfig) -> list[float]:
    """The momentum schedule (start, middle, end): under one-cycle --mom is the upper momentum and
    the cycle dips to mom·0.85/0.95 (fastai's 0.95→0.85→0.95, scaled); constant otherwise."""
    if cfg.sched == "one-cycle":
        return [cfg.mom, cfg.mom * ONE_CYCLE_MOM_DIP, cfg.mom]
    return [cfg.mom] * 3


ONE_CYCLE_MOM_DIP = 0.85 / 0.95  # fastai's one-cycle momentum dip, relative to its upper value


def resolve_run_options(cfg: FitConfig, device: torch.device) -> FitConfig:
    """`cfg` with the device-dependent options replaced by what the run really uses (amp,
    channels_last) and the momentum cycle spelt out: what config.json records."""
    return replace(cfg, amp=resolve_amp(cfg.amp, device), channels_last=channels_last(cfg, device),
                   moms=cfg.moms or momentum_cycle(cfg))


def build_learner(cfg: FitConfig, dls, run_dir: Path, device: torch.device):
    """The Learner of a run: model, loss (class weights), optimizer, metrics and side callbacks."""
    metrics = seg_metrics(len(VOC_CLASSES))
    cbs = [NaNGuard(), *precision_callbacks(resolve_amp(cfg.amp, device), device)]
    if cfg.l1:
        cbs.append(L1Penalty(cfg.l1))
    if cfg.clip:
        cbs.append(GradientClip(cfg.clip))
    needs_counts = cfg.head_prior or cfg.class_weights == "median-freq"
    pixels = training_class_pixels(cfg) if needs_counts else None  # one pass over the masks for both
    loss_func = segmentation_loss(class_weights(cfg, pixels))
    learn = seg_learner(dls, cfg.arch, cfg.pretrained, cfg.width, loss_func=loss_func, metrics=metrics,
                        opt_func=make_opt_func(cfg.opt, cfg.mom), wd=cfg.wd, cbs=cbs, path=run_dir, model_dir=".")
    learn.remove_cbs([cb for cb in learn.cbs if isinstance(cb, ProgressCallback)])
    learn.logger = lambda row: None  # RunRecorder prints the table
    install_device_losses(learn)
    if cfg.head_prior:
        set_head_prior(learn.model.head, pixels[0])
    cuda_settings(device)
    learn.model.to(device)
    if channels_last(cfg, device):
        learn.model.to(memory_format=torch.channels_last)
    if cfg.compile:
        learn.model = torch.compile(learn.model)
    if cfg.freeze_epochs == 0:
        learn.unfreeze()
    return learn


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


def schedule_fit(learn, cfg: FitConfig, lr, cbs: list) -> None:
    """Train for cfg.epochs on the chosen schedule (resume callbacks skip what is done): one-cycle
    (momentum cycle cfg.moms), poly decay, or a flat rate."""
    lr = slice(cfg.lr_min, lr) if cfg.lr_min else lr
    if cfg.sched == "one-cycle":
        learn.fit_one_cycle(cfg.epochs, lr, wd=cfg.wd, moms=tuple(cfg.moms or momentum_cycle(cfg)), cbs=cbs)
        return
    lrs = group_lrs(learn, lr)
    if cfg.sched == "poly":
        cbs = cbs + [ParamScheduler({"lr": poly_schedule(lrs)})]
    learn.fit(cfg.epochs, lrs, wd=cfg.wd, cbs=cbs)


class FreezeEncoder(Callback):
    """Trains the decoder alone for the first `epochs` epochs, then everything."""

    order = 16

    def __init__(self, epochs: int):
        self.epochs = epochs

    def before_epoch(self):
        self.learn.opt.freeze_to(-1 if self.epoch < self.epochs else 0)


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


def fit(cfg: FitConfig, resume: Path | None = None, extra_cbs: list | None = None) -> tuple[Path, list[dict]]:
    """Train (or resume) a run; returns (run folder, metrics rows). Writes config.json,
    metrics.csv, curves.png, best.safetensors/json and last.safetensors/json.

    The run folder and config.json appear only once options, data (the preflight), the checkpoint
    and the pretrained weights have passed their checks, so a failed start leaves nothing behind.

    Raises:
        FastsegError: bad options, data or files (exit 2); an I/O fault while writing (exit 74).
        Interrupted: Ctrl-C or SIGTERM stopped the fit after saving a checkpoint (exit 130).
    """
    cfg.validate()
    device = init_from_env() or pick_device(cfg.device)  # under torchrun: this process's device
    name = broadcast_object(cfg.name or default_run_name(cfg.arch))
    run_dir = resume or check_new_run(Path(cfg.runs_dir) / name)
    with ExitStack() as lock:
        if resume and is_main():
            lock.enter_context(run_lock(run_dir))
        state = load_state(run_dir / LAST) if resume else None
        if state and state["epoch"] > cfg.epochs:
            raise FastsegError(f"--epochs {cfg.epochs} is fewer than the {state['epoch']} epochs run {run_dir} has "
                               f"done; pass --epochs {state['epoch']} or more.")
        lr = resolve_lr(cfg, run_dir)
        set_seed(cfg.seed)
        dls = build_dataloaders(cfg.data, device=device, log=log)  # the preflight: data checked before writing
        warning = amp_warning(cfg.amp, device)
        if warning and is_main():
            log(warning)
        resolved = replace(resolve_run_options(cfg, device), lr=lr, name=run_dir.name)  # what repeats this run
        learn = build_learner(resolved, dls, run_dir, device)  # reads the pretrained weights
        if is_main():
            if not resume:
                lock.enter_context(run_lock(ensure_writable(run_dir)))
                check_new_run(run_dir)  # another process may have started this run meanwhile
            save_config(resolved, run_dir / CONFIG)
        return _train(cfg, learn, run_dir, state, lr, resolved, extra_cbs)


def _train(cfg: FitConfig, learn, run_dir: Path, state: dict | None, lr: float, resolved: FitConfig,
           extra_cbs: list | None) -> tuple[Path, list[dict]]:
    """The fit itself, from `state` (a checkpoint) or the start, with the run's callbacks (`resolved`:
    the options as this run uses them)."""
    start = state["epoch"] if state else 0
    rows = [r for r in read_metrics_csv(run_dir / METRICS) if r["epoch"] <= start] if state else []
    tracker = state["tracker"] if state else {"best": -1.0, "best_epoch": 0, "wait": 0}
    meta = model_metadata(cfg.arch, len(VOC_CLASSES), cfg.width, config=asdict(resolved))
    recorder = RunRecorder(run_dir, meta, rows, tracker, start, cfg.patience, learn.metrics[0].state)
    interrupt = Interrupt(recorder.save_interrupted)
    cbs = [SeedEpochs(cfg.seed), recorder, interrupt, *(extra_cbs or [])]
    if cfg.freeze_epochs:
        cbs.append(FreezeEncoder(cfg.freeze_epochs))
    if state:
        cbs.append(Resume(state))
    if console.is_terminal and is_main():
        from fastseg.progress import RichProgress
        cbs.append(RichProgress())
    log(f"Run folder: {run_dir}" + (f" ({world_size()} processes)" if world_size() > 1 else ""))
    try:
        with distributed(learn):
            schedule_fit(learn, resolved, lr, cbs)
    except OSError as err:
        raise io_error(err, f"free space and resume with `fastseg fit --resume {run_dir}`") from None
    finally:
        interrupt.after_fit()
    if interrupt.requested:
        raise Interrupted(f"Stopped by {interrupt.requested} with the checkpoint saved; continue with "
                          f"`fastseg fit --resume {run_dir}`.", recorder.rows)
    return run_dir, recorder.rows


def resume_fit(run_dir: Path, extra_cbs: list | None = None, voc: Path | None = None, sbd: Path | None = None,
               voc11: Path | None = None, epochs: int | None = None) -> tuple[Path, list[dict]]:
    """Continue the run in `run_dir` from its last checkpoint, on the same schedule.

    `voc`, `sbd` and `voc11` relocate the data, `epochs` extends (or shortens, not below the epochs
    done) the run; each change is logged and saved into config.json. Relative data paths saved in
    config.json are resolved by `locate_data`.
    """
    run_dir = Path(run_dir)
    if not (run_dir / LAST).is_file():
        raise FastsegError(f"Run folder {run_dir} has no checkpoint ({LAST}); pass a folder written by "
                           "`fastseg fit`.")
    cfg = load_config(run_dir / CONFIG)
    moved = {k: str(v) for k, v in (("voc", voc), ("sbd", sbd), ("voc11", voc11)) if v is not None}
    for key, value in moved.items():
        log(f"Resuming with --{key} {value} (the run was started with {getattr(cfg.data, key)}).")
    data = locate_data(replace(cfg.data, **moved), run_dir)
    if epochs is not None and epochs != cfg.epochs:
        log(f"Resuming with --epochs {epochs} (the run was started with {cfg.epochs}); the learning-rate "
            "schedule is stretched to the new length from here on.")
    return fit(replace(cfg, data=data, epochs=epochs or cfg.epochs), resume=run_dir, extra_cbs=extra_cbs)


def locate_data(data: DataConfig, run_dir: Path) -> DataConfig:
    """The run's data folders, a relative one resolved against the current folder first, then
    against the folder holding the runs folder (where `fit` was most likely started).

    Raises:
        FastsegError: a data folder is found nowhere (names it and suggests --voc/--sbd/--voc11).
    """
    base = run_dir.resolve().parent.parent
    found = {}
    for key in ("voc", "sbd", "voc11"):
        value = getattr(data, key)
        if value is None or Path(value).exists():
            continue
        if Path(value).is_absolute() or not (base / value).exists():
            where = "" if Path(value).is_absolute() else f" here or in {base}"
            raise FastsegError(f"The run's --{key} folder {value} does not exist{where}; pass --{key} DIR with "
                               "--resume to say where the data is now.")
        found[key] = str(base / value)
    return replace(data, **found)


def find_lr(cfg: FitConfig, num_it: int = 100) -> tuple[Path, dict]:
    """fastai lr_find on the run's data and model; writes lr_find.json and lr_find.png."""
    cfg.validate()
    run_dir = check_new_run(Path(cfg.runs_dir) / (cfg.name or default_run_name(cfg.arch)))
    set_seed(cfg.seed)
    device = pick_device(cfg.device)
    if num_it < MIN_NUM_IT:
        raise FastsegError(f"--num-it {num_it} is too few; lr_find needs at least {MIN_NUM_IT} learning rates.")
    dls = build_dataloaders(cfg.data, device=device, log=log)
    learn = build_learner(cfg, dls, run_dir, device)
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
