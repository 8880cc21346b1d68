"""`fastseg find-lr` and `fit`."""

import functools
from pathlib import Path
from typing import Annotated

import typer

from fastseg.cli import app
from fastseg.cli.common import (
    DATA,
    FIT,
    MODEL_PANEL,
    OPT_PANEL,
    RUN_PANEL,
    RUNS,
    SPEED_PANEL,
    ArchOpt,
    AugOpt,
    BsOpt,
    CacheOpt,
    ClassesOpt,
    CropOpt,
    DataOpt,
    DeviceOpt,
    EndpointOpt,
    NameOpt,
    NnodesOpt,
    NprocOpt,
    OptOpt,
    PretrainedOpt,
    RunsOpt,
    SbdOpt,
    SeedOpt,
    SkipBadOpt,
    TrainOpt,
    ValidOpt,
    Voc11Opt,
    VocOpt,
    WdOpt,
    WidthOpt,
    WorkersOpt,
    friendly,
    run_processes,
)
from fastseg.config import (
    DATA_OPTIONS,
    Amp,
    FitConfig,
    Log,
    Sched,
    fit_config,
    plain,
)
from fastseg.console import log
from fastseg.errors import FastsegError


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
    given = {name: value for name, value in options.items() if _given(ctx, name)}
    if resume is not None:
        func, device = functools.partial(resume_fit, resume, **config_fields(given)), options["device"]
    else:
        cfg = new_run_config(config, options, given)
        func, device = functools.partial(run_fit, cfg), cfg.device
    run_dir, rows = run_processes(func, device=device, **launch)
    _summarise_fit(run_dir, rows)


def new_run_config(recipe: Path | None, options: dict, given: dict) -> FitConfig:
    """The FitConfig of a new run: the recipe file's, with the options typed on the command line (`given`)
    winning, or else the options (defaults included) alone."""
    if recipe is not None:
        return FitConfig.from_recipe(recipe, **given | ({"lr": _lr(str(given["lr"]))} if "lr" in given else {}))
    if options["voc"] is None and options["data"] is None:
        raise FastsegError("fit needs --voc DIR or --data DIR (or --resume RUN_DIR); run `fastseg synth` for a "
                           "dataset.")
    epochs = FIT["epochs"] if options["epochs"] is None else options["epochs"]  # 0 is refused, not the default
    return fit_config(**options | {"epochs": epochs, "lr": _lr(str(options["lr"]))})


def _given(ctx: typer.Context, name: str) -> bool:
    """Whether the option `name` was typed on the command line (not a default or a recipe's value)."""
    return ctx.get_parameter_source(name).name == "COMMANDLINE"  # typer vendors its own click


def config_fields(options: dict) -> dict:
    """find-lr's and fit's options (named as their parameters) as config fields with the configs' values."""
    fields = {DATA_OPTIONS.get(name, name): plain(value) for name, value in options.items()}
    if isinstance(fields.get("lr"), str):
        fields["lr"] = _lr(fields["lr"])
    return fields


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

