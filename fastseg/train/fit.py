"""`fastseg fit`: train a run from a FitConfig, or resume one, with the run folder written as it goes."""

from contextlib import ExitStack
from dataclasses import asdict, replace
from pathlib import Path

from fastai.torch_core import set_seed

from fastseg.config import DataConfig, FitConfig, check_monitor, option_name, resumed_config
from fastseg.console import console, log
from fastseg.data.dataloaders import build_dataloaders
from fastseg.data.splits import dataset_classes
from fastseg.data.stats import training_class_pixels
from fastseg.devices.collectives import broadcast_object, rank, world_size
from fastseg.devices.distributed import distributed, is_main
from fastseg.devices.precision import amp_warning
from fastseg.devices.select import run_device
from fastseg.errors import FastsegError, Interrupted, io_error
from fastseg.io.runs import (
    BEST,
    CONFIG,
    FAILED,
    LAST,
    METRICS,
    check_new_run,
    claim_run,
    default_run_name,
    load_config,
    mark_failed,
    read_metrics_csv,
    run_lock,
    save_config,
)
from fastseg.io.serialize import load_state
from fastseg.models.weights import model_classes, model_metadata, read_metadata
from fastseg.train.callbacks import FreezeEncoder, Interrupt, Resume, SeedEpochs
from fastseg.train.fastpath import deterministic_mode
from fastseg.train.learner import build_learner, needs_class_pixels, resolve_run_options
from fastseg.train.lr_find import resolve_lr
from fastseg.train.recorder import RunRecorder
from fastseg.train.schedule import schedule_fit
from fastseg.train.tensorboard import TensorBoardLog, require_tensorboard


def fit(cfg: FitConfig, resume: Path | None = None, extra_cbs: list | None = None) -> tuple[Path, list[dict]]:
    """Train (or resume) a run; returns (run folder, metrics rows). Writes config.json,
    metrics.csv, curves.png, best.safetensors/json and last.safetensors/json.

    The run folder is taken first (`claim_run`: of two fits with one --name, one gets it); config.json
    appears once options, data (the preflight), the checkpoint and the pretrained weights have passed
    their checks, and a failed start removes the folder again.

    Raises:
        FastsegError: bad options, data or files (exit 2); an I/O fault while writing (exit 74).
        Interrupted: Ctrl-C or SIGTERM stopped the fit after saving a checkpoint (exit 130).
    """
    device = run_device(cfg.device)  # under torchrun: this process's device
    name = broadcast_object(cfg.name or default_run_name(cfg.arch))
    run_dir = resume or Path(cfg.runs_dir) / name
    with ExitStack() as lock:
        if is_main():  # the folder is taken before anything else (removed again if the start fails)
            lock.enter_context(run_lock(run_dir) if resume else claim_run(run_dir))
        elif not resume:
            check_new_run(run_dir)  # a folder holding a run is refused by every process, not rank 0 alone
        state = load_state(run_dir / LAST) if resume else None
        if state and state["epoch"] > cfg.epochs:
            raise FastsegError(f"--epochs {cfg.epochs} is fewer than the {state['epoch']} epochs run {run_dir} has "
                               f"done; pass --epochs {state['epoch']} or more.")
        classes = dataset_classes(cfg.data.roots)
        if resume:
            check_run_classes(run_dir, classes)
        check_monitor(cfg.monitor, classes.names)
        if cfg.log == "tensorboard":
            require_tensorboard()
        lr = resolve_lr(cfg, run_dir)  # a number: 'auto' is the lr_find valley
        set_seed(cfg.seed)
        dls = build_dataloaders(cfg.data, device=device, log=log)  # the preflight: data checked before writing
        warning = amp_warning(cfg.amp, device)
        if warning and is_main():
            log(warning)
        resolved = replace(resolve_run_options(cfg, device), lr=lr, name=run_dir.name)  # what repeats this run
        pixels = training_class_pixels(cfg.data, classes.num) if needs_class_pixels(cfg) else None
        learn = build_learner(resolved, dls, run_dir, device, pixels, classes)  # reads the pretrained weights
        if is_main():
            save_config(resolved, run_dir / CONFIG)
        return _train(resolved, learn, run_dir, state, classes, extra_cbs)


def _train(cfg: FitConfig, learn, run_dir: Path, state: dict | None, classes,
           extra_cbs: list | None) -> tuple[Path, list[dict]]:
    """The fit itself, from `state` (a checkpoint) or the start, with the run's callbacks. `cfg` holds
    the options as this run uses them (`resolve_run_options`, and the learning rate a number)."""
    start = state["epoch"] if state else 0
    rows = [r for r in read_metrics_csv(run_dir / METRICS) if r["epoch"] <= start] if state else []
    tracker = state["tracker"] if state else {"best": -1.0, "best_epoch": 0, "wait": 0}
    meta = model_metadata(cfg.arch, classes, cfg.width, cfg.dropout, config=asdict(cfg))
    recorder = RunRecorder(run_dir, meta, rows, tracker, start, cfg.patience, learn.metrics[0].state, cfg.monitor,
                           cfg.lr)
    interrupt = Interrupt(recorder.save_interrupted)
    cbs = [SeedEpochs(cfg.seed, rank()), recorder, interrupt, *(extra_cbs or [])]
    if cfg.log == "tensorboard" and is_main():
        cbs.append(TensorBoardLog(run_dir, recorder, classes))
    if cfg.freeze_epochs:
        cbs.append(FreezeEncoder(cfg.freeze_epochs, start))
    if state:
        cbs.append(Resume(state))
    if console.is_terminal and is_main():
        from fastseg.train.progress import RichProgress
        cbs.append(RichProgress())
    log(f"Run folder: {run_dir}" + (f" ({world_size()} processes)" if world_size() > 1 else ""))
    if is_main():
        (run_dir / FAILED).unlink(missing_ok=True)  # a resumed run is no longer the failed one
    try:
        with distributed(learn, cfg.compile), deterministic_mode(cfg.deterministic):
            schedule_fit(learn, cfg, cbs)
    except FastsegError as err:
        unwrap_callback_error(err)
        if is_main():
            mark_failed(run_dir, str(err))
        raise
    except OSError as err:
        raise io_error(err, f"free space and resume with `fastseg fit --resume {run_dir}`") from None
    finally:
        interrupt.after_fit()
    if interrupt.requested:
        raise Interrupted(f"Stopped by {interrupt.requested} with the checkpoint saved; continue with "
                          f"`fastseg fit --resume {run_dir}`.", recorder.rows)
    return run_dir, recorder.rows


def unwrap_callback_error(err: Exception) -> None:
    """Restore the message of an error raised in a callback: fastai prefixes it with "Exception occured in
    `Callback` when calling event `...`:\n\t", which is no sentence for a user."""
    head, sep, message = str(err).partition(":\n\t")
    if sep and head.startswith("Exception occured in `"):
        err.args = (message,)


def check_run_classes(run_dir: Path, classes) -> None:
    """Raises FastsegError when the dataset's classes are not those the run was trained on (best.json's)."""
    if not (run_dir / BEST).is_file():
        return
    recorded = model_classes(read_metadata(run_dir / BEST))
    if recorded.names != classes.names:
        raise FastsegError(f"Run {run_dir} was trained on the classes {', '.join(recorded.names)} but the dataset now "
                           f"has {', '.join(classes.names)}; resume with the classes it started with, or start a new "
                           "run.")


def resume_fit(run_dir: Path, extra_cbs: list | None = None, **given) -> tuple[Path, list[dict]]:
    """Continue the run in `run_dir` from its last checkpoint, on the same schedule.

    `given` holds options as config fields (e.g. voc=..., epochs=...; None: not given). Those in
    `RESUME_CHANGES` are applied, logged and saved into config.json: voc, sbd, voc11 and data (a
    folder dataset) relocate the data, epochs extends (or shortens, not below the epochs done) the
    run. Any other option must equal the run's. Relative data paths are resolved by `locate_data`.

    Raises:
        FastsegError: no checkpoint, or an option the run cannot change (named).
    """
    run_dir = Path(run_dir)
    if not (run_dir / LAST).is_file():
        raise FastsegError(f"Run folder {run_dir} has no checkpoint ({LAST}); pass a folder written by "
                           "`fastseg fit`.")
    cfg, changed = resumed_config(load_config(run_dir / CONFIG), given, run_dir)
    for field, (before, after) in changed.items():
        log(f"Resuming with {option_name(field)} {after} (the run was started with {before})" +
            ("; the learning-rate schedule is stretched to the new length from here on." if field == "epochs" else "."))
    return fit(replace(cfg, data=locate_data(cfg.data, run_dir)), resume=run_dir, extra_cbs=extra_cbs)


def locate_data(data: DataConfig, run_dir: Path) -> DataConfig:
    """The run's data folders, a relative one resolved against the current folder first, then
    against the folder holding the runs folder (where `fit` was most likely started).

    Raises:
        FastsegError: a data folder is found nowhere (names it and suggests --voc/--sbd/--voc11).
    """
    base = run_dir.resolve().parent.parent
    found = {}
    for key in ("voc", "data", "sbd", "voc11", "classes"):
        value = getattr(data, key)
        if value is None or Path(value).exists():
            continue
        if Path(value).is_absolute() or not (base / value).exists():
            where = "" if Path(value).is_absolute() else f" here or in {base}"
            raise FastsegError(f"The run's --{key} folder {value} does not exist{where}; pass --{key} DIR with "
                               "--resume to say where the data is now.")
        found[key] = str(base / value)
    return replace(data, **found)




