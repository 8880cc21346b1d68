"""What the command modules share: the error handling every command runs under (`friendly`), the
launcher of --nproc processes, the options several commands take (--arch's from the model
registry), and the data a user names. Only typer, rich and fastseg's torch-free modules are imported
here."""

import contextlib
import functools
import sys
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Annotated

import typer
from typer.models import OptionInfo

from fastseg.config import (
    DEVICE_DEFAULTS,
    EVAL_SPLITS,
    FOLDER_SPLITS,
    RUNS_DIR,
    TRAIN_SPLITS,
    BenchConfig,
    DataConfig,
    FitConfig,
    Opt,
    Preset,
    SynthConfig,
)
from fastseg.data.splits import DataRoots
from fastseg.errors import EXIT_INTERRUPTED, FastsegError, Interrupted, io_error


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


def arch_option() -> RegistryOption:
    """typer's --arch option, checked (`check_arch`) and described (`arch_help`) by the registry."""
    option = typer.Option("--arch", callback=check_arch, rich_help_panel=MODEL_PANEL)
    option.__class__ = RegistryOption
    return option


def _defaults(cls) -> dict:
    """A dataclass's field defaults by name: the CLI's defaults come from the configs themselves."""
    return {f.name: f.default for f in fields(cls) if f.default is not MISSING}


FIT, DATA, SYNTH, BENCH = (_defaults(c) for c in (FitConfig, DataConfig, SynthConfig, BenchConfig))
RUNS = Path(RUNS_DIR)


def per_device(what: str, i: int) -> str:
    """Help text for a bench option whose default depends on the device (DEVICE_DEFAULTS column i)."""
    return f"{what} (default: {DEVICE_DEFAULTS['cuda'][i]} on CUDA, {DEVICE_DEFAULTS['cpu'][i]} on CPU)."


def friendly(func):
    """Turn a FastsegError, an OSError with an errno (disk full, no permission), Ctrl-C or SIGTERM into
    one sentence on stderr and the documented exit code (fastseg.errors), never a traceback. A command
    that ends well leaves the process group it joined (`leave_process_group`)."""
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            with sigterm_interrupts():
                result = func(*args, **kwargs)
            leave_process_group()
            return result
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


def leave_process_group() -> None:
    """Leave the process group the command joined (fastseg.devices.collectives), if it joined one.
    Only after a command that ended well: a CUDA group's NCCL part may wait for its peers when it is
    destroyed, and a failed process must exit at once so that the launcher stops the others."""
    collectives = sys.modules.get("fastseg.devices.collectives")
    if collectives is not None:
        collectives.leave_process_group()


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

def given_roots(voc, sbd, voc11, data, classes) -> DataRoots | None:
    """The data a user named on evaluate's or report's command line (None: the run's own)."""
    if voc and data:
        raise FastsegError("Pass --voc DIR (a VOC-layout dataset) or --data DIR (a folder dataset), not both.")
    if not (voc or data or sbd or voc11 or classes):
        return None
    return DataRoots(voc, sbd, voc11, data, classes)


