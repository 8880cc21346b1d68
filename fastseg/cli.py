"""The `fastseg` command line: parse options, build a config, make one library call, summarise.

Only typer, rich and fastseg's pure modules (config, console, constants, errors) are imported here
at the top, so that `fastseg --help` starts without torch; each command imports what it runs.
"""

import contextlib
import functools
import sys
from dataclasses import MISSING, fields
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from typer.models import OptionInfo

from fastseg import _quiet  # noqa: F401 - first: silences fastai's torch.jit FutureWarnings at import
from fastseg.config import (
    DEVICE_DEFAULTS,
    EVAL_SPLITS,
    FOLDER_SPLITS,
    RUNS_DIR,
    TRAIN_SPLITS,
    Amp,
    BenchConfig,
    DataConfig,
    FitConfig,
    Log,
    Opt,
    OptionError,
    Preset,
    Sched,
    SynthConfig,
)
from fastseg.console import console, log, progress_bar
from fastseg.constants import DEFAULT_OVERLAP, DEFAULT_TILE, MIN_SIZE, NUM_CLASSES
from fastseg.data.splits import DataRoots
from fastseg.errors import EXIT_INTERRUPTED, FastsegError, Interrupted, io_error

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Train and evaluate SegNet and VGG16-BN skip models on PASCAL VOC and SBD.")



def arch_help() -> str:
    """--arch's help: each architecture the registry offers, with its phrase."""
    from fastseg.models import ARCHS, cli_archs
    return "Model architecture: " + "; ".join(f"{name} ({ARCHS[name].help})" for name in cli_archs()) + "."


def check_arch(value: str) -> str:
    """--arch's callback: the value, once it is one of the registry's architectures."""
    from fastseg.models import cli_archs
    if value not in cli_archs():
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(map(repr, cli_archs()))}.")
    return value


class RegistryOption(OptionInfo):
    """--arch's option, whose help is `arch_help()` as the registry stands when the command line is
    built (each run): an architecture registered after this module was imported is listed too."""

    @property
    def help(self) -> str:
        return arch_help()

    @help.setter
    def help(self, value) -> None:
        pass  # typer sets the help it was given; the registry's is the one shown


def arch_option():
    option = typer.Option("--arch", callback=check_arch, rich_help_panel=MODEL_PANEL)
    option.__class__ = RegistryOption
    return option


def _defaults(cls) -> dict:
    """A dataclass's field defaults by name: the CLI's defaults come from the configs themselves."""
    return {f.name: f.default for f in fields(cls) if f.default is not MISSING}


FIT, DATA, SYNTH, BENCH = (_defaults(c) for c in (FitConfig, DataConfig, SynthConfig, BenchConfig))
RUNS = Path(RUNS_DIR)


def _per_device(what: str, i: int) -> str:
    """Help text for a bench option whose default depends on the device (DEVICE_DEFAULTS column i)."""
    return f"{what} (default: {DEVICE_DEFAULTS['cuda'][i]} on CUDA, {DEVICE_DEFAULTS['cpu'][i]} on CPU)."


def friendly(func):
    """Turn a FastsegError, an OSError with an errno (disk full, no permission), Ctrl-C or SIGTERM into
    one sentence on stderr and the documented exit code (fastseg.errors), never a traceback."""
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            with sigterm_interrupts():
                return func(*args, **kwargs)
        except Interrupted as err:
            from fastseg.devices.distributed import is_main
            if is_main():  # under DDP every process stops after the same batch: one says so
                typer.echo(str(err), err=True)
            raise typer.Exit(err.exit_code) from None
        except FastsegError as err:
            typer.echo(f"Error: {err}", err=True)
            raise typer.Exit(err.exit_code) from None
        except OSError as err:
            if err.errno is None:
                raise
            typer.echo(f"Error: {io_error(err)}", err=True)
            raise typer.Exit(io_error(err).exit_code) from None
        except KeyboardInterrupt as err:
            by = err.args[0] if err.args else "SIGINT"
            typer.echo(f"Stopped by {by}; every file written so far is complete and nothing half-written was left.",
                       err=True)
            raise typer.Exit(EXIT_INTERRUPTED) from None
    return wrapper


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, so that `finally` blocks clean up as after Ctrl-C."""


@contextlib.contextmanager
def sigterm_interrupts():
    """While inside, SIGTERM raises Terminated("SIGTERM") (a KeyboardInterrupt) instead of ending the
    process at once with 143: temporary files are removed and the command exits 130 with a sentence.
    `fit` installs its own handler while training, to save a checkpoint first."""
    import signal
    import threading
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise Terminated("SIGTERM")
    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def worker(func):
    """What each process started by --nproc runs: `func()` with the CLI's error handling, ending the
    process with the documented exit code (the launcher passes it on) instead of raising."""
    try:
        return friendly(func)()
    except typer.Exit as stop:
        sys.exit(stop.exit_code)


def run_processes(func, nproc: int, nnodes: int, endpoint: str | None, device: str | None):
    """`func()` here, or in `nproc` launched processes per machine (then rank 0's return value)."""
    if nproc == 1 and nnodes == 1:
        return func()
    from fastseg.devices.launch import check_launch, launch
    check_launch(nproc, nnodes, endpoint, device)
    return launch(worker, (func,), nproc, nnodes, endpoint, device)


# Options shared by the data, training and evaluation commands, in the help panels of `fit`.
DATA_PANEL, MODEL_PANEL, OPT_PANEL, SPEED_PANEL, RUN_PANEL = (
    "Data", "Model", "Optimisation and schedule", "Precision and speed", "Run folder")
VocOpt = Annotated[Path | None, typer.Option("--voc", help="VOC2012 folder (VOCdevkit/VOC2012 or a parent).",
                                             rich_help_panel=DATA_PANEL)]
DataOpt = Annotated[Path | None, typer.Option("--data", help="A folder dataset instead of VOC: DIR/images, DIR/masks "
                                              "and DIR/classes.txt (docs: Your own data).",
                                              rich_help_panel=DATA_PANEL)]
ClassesOpt = Annotated[Path | None, typer.Option("--classes", help="Class list for a VOC-layout dataset (one name per "
                                                 "line, optional R G B; default: VOC's 21).",
                                                 rich_help_panel=DATA_PANEL)]
SbdOpt = Annotated[Path | None, typer.Option("--sbd", help="SBD folder (benchmark_RELEASE/dataset or a parent).",
                                             rich_help_panel=DATA_PANEL)]
Voc11Opt = Annotated[Path | None, typer.Option("--voc11", help="VOC2011 folder (seg11valid).",
                                               rich_help_panel=DATA_PANEL)]
TrainOpt = Annotated[str | None, typer.Option("--train", help=f"Training split: {', '.join(TRAIN_SPLITS)} (default "
                                              f"{TRAIN_SPLITS[0]}), or {FOLDER_SPLITS[0]} with --data.",
                                              rich_help_panel=DATA_PANEL)]
ValidOpt = Annotated[str | None, typer.Option("--valid", help=f"Validation split: {', '.join(EVAL_SPLITS)} (default "
                                              f"{EVAL_SPLITS[0]}), or {FOLDER_SPLITS[1]} with --data.",
                                              rich_help_panel=DATA_PANEL)]
CropOpt = Annotated[int, typer.Option(help="Random crop size for training (pixels, at least 32).",
                                      rich_help_panel=DATA_PANEL)]
BsOpt = Annotated[int, typer.Option("--bs", help="Batch size.", rich_help_panel=DATA_PANEL)]
AugOpt = Annotated[Preset, typer.Option("--augment", help="Augmentation preset.", rich_help_panel=DATA_PANEL)]
WorkersOpt = Annotated[int | None, typer.Option("--workers", help="Loader processes (default: min(8, CPUs) on CUDA, "
                                                "0 on the CPU).", rich_help_panel=DATA_PANEL)]
CacheOpt = Annotated[bool, typer.Option("--cache", help="Keep decoded images and masks in memory (small datasets).",
                                        rich_help_panel=DATA_PANEL)]
SkipBadOpt = Annotated[bool, typer.Option("--skip-bad", help="Leave out samples whose files fail the checks "
                                          "(listed in a warning) instead of refusing.", rich_help_panel=DATA_PANEL)]
McOpt = Annotated[int, typer.Option("--mc", min=0, help="Monte Carlo dropout: average this many stochastic "
                                     "passes (a model trained with --dropout; the paper used 50).")]
ArchOpt = Annotated[str, arch_option()]
WidthOpt = Annotated[float, typer.Option(help="Channel multiplier (1.0 = the faithful model).",
                                         rich_help_panel=MODEL_PANEL)]
PretrainedOpt = Annotated[str, typer.Option(help="Encoder weights: imagenet, none, or a .pth/.safetensors file.",
                                            rich_help_panel=MODEL_PANEL)]
OptOpt = Annotated[Opt, typer.Option("--opt", help="Optimizer.", rich_help_panel=OPT_PANEL)]
WdOpt = Annotated[float, typer.Option(help="Weight decay.", rich_help_panel=OPT_PANEL)]
RunsOpt = Annotated[Path, typer.Option("--runs-dir", help="Folder holding run folders.", rich_help_panel=RUN_PANEL)]
NameOpt = Annotated[str | None, typer.Option(help="Run folder name (default <timestamp>-<arch>).",
                                             rich_help_panel=RUN_PANEL)]
SeedOpt = Annotated[int, typer.Option(help="Random seed.", rich_help_panel=RUN_PANEL)]
DeviceOpt = Annotated[str | None, typer.Option(help="cpu, cuda or cuda:N (default: CUDA when present).",
                                               rich_help_panel=SPEED_PANEL)]
NprocOpt = Annotated[int, typer.Option("--nproc", help="Processes on this machine, one per GPU (gloo processes on the "
                                       "CPU), started by fastseg itself (docs: Several GPUs).",
                                       rich_help_panel=SPEED_PANEL)]
NnodesOpt = Annotated[int, typer.Option("--nnodes", help="Machines taking part, each running this command with "
                                        "--nproc processes.", rich_help_panel=SPEED_PANEL)]
EndpointOpt = Annotated[str | None, typer.Option("--rdzv-endpoint", help="HOST:PORT where the machines of --nnodes "
                                                 "meet (the same on each; the first to start hosts it).",
                                                 rich_help_panel=SPEED_PANEL)]

DATA_OPTIONS = {"voc": "voc", "data": "data", "sbd": "sbd", "voc11": "voc11", "classes": "classes",
                "train": "train_split", "valid": "valid_split",
                "crop": "crop", "bs": "bs", "augment": "augment", "workers": "num_workers", "cache": "cache",
                "skip_bad": "skip_bad"}
"""CLI option name → DataConfig field; every other option of find-lr and fit is a FitConfig field."""


def _plain(value):
    """An option's value as the configs store it: paths as strings, enum members as their values."""
    if isinstance(value, Path):
        return str(value)
    return value.value if isinstance(value, Enum) else value


def fit_config(**options) -> FitConfig:
    """The FitConfig of find-lr's or fit's options (named as in DATA_OPTIONS, then FitConfig's fields)."""
    data = DataConfig(**{field: _plain(options.pop(name)) for name, field in DATA_OPTIONS.items() if name in options})
    return FitConfig(data=data, **{k: _plain(v) for k, v in options.items()})


@app.command(epilog="Example: fastseg synth --out data/synthetic --n-train 400 --n-val 60; "
             "fastseg synth --layout folder --classes 5 --colour-masks --out data/shapes")
@friendly
def synth(out: Annotated[Path, typer.Option(help="Folder to write the dataset into.")] = Path("data/synthetic"),
          n_train: Annotated[int, typer.Option(help="VOC2012 seg train ids (folder layout: train images).")]
          = SYNTH["n_train"],
          n_val: Annotated[int, typer.Option(help="VOC2012 seg val ids (folder layout: val images).")] = SYNTH["n_val"],
          n_sbd_only: Annotated[int, typer.Option(help="Ids annotated by SBD alone.")] = SYNTH["n_sbd_only"],
          size: Annotated[int, typer.Option(help="Longest image side in pixels.")] = SYNTH["size"],
          seed: Annotated[int, typer.Option(help="Random seed.")] = SYNTH["seed"],
          layout: Annotated[str, typer.Option(help="voc (VOCdevkit, VOC2011 and SBD) or folder (images/, masks/, "
                                              "classes.txt, train.txt, val.txt: the --data layout).")] = "voc",
          classes: Annotated[int, typer.Option("--classes", help="Classes of the folder layout, background "
                                               f"included (2 to {NUM_CLASSES}).")] = 5,
          colour_masks: Annotated[bool, typer.Option("--colour-masks", help="Folder layout: RGB colour masks "
                                                     "(colours in classes.txt) instead of index PNGs.")] = False):
    """Write a seeded synthetic dataset laid out exactly like VOCdevkit/VOC2012, VOC2011 and SBD, or as
    a folder dataset with its own classes."""
    from fastseg.data.synthetic import generate, generate_folder, make_id_sets
    cfg = SynthConfig(n_train=n_train, n_val=n_val, n_sbd_only=n_sbd_only, size=size, seed=seed)
    if min(n_train, n_val, n_sbd_only) < 2 or size < MIN_SIZE:
        raise FastsegError(f"synth needs --n-train, --n-val and --n-sbd-only of at least 2 and --size of at least "
                           f"{MIN_SIZE}.")
    if layout not in ("voc", "folder"):
        raise FastsegError(f"--layout {layout} is not known; use voc or folder.")
    if layout == "folder":
        if not 2 <= classes <= NUM_CLASSES:
            raise FastsegError(f"--classes {classes} is out of range; the synthetic folder dataset has 2 to "
                               f"{NUM_CLASSES} classes (background included).")
        with progress_bar("synth", total=n_train + n_val) as advance:
            generate_folder(out, cfg, classes, colour_masks, progress=lambda _: advance())
        log(f"Folder dataset with {classes} classes written to {out}: --data {out}")
        return
    sets = make_id_sets(cfg)
    total = len(set(sets.voc_train + sets.voc_val + sets.sbd_train + sets.sbd_val))
    with progress_bar("synth", total=total) as advance:
        generate(out, cfg, progress=lambda _: advance())
    roots = DataRoots.under(out)
    log(f"Synthetic dataset written to {out}: --voc {roots.voc} --sbd {roots.sbd}")


@app.command(epilog="Example: fastseg download voc2012 --root data")
@friendly
def download(name: Annotated[str, typer.Argument(help="voc2012, voc2011 or sbd.")],
             root: Annotated[Path, typer.Option(help="Folder to download and extract into.")] = Path("data")):
    """Download, verify (md5) and extract an official dataset archive; resumes partial downloads."""
    from fastseg.data.download import download_dataset
    download_dataset(name, root)


@app.command("check-data", epilog="Example: fastseg check-data --voc data --sbd data (or --data DIR)")
@friendly
def check_data(voc: VocOpt = None, sbd: SbdOpt = None, voc11: Voc11Opt = None, data: DataOpt = None,
               classes: ClassesOpt = None):
    """Split counts, leakage check and every problem found in the files; exit 1 on a problem."""

    from fastseg.data.checks import check_dataset
    roots = DataConfig(voc=_plain(voc), data=_plain(data), sbd=_plain(sbd), voc11=_plain(voc11),
                       classes=_plain(classes)).roots
    with progress_bar("checking files") as advance:
        report = check_dataset(roots, progress=advance)
    _print_data_report(report)
    if report.problems or any(n for _, _, n in report.leaks):
        raise typer.Exit(1)


def _print_data_report(report) -> None:
    """The notes (images shown rotated, with the orientation their masks follow), then the split and
    leakage tables for a clean dataset; for a faulty one only what is wrong, one line each (the tables
    would bury it)."""
    leaks = [(t, e, n) for t, e, n in report.leaks if n]
    for note in report.notes:
        log(f"{note.path}: {note.message}.")
    if report.problems or leaks:
        for problem in report.problems:
            log(f"{problem.path}: {problem.message}")
        for train, evaluation, shared in leaks:
            log(f"{train} and {evaluation} share {shared} ids: evaluation images must not be trained on.")
        log(f"{len(report.problems) + len(leaks)} problem(s) found; fix them and run check-data again.")
        return
    table = Table(title="Splits")
    table.add_column("split")
    table.add_column("images", justify="right")
    for name, count in report.counts.items():
        table.add_row(name, str(count) if isinstance(count, int) else f"unavailable: {count}")
    console.print(table)
    table = Table(title="Leakage check (training ∩ evaluation ids)")
    for column in ("training", "evaluation", "shared ids"):
        table.add_column(column)
    for train, evaluation, _ in report.leaks:
        table.add_row(train, evaluation, "0 (ok)")
    console.print(table)
    classes = report.classes
    colours = " with colours (RGB masks accepted)" if classes.colours else ""
    log(f"Classes ({classes.num}{colours}): {', '.join(classes.names)}; void (255): {classes.void}.")
    log("0 problem(s) found.")


@app.command("show-batch", epilog="Example: fastseg show-batch --voc data --sbd data --out figures")
@friendly
def show_batch(voc: VocOpt = None, sbd: SbdOpt = None, voc11: Voc11Opt = None, data: DataOpt = None,
               classes: ClassesOpt = None, train: TrainOpt = None, valid: ValidOpt = None,
               crop: CropOpt = DATA["crop"], augment: AugOpt = Preset(DATA["augment"]),
               n: Annotated[int, typer.Option(help="Samples per grid.")] = 8,
               out: Annotated[Path, typer.Option(help="Folder for train_batch.png and valid_batch.png.")] = Path("."),
               seed: Annotated[int, typer.Option(help="Random seed.")] = 0):
    """PNG grids of augmented training samples and of validation samples, masks in the dataset's colours."""
    from fastai.torch_core import set_seed

    from fastseg.data.dataloaders import build_dataloaders
    from fastseg.data.splits import dataset_classes
    from fastseg.evaluate.figures import plot_batch
    set_seed(seed)
    cfg = DataConfig(voc=_plain(voc), data=_plain(data), sbd=_plain(sbd), voc11=_plain(voc11), classes=_plain(classes),
                     train_split=train, valid_split=valid, crop=crop, bs=n, augment=augment.value, num_workers=0)
    palette = dataset_classes(cfg.roots).palette()
    dls = build_dataloaders(cfg, device="cpu", log=log)
    out.mkdir(parents=True, exist_ok=True)
    # the validation grid mixes padded sizes (scoring never does): a shuffled view pads to the largest
    for name, dl in (("train", dls.train), ("valid", dls.valid.new(shuffle=True))):
        x, y = dl.one_batch()
        path = plot_batch(x, y, out / f"{name}_batch.png", title=f"{name} samples", palette=palette)
        log(f"Wrote {path}")


@app.command("find-lr", epilog="Example: fastseg find-lr --voc data --sbd data --arch segnet --name segnet-voc, "
             "then fastseg fit --name segnet-voc --lr auto ...")
@friendly
def find_lr_cmd(voc: VocOpt = None, sbd: SbdOpt = None, voc11: Voc11Opt = None, data: DataOpt = None,
                classes: ClassesOpt = None, train: TrainOpt = None, valid: ValidOpt = None,
                crop: CropOpt = DATA["crop"], bs: BsOpt = DATA["bs"], augment: AugOpt = DATA["augment"],
                workers: WorkersOpt = None, cache: CacheOpt = DATA["cache"], skip_bad: SkipBadOpt = False,
                arch: ArchOpt = FIT["arch"], width: WidthOpt = FIT["width"],
                pretrained: PretrainedOpt = FIT["pretrained"], opt: OptOpt = FIT["opt"], wd: WdOpt = FIT["wd"],
                num_it: Annotated[int, typer.Option(help="Learning rates tried.", rich_help_panel=OPT_PANEL)] = 100,
                runs_dir: RunsOpt = RUNS, name: NameOpt = None, seed: SeedOpt = FIT["seed"],
                device: DeviceOpt = None):
    """fastai lr_find: writes lr_find.png and lr_find.json (valley, slide, steep, minimum)."""
    options = {k: v for k, v in locals().items() if k != "num_it"}  # the parameters, named as the configs' fields
    from fastseg.train.lr_find import find_lr
    cfg = fit_config(**options)
    run_dir, found = find_lr(cfg, num_it=num_it)
    shown = ", ".join(f"{k} {v:.2e}" for k, v in found.items() if v is not None)
    log(f"lr_find: {shown}; plot and values in {run_dir}")


SEGNET_RECIPE = ("fastseg fit --voc data --sbd data --arch segnet --pretrained imagenet --train train-aug "
                 "--valid seg11valid --crop 320 --bs 32 --augment light --opt sgd --lr 5e-3 --mom 0.9 --wd 5e-4 "
                 "--epochs 127")
"""The SegNet seed's recipe spelt out (every value is fit's default; docs/training.md explains each);
recipes/segnet-voc.toml holds the same."""

SKIP_RECIPE = ("fastseg fit --voc data --arch skip --pretrained imagenet --train voc12-train --valid voc12-val-a "
               "--augment heavy --opt adam --lr 1e-4 --sched one-cycle --epochs 300 --patience 30 --l1 1e-6 "
               "--class-weights median-freq")
"""The VGG16-BN skip seed's recipe (evaluate its best model on voc12-val-b); recipes/skip-voc.toml."""


@app.command(epilog=f"Example (the SegNet seed's recipe): {SEGNET_RECIPE}")
@friendly
def fit(ctx: typer.Context,
        voc: VocOpt = None, sbd: SbdOpt = None, voc11: Voc11Opt = None, data: DataOpt = None,
        classes: ClassesOpt = None, train: TrainOpt = None, valid: ValidOpt = None,
        crop: CropOpt = DATA["crop"], bs: BsOpt = DATA["bs"], augment: AugOpt = DATA["augment"],
        workers: WorkersOpt = None, cache: CacheOpt = DATA["cache"], skip_bad: SkipBadOpt = False,
        arch: ArchOpt = FIT["arch"], width: WidthOpt = FIT["width"],
        dropout: Annotated[float, typer.Option(help="Bayesian SegNet's dropout after the 3 deepest encoder and "
                                               "decoder stages (the paper's 0.5); 0 builds none. Sample it with "
                                               "evaluate/predict --mc N.", rich_help_panel=MODEL_PANEL)]
        = FIT["dropout"],
        pretrained: PretrainedOpt = FIT["pretrained"],
        head_prior: Annotated[bool, typer.Option("--head-prior", help="Start the head's biases at the log class "
                              "shares of the training split (one pass over its masks, cached).",
                              rich_help_panel=MODEL_PANEL)] = FIT["head_prior"],
        epochs: Annotated[int | None, typer.Option(help=f"Epochs (default {FIT['epochs']}, the SegNet seed's); "
                                                   "with --resume, the new total.", rich_help_panel=OPT_PANEL)] = None,
        lr: Annotated[str, typer.Option(help="Peak learning rate, or 'auto' for the lr_find valley.",
                                        rich_help_panel=OPT_PANEL)] = str(FIT["lr"]),
        lr_min: Annotated[float | None, typer.Option(help="Encoder learning rate: slice(lr-min, lr).",
                                                     rich_help_panel=OPT_PANEL)] = None,
        opt: OptOpt = FIT["opt"],
        mom: Annotated[float, typer.Option(help="SGD momentum (Adam's beta1); under one-cycle the upper "
                   "momentum of the cycle mom → mom·0.85/0.95 → mom.", rich_help_panel=OPT_PANEL)] = FIT["mom"],
        wd: WdOpt = FIT["wd"],
        sched: Annotated[Sched, typer.Option("--sched", help="Learning-rate schedule.",
                                             rich_help_panel=OPT_PANEL)] = FIT["sched"],
        freeze_epochs: Annotated[int, typer.Option(help="Epochs training the decoder alone first.",
                                                   rich_help_panel=OPT_PANEL)] = FIT["freeze_epochs"],
        monitor: Annotated[str, typer.Option(help="The validation metric best.safetensors and --patience follow: "
                                             "miou, fg_miou, pixel_acc or iou:CLASS (e.g. iou:cat).",
                                             rich_help_panel=OPT_PANEL)] = FIT["monitor"],
        patience: Annotated[int | None, typer.Option(help="Stop after this many epochs without a better monitored "
                                                     "metric.", rich_help_panel=OPT_PANEL)] = None,
        clip: Annotated[float | None, typer.Option(help="Gradient norm clipping.", rich_help_panel=OPT_PANEL)] = None,
        class_weights: Annotated[str, typer.Option(help="none, median-freq, or a file of one weight per class.",
                                                   rich_help_panel=OPT_PANEL)] = FIT["class_weights"],
        l1: Annotated[float, typer.Option(help="L1 weight penalty coefficient.", rich_help_panel=OPT_PANEL)]
        = FIT["l1"],
        amp: Annotated[Amp, typer.Option(help="Mixed precision: auto (bf16 on CUDA where supported, else fp16; "
                   "off on the CPU), bf16 (CPU autocast too), fp16 (CUDA only) or off.",
                   rich_help_panel=SPEED_PANEL)] = FIT["amp"],
        channels_last: Annotated[bool | None, typer.Option("--channels-last/--no-channels-last",
                                 help="NHWC memory format (default: on with CUDA).", rich_help_panel=SPEED_PANEL)]
        = FIT["channels_last"],
        compile: Annotated[bool, typer.Option("--compile", help="torch.compile the model.",
                                              rich_help_panel=SPEED_PANEL)] = False,
        deterministic: Annotated[bool, typer.Option("--deterministic", help="Deterministic kernels, so that a "
                                                    "resumed CUDA run is bit-identical to an uninterrupted one "
                                                    "(slower; the CPU is deterministic without it).",
                                                    rich_help_panel=SPEED_PANEL)] = FIT["deterministic"],
        device: DeviceOpt = None, nproc: NprocOpt = 1, nnodes: NnodesOpt = 1, rdzv_endpoint: EndpointOpt = None,
        runs_dir: RunsOpt = RUNS, name: NameOpt = None, seed: SeedOpt = FIT["seed"],
        log: Annotated[Log, typer.Option("--log", help="Also log to TensorBoard (<run>/tensorboard; needs "
                                         "pip install 'fastseg\\[tensorboard]').", rich_help_panel=RUN_PANEL)]
        = FIT["log"],
        resume: Annotated[Path | None, typer.Option(help="Continue the run in this folder (--voc, --sbd, --voc11 "
                                                         "relocate its data, --epochs extends it).",
                                                    rich_help_panel=RUN_PANEL)] = None,
        config: Annotated[Path | None, typer.Option("--config", help="A recipe file (TOML) of these options; options "
                                                    "given on the command line override it.",
                                                    rich_help_panel=RUN_PANEL)] = None):
    """Train with fastai: best model by mIoU, a full checkpoint every epoch, curves and metrics.csv."""
    options = {k: v for k, v in locals().items()  # the configs' fields, named as the configs name them
               if k not in ("ctx", "resume", "config", "nproc", "nnodes", "rdzv_endpoint")}
    launch = {"nproc": nproc, "nnodes": nnodes, "endpoint": rdzv_endpoint}
    from fastseg.train.fit import fit as run_fit
    from fastseg.train.fit import resume_fit
    if config is not None and resume is not None:
        raise FastsegError("--config starts a new run and --resume continues one; pass only one of them.")
    recipe = recipe_options(config, options, ctx) if config is not None else {}
    if resume is not None:
        given = {name: value for name, value in options.items() if _given(ctx, name)}
        func = functools.partial(resume_fit, resume, **config_fields(given))
    else:
        options |= {name: value for name, (_, value) in recipe.items()}
        if options["voc"] is None and options["data"] is None:
            raise FastsegError("fit needs --voc DIR or --data DIR (or --resume RUN_DIR); run `fastseg synth` for a "
                               "dataset.")
        epochs = FIT["epochs"] if options["epochs"] is None else options["epochs"]  # 0 is refused, not the default
        with recipe_blame(config, recipe):
            cfg = fit_config(**options | {"epochs": epochs, "lr": _lr(str(options["lr"]))})
        func = functools.partial(run_fit, cfg)
    run_dir, rows = run_processes(func, device=options["device"], **launch)
    _summarise_fit(run_dir, rows)


def _given(ctx: typer.Context, name: str) -> bool:
    """Whether the option `name` was typed on the command line (not a default or a recipe's value)."""
    return ctx.get_parameter_source(name).name == "COMMANDLINE"  # typer vendors its own click


def config_fields(options: dict) -> dict:
    """find-lr's and fit's options (named as their parameters) as config fields with the configs' values."""
    fields = {DATA_OPTIONS.get(name, name): _plain(value) for name, value in options.items()}
    if isinstance(fields.get("lr"), str):
        fields["lr"] = _lr(fields["lr"])
    return fields


@contextlib.contextmanager
def recipe_blame(path: Path | None, recipe: dict):
    """Reword an OptionError about a value that the recipe file at `path` set, to name the file and its line."""
    try:
        yield
    except OptionError as err:
        name = err.option.removeprefix("--").replace("-", "_")
        if name not in recipe:
            raise
        raise FastsegError(f"Recipe {path} sets {recipe[name][0]} = {recipe[name][1]!r}, which fit refuses: "
                           f"{err}") from None


def recipe_options(path: Path, options: dict, ctx: typer.Context) -> dict:
    """The options a recipe file sets, as {option: (key, value)} with keys named as fit's options (with - or
    _), except those given on the command line, which win.

    Raises:
        FastsegError: the file is missing, is not TOML, or names an option fit does not have.
    """
    import tomllib

    try:
        recipe = tomllib.loads(path.read_text())
    except OSError as err:
        raise FastsegError(f"Recipe {path} could not be read ({err.strerror or type(err).__name__}); pass a TOML "
                           "file such as recipes/segnet-voc.toml.") from None
    except tomllib.TOMLDecodeError as err:
        raise FastsegError(f"Recipe {path} is not valid TOML ({err}); fix it and run again.") from None
    chosen = {}
    for key, value in recipe.items():
        name = key.replace("-", "_")
        if name not in options:
            raise FastsegError(f"Recipe {path} sets '{key}', which is not an option of fit; see `fastseg fit --help`.")
        if _given(ctx, name):
            continue
        chosen[name] = _recipe_value(path, key, value, recipe_choices(name))
    return chosen


RECIPE_CHOICES = {"opt": Opt, "sched": Sched, "augment": Preset, "amp": Amp, "log": Log}
"""The options of fit whose recipe value must be one of the command line's choices, besides --arch (the
splits are checked by DataConfig, against the dataset's kind)."""


def recipe_choices(name: str) -> list[str] | None:
    """The words option `name` accepts (None: any value of its type)."""
    if name == "arch":
        from fastseg.models import cli_archs
        return cli_archs()
    return [c.value for c in RECIPE_CHOICES[name]] if name in RECIPE_CHOICES else None


def _recipe_value(path: Path, key: str, value, choices):
    """(key, value) as the recipe file wrote them, once the value is among its option's choices (its type
    is checked with every other option's, when the config is built).

    Raises:
        FastsegError: the value is not one of the option's choices.
    """
    if choices is not None and value not in choices:
        names = ", ".join(choices)
        raise FastsegError(f"Recipe {path} sets {key} = {value!r}, which fit refuses; choose one of: {names}.")
    return key, value


def _lr(text: str) -> float | str:
    if text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise FastsegError(f"--lr {text} is not a number; pass e.g. 5e-3 or 'auto'.") from None


def _summarise_fit(run_dir: Path, rows: list[dict]) -> None:
    from fastseg.io.runs import BEST
    from fastseg.io.serialize import read_meta
    if rows and (run_dir / BEST).is_file():
        meta = read_meta(run_dir / BEST)
        monitor, m = meta.get("monitor", "miou"), meta["metrics"]
        log(f"Best {monitor} at epoch {meta['epoch']} (mIoU {m['miou']:.4f}, pixel acc {m['pixel_acc']:.4f}): "
            f"{run_dir / BEST}.")
    log(f"Run folder: {run_dir}")


@app.command(epilog="Example: fastseg export runs/segnet-voc --format folder --out exports/segnet-voc --onnx")
@friendly
def export(weights: Annotated[Path, typer.Argument(help="A .safetensors file written by fastseg (onnx), or a "
                                                       "run folder (folder).")],
           format: Annotated[str, typer.Option("--format", help="onnx (one file) or folder (model.safetensors, "
                                               "config.json and a README.md model card).")] = "onnx",
           out: Annotated[Path | None, typer.Option(help="Output file or folder (default: beside the weights; "
                                                         "required for folder).")] = None,
           onnx: Annotated[bool, typer.Option("--onnx", help="With --format folder: also model.onnx (normalisation "
                                              "inside) and parity.json against PyTorch.")] = False,
           opset: Annotated[int, typer.Option(help="ONNX opset (at least 11).")] = 17,
           probs: Annotated[bool, typer.Option("--probs", help="A second ONNX output, \"probabilities\": softmax of "
                                               "the logits at the calibrated temperature (evaluate --calibrate).")]
           = False):
    """Export weights to ONNX with dynamic batch, height and width, or a run as a self-describing model folder."""
    from fastseg.evaluate.export import export_folder, export_onnx
    if format == "folder":
        if out is None:
            raise FastsegError("--format folder needs --out DIR, the folder to write the model into.")
        log(f"Wrote {export_folder(weights, out, onnx, opset, probs)}")
        return
    if format != "onnx":
        raise FastsegError(f"--format {format} is not supported; use onnx or folder.")
    path = export_onnx(weights, out or weights.with_suffix(".onnx"), opset=opset, probabilities=probs)
    log(f"Wrote {path}")


@app.command(epilog="Example: fastseg evaluate runs/segnet-voc --split seg11valid --tta flip")
@friendly
def evaluate(source: Annotated[Path | None, typer.Argument(help="Run folder or .safetensors (or latest).")] = None,
             split: Annotated[str | None, typer.Option("--split", help="Split (default: the run's): "
                                                       f"{', '.join(EVAL_SPLITS + TRAIN_SPLITS)}, or "
                                                       f"{'/'.join(FOLDER_SPLITS)} of a --data folder.")] = None,
             tta: Annotated[str, typer.Option(help="Test-time augmentation: none or flip.")] = "none",
             tta_scales: Annotated[str, typer.Option(help="Comma-separated scales, e.g. 0.75,1,1.25.")] = "1",
             voc: Annotated[Path | None, typer.Option("--voc", help="VOC2012 folder (default: the run's).")] = None,
             sbd: SbdOpt = None, voc11: Voc11Opt = None,
             data: Annotated[Path | None, typer.Option("--data", help="A folder dataset (default: the run's).")] = None,
             classes: ClassesOpt = None,
             bs: Annotated[int | None, typer.Option("--bs", help="Batch size (default: the run's).")] = None,
             runs_dir: RunsOpt = RUNS, device: DeviceOpt = None, skip_bad: SkipBadOpt = False,
             mc: McOpt = 0,
             calibrate: Annotated[bool, typer.Option("--calibrate", help="Fit a softmax temperature on this split, "
                                                     "save it in the weights' metadata (predict --probs and export "
                                                     "use it) and report NLL and ECE before and after.")] = False,
             nproc: NprocOpt = 1, nnodes: NnodesOpt = 1, rdzv_endpoint: EndpointOpt = None):
    """Score at native resolution: per-class table, mIoU with a bootstrap 95 % interval, calibration (ECE, NLL,
    entropy AUROC), metrics.json, figures."""
    from fastseg.evaluate.scoring import evaluate_run
    from fastseg.io.runs import latest_run
    if tta not in ("none", "flip"):
        raise FastsegError(f"--tta {tta} is not known; use none or flip.")
    scales = _scales(tta_scales)
    source = source or latest_run(runs_dir)
    if not source.exists():
        raise FastsegError(f"{source} does not exist; pass a run folder or a .safetensors file written by fastseg.")
    roots = given_roots(voc, sbd, voc11, data, classes)
    func = functools.partial(evaluate_run, source, split, device, bs, tta == "flip", scales, roots, skip_bad, mc,
                             calibrate)
    path, metrics = run_processes(func, nproc, nnodes, rdzv_endpoint, device)
    _print_metrics(metrics)  # rank 0 only under torchrun
    log(f"Wrote {path} and figures beside it.")


def given_roots(voc, sbd, voc11, data, classes) -> DataRoots | None:
    """The data a user named on evaluate's or report's command line (None: the run's own)."""
    if voc and data:
        raise FastsegError("Pass --voc DIR (a VOC-layout dataset) or --data DIR (a folder dataset), not both.")
    if not (voc or data or sbd or voc11 or classes):
        return None
    return DataRoots(voc, sbd, voc11, data, classes)


def _scales(text: str) -> tuple[float, ...]:
    try:
        scales = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise FastsegError(f"--tta-scales {text} is not a comma-separated list of numbers, e.g. 0.75,1,1.25.") from None
    if any(s <= 0 for s in scales):
        raise FastsegError(f"--tta-scales {text} must be positive numbers.")
    return scales


def _print_metrics(m: dict) -> None:
    from fastseg.devices.distributed import is_main
    if not is_main():
        return
    table = Table(title=f"{m['split']} ({m['images']} images)")
    for column in ("class", "IoU", "accuracy"):
        table.add_column(column, justify="left" if column == "class" else "right")
    for name, row in m["per_class"].items():
        table.add_row(name, *(f"{row[k]:.4f}" if row[k] == row[k] else "n/a" for k in ("iou", "acc")))
    console.print(table)
    lo, hi = m["miou_ci95"]
    log(f"mIoU {m['miou']:.4f} (95% CI {lo:.4f}-{hi:.4f}), foreground mIoU {m['fg_miou']:.4f} "
        f"({m['fg_miou_note']}), pixel acc {m['pixel_acc']:.4f}, mean acc {m['mean_acc']:.4f}")
    if "tta_gain" in m:
        log(f"TTA gain: {m['tta_gain']:+.4f} mIoU over {m['miou_without_tta']:.4f} without TTA")


@app.command(epilog="Example: fastseg predict photos/ --weights runs/segnet-voc --out masks")
@friendly
def predict(inputs: Annotated[list[Path], typer.Argument(help="Image files or folders.")],
            weights: Annotated[Path, typer.Option(help="A .safetensors file (or run folder) written by fastseg.")],
            out: Annotated[Path, typer.Option(help="Folder for masks and overlays.")] = Path("predictions"),
            tile: Annotated[int, typer.Option(help="Images with a longer side above this are tiled.")] = DEFAULT_TILE,
            overlap: Annotated[int, typer.Option(help="Overlap between tiles in pixels.")] = DEFAULT_OVERLAP,
            mc: McOpt = 0,
            probs: Annotated[bool, typer.Option("--probs", help="Also per image: NAME_uncertainty.safetensors "
                                                "(confidence, entropy, and with --mc the sampled variance) and "
                                                "NAME_uncertainty.png to look at.")] = False,
            device: DeviceOpt = None):
    """Palette PNG masks (the model's class colours) at each image's size, plus overlays; large images by
    sliding window; with --probs, confidence and entropy maps."""
    from fastseg.devices.select import pick_device
    from fastseg.evaluate.predict import Uncertainty, predict_files
    from fastseg.models.weights import load_model, model_classes, weights_file
    if tile < MIN_SIZE or not 0 <= overlap < tile:
        raise FastsegError(f"--tile {tile} must be at least {MIN_SIZE} and --overlap {overlap} between 0 and "
                           "the tile size.")
    device = pick_device(device)
    model, meta = load_model(weights_file(weights), device)
    report = predict_files(model, inputs, out, device, tile, overlap, model_classes(meta).palette(),
                           Uncertainty(mc, probs, meta.get("temperature", 1.0)))
    log(f"Wrote {len(report.written)} mask(s) and overlay(s) to {out}.")
    for path, reason in report.failed:
        log(f"Could not read {path} ({reason}); skipped.")
    if report.failed:
        raise typer.Exit(1)


@app.command(epilog="Example: fastseg bench --out BENCHMARKS.md")
@friendly
def bench(out: Annotated[Path | None, typer.Option(help="Markdown file to append the results to.")] = None,
          size: Annotated[int, typer.Option(help="Model input side in pixels.")] = BENCH["arch_size"],
          batch: Annotated[int | None, typer.Option(help=_per_device("Model batch size", 0))] = None,
          width: Annotated[float, typer.Option(help="Model width multiplier.")] = BENCH["width"],
          steps: Annotated[int | None, typer.Option(help=_per_device("Timed steps per model", 1))] = None,
          images: Annotated[int, typer.Option(help="Images for the data pipeline benchmark.")] = BENCH["images"],
          compile: Annotated[bool, typer.Option("--compile/--no-compile", help="The torch.compile precision row "
                             "(CUDA only).")] = BENCH["compile"],
          device: DeviceOpt = None):
    """Data pipeline vs JPEG decode, and training images/s and GFLOPs per image for each arch."""
    import sys

    from fastseg.tools.bench import run_bench
    command = "fastseg bench " + " ".join(sys.argv[2:])
    cfg = BenchConfig(arch_size=size, batch=batch, width=width, steps=steps, images=images, compile=compile,
                      device=device)
    section = run_bench(cfg, out, command.strip())
    console.print(section, markup=False, soft_wrap=True)


@app.command(epilog="Example: fastseg doctor --out BENCHMARKS.md")
@friendly
def doctor(size: Annotated[int | None, typer.Option(help="Input side (default: 320 on CUDA, 64 on CPU).")] = None,
           width: Annotated[float | None, typer.Option(help="SegNet width (default: 1.0 on CUDA, 0.125 on CPU).")]
           = None,
           batch: Annotated[int | None, typer.Option(help="Batch size (default: 16 on CUDA, 2 on CPU).")] = None,
           steps: Annotated[int | None, typer.Option(help="Timed steps per mode (default: 10 on CUDA, 2 on CPU).")]
           = None,
           compile: Annotated[bool | None, typer.Option("--compile/--no-compile", help="Run the torch.compile "
                              "row (default: on CUDA only; CPU compilation takes minutes).")] = None,
           matmul: Annotated[int | None, typer.Option(help="Side of the peak-measuring matmul (default: 8192 on "
                             "CUDA, 1024 on CPU).")] = None,
           out: Annotated[Path | None, typer.Option(help="Markdown file to append the table to.")] = None,
           device: DeviceOpt = None):
    """Train-step check per precision mode (fp32, bf16, channels_last, compile): agreement with fp32,
    img/s, peak memory, TFLOP/s and MFU against this device's measured matmul peak; exit 1 on a mismatch."""
    import sys

    from fastseg.tools.doctor import COLUMNS, DoctorConfig, markdown, run_doctor, table_rows
    for name, value in (("--size", size), ("--batch", batch), ("--steps", steps), ("--matmul", matmul)):
        if value is not None and value < 1:
            raise FastsegError(f"{name} {value} must be at least 1.")
    if size is not None and size < MIN_SIZE:
        raise FastsegError(f"--size {size} is too small; use at least {MIN_SIZE} pixels.")
    result = run_doctor(DoctorConfig(size=size, width=width, batch=batch, steps=steps, compile=compile,
                                     matmul=matmul, device=device))
    table = Table(title=f"fastseg doctor on {result['device']}")
    for column in COLUMNS:
        table.add_column(column, justify="left" if column in ("mode", "check") else "right")
    for row in table_rows(result):
        table.add_row(*row)
    console.print(table)
    peaks = result["peaks"]
    log(f"Measured peaks: fp32 {peaks['fp32']:.3f} TFLOP/s, bf16 {peaks['bf16']:.3f} TFLOP/s; "
        f"{result['train_gflops_per_image']:.2f} GFLOP per image per training step.")
    if out is not None:
        from fastseg.io.atomic import atomic_write
        head = out.read_text() if out.is_file() else "# Benchmarks\n"
        section = markdown(result, "fastseg " + " ".join(sys.argv[1:]))
        atomic_write(out, lambda tmp: tmp.write_text(head.rstrip() + "\n\n" + section))
    if not all(r.get("ok", True) for r in result["rows"]):
        log("A precision mode disagrees with fp32 (see the check column).")
        raise typer.Exit(1)


@app.command(epilog="Example: fastseg demo --out demo --seeds 0,1,2,3,4 --threads 2")
@friendly
def demo(out: Annotated[Path, typer.Option(help="Folder for the synthetic data, runs and summary.")] = Path("demo"),
         epochs: Annotated[int | None, typer.Option(help="Override the demo's epochs.")] = None,
         seed: Annotated[int | None, typer.Option(help="Training seed (default: the demo's).")] = None,
         seeds: Annotated[str | None, typer.Option(help="Comma-separated seeds: run the demo once per seed "
                                                         "and print a table (e.g. 0,1,2,3,4).")] = None,
         threads: Annotated[int | None, typer.Option(help="CPU threads for torch (default: torch's).")] = None,
         dropout: Annotated[float | None, typer.Option(help="Bayesian SegNet's dropout (default: none); the "
                                                       "evaluation then averages 8 Monte Carlo samples.")] = None):
    """Synthetic data → find-lr → fit a reduced-width SegNet → evaluate, against a colour-only control."""
    from dataclasses import replace

    from fastseg.tools.demo import DemoConfig, run_demo, run_sweep, torch_threads
    cfg = DemoConfig()
    cfg = replace(cfg, epochs=cfg.epochs if epochs is None else epochs, seed=cfg.seed if seed is None else seed,
                  dropout=cfg.dropout if dropout is None else dropout)
    if cfg.epochs < 1:
        raise FastsegError(f"--epochs {cfg.epochs} must be at least 1.")
    if threads is not None and threads < 1:
        raise FastsegError(f"--threads {threads} must be at least 1.")
    if seeds is not None:
        sweep = run_sweep(out, cfg, _seed_list(seeds), threads)
        _print_sweep(sweep)
        log(f"Sweep written to {out / 'demo_sweep.json'}")
        return
    with torch_threads(threads):
        summary = run_demo(out, cfg)
    log(f"SegNet (width {cfg.width}) mIoU {summary['segnet_miou']:.3f} "
        f"(untrained {summary['untrained_miou']:.3f}); colour-only control {summary['colour_control_miou']:.3f}; "
        f"gap {summary['gap_over_control']:+.3f}.")
    log(f"Run folder: {summary['run']}  (summary in {out / 'demo_summary.json'})")


def _seed_list(text: str) -> list[int]:
    try:
        seeds = [int(v) for v in text.split(",")]
    except ValueError:
        raise FastsegError(f"--seeds {text} is not a comma-separated list of integers, e.g. 0,1,2,3,4.") from None
    if len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise FastsegError(f"--seeds {text} must list distinct non-negative integers.")
    return seeds


def _print_sweep(sweep: dict) -> None:
    table = Table(title="Demo sweep (validation mIoU)")
    for column in ("seed", "threads", "SegNet", "colour control", "untrained", "seconds"):
        table.add_column(column, justify="right")
    for r in sweep["rows"]:
        table.add_row(str(r["seed"]), str(r["threads"]), f"{r['segnet_miou']:.3f}", f"{r['colour_control_miou']:.3f}",
                      f"{r['untrained_miou']:.3f}", f"{r['seconds']:.0f}")
    console.print(table)
    log(f"SegNet median {sweep['segnet_median']:.3f}, minimum {sweep['segnet_min']:.3f}; "
        f"colour control at most {sweep['control_max']:.3f}.")


@app.command(epilog="Example: fastseg evaluate runs/a; fastseg evaluate runs/b; fastseg compare runs/a runs/b")
@friendly
def compare(runs: Annotated[list[Path], typer.Argument(help="Run folders evaluated on one split; the first is "
                                                            "the baseline.")],
            out: Annotated[Path, typer.Option(help="Folder for compare.md, compare.png and compare.json.")]
            = Path("compare"),
            samples: Annotated[int, typer.Option(help="Paired bootstrap resamples.")] = 1000):
    """Side-by-side metrics and per-class IoU, and a paired bootstrap over the validation images saying
    whether each run's mIoU difference to the first is beyond noise."""
    from fastseg.evaluate.compare import compare_runs
    if samples < 100:
        raise FastsegError(f"--samples {samples} is too few for a 95 % interval; use at least 100.")
    result = compare_runs(runs, out, samples)
    names = result["names"]
    table = Table(title=f"{result['split']} ({result['images']} images)")
    for column in ("metric", *names):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for row in result["table"]:
        first, *rest = row["values"]
        table.add_row(row["metric"], f"{first:.4f}", *(f"{v:.4f} ({v - first:+.4f})" for v in rest))
    console.print(table)
    for test in result["tests"]:
        log(test["verdict"])
    log(f"Wrote {out / 'compare.md'}, {out / 'compare.png'} and {out / 'compare.json'}.")


@app.command("runs", epilog="Example: fastseg runs --runs-dir runs --json")
@friendly
def runs_cmd(runs_dir: RunsOpt = RUNS,
             as_json: Annotated[bool, typer.Option("--json", help="Print the rows as JSON for scripts.")] = False):
    """Every run folder in --runs-dir, oldest first: arch, data, epochs, best metric, state, time, size."""
    import json

    from fastseg.io.runs import format_bytes, format_seconds, list_runs
    rows = list_runs(runs_dir)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title=f"Runs in {runs_dir}")
    for column in ("run", "arch", "width", "train / valid", "epochs", "best (metric, epoch)", "state", "time", "size"):
        table.add_column(column, justify="right" if column in ("width", "epochs", "time", "size") else "left")
    for r in rows:
        best = f"{r['best']:.4f} {r['monitor']} @{r['best_epoch']}" if "best" in r else "–"
        epochs = f"{r['epochs_done']}/{r['epochs']}" if "epochs" in r else "–"
        state = r["state"] + (f" ({r['reason']})" if "reason" in r else "")
        table.add_row(r["name"], r.get("arch", "–"), str(r.get("width", "–")), r.get("splits", "–"), epochs, best,
                      state, format_seconds(r.get("seconds", 0)), format_bytes(r["bytes"]))
    console.print(table)


@app.command(epilog="Example: fastseg report runs/segnet-voc")
@friendly
def report(run: Annotated[Path | None, typer.Argument(help="Run folder (default: latest run).")] = None,
           runs_dir: RunsOpt = RUNS,
           voc: Annotated[Path | None, typer.Option("--voc", help="VOC2012 folder (default: the run's).")] = None,
           sbd: SbdOpt = None, voc11: Voc11Opt = None,
           data: Annotated[Path | None, typer.Option("--data", help="A folder dataset (default: the run's).")] = None):
    """Write report.md and a self-contained report.html (the run card) from a run's files."""
    from fastseg.evaluate.report import write_report
    from fastseg.evaluate.scoring import data_roots
    from fastseg.io.runs import CONFIG, latest_run, load_config
    run = run or latest_run(runs_dir, "metrics.json")
    roots, given = None, given_roots(voc, sbd, voc11, data, None)
    if given and (run / CONFIG).is_file():
        roots = data_roots(load_config(run / CONFIG), given)
    md, page = write_report(run, roots)
    log(f"Wrote {md} and {page}")
