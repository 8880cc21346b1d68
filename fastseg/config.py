"""Every command's configuration, as plain dataclasses with the seeds' defaults: the run (FitConfig,
DataConfig, saved into every run folder as config.json), the synthetic dataset and the benchmark.

The choices are enums whose values are the CLI's words, and the names of the splits and the
dataset roots live here too (fastseg.data.splits builds them). Each config checks its values once,
in `__post_init__`, and raises FastsegError naming the option. This module imports no torch,
fastai or numpy, so that `fastseg --help` starts fast; it imports only constants and errors (and,
to check `--arch`, the model registry, which imports no torch either).
"""

import contextlib
import math
import re
from dataclasses import dataclass, fields, replace
from enum import Enum, StrEnum
from pathlib import Path
from types import NoneType, UnionType
from typing import get_args, get_origin

from fastseg.constants import DEFAULT_CROP, MIN_SIZE, VOC_CLASSES
from fastseg.errors import FastsegError

RUNS_DIR = "runs"  # where run folders go unless --runs-dir says otherwise

TRAIN_SPLITS = ("train-aug", "voc12-train")
EVAL_SPLITS = ("seg11valid", "voc12-val", "voc12-val-a", "voc12-val-b")
SPLITS = TRAIN_SPLITS + EVAL_SPLITS
VOC_DEFAULT_SPLITS = ("train-aug", "seg11valid")  # the SegNet seed's training and validation sets
FOLDER_SPLITS = ("train", "val")  # a folder dataset's (DIR/train.txt, DIR/val.txt, else a seeded 90/10 split)
CLASSES_FILE = "classes.txt"      # a folder dataset's class list (fastseg.classes has the format)


@dataclass(frozen=True)
class DataRoots:
    """Where the datasets live: VOC2012, SBD (for train-aug), VOC2011 (for seg11valid) and a custom
    classes file for a VOC-layout dataset; or a folder dataset (`folder`: DIR/images, DIR/masks and
    DIR/classes.txt) instead of VOC."""

    voc: Path | None
    sbd: Path | None = None
    voc11: Path | None = None
    folder: Path | None = None
    classes: Path | None = None

    @property
    def classes_file(self) -> Path | None:
        """The class list to read: the folder dataset's classes.txt, the --classes file, or None (VOC's)."""
        return self.folder / CLASSES_FILE if self.folder is not None else self.classes

    @property
    def split_names(self) -> tuple[str, ...]:
        return FOLDER_SPLITS if self.folder is not None else SPLITS

    @classmethod
    def under(cls, root: str | Path) -> "DataRoots":
        """The official layout extracted under one folder, as `fastseg download` and `fastseg synth`
        write it: VOCdevkit/VOC2012, benchmark_RELEASE/dataset and VOCdevkit/VOC2011."""
        root = Path(root)
        voc = root / "VOCdevkit"
        return cls(voc / "VOC2012", root / "benchmark_RELEASE" / "dataset", voc / "VOC2011")


class Opt(StrEnum):
    SGD = "sgd"
    ADAM = "adam"


class Sched(StrEnum):
    ONE_CYCLE = "one-cycle"
    POLY = "poly"
    FLAT = "flat"


class Amp(StrEnum):
    AUTO = "auto"
    BF16 = "bf16"
    FP16 = "fp16"
    OFF = "off"


class Log(StrEnum):
    """Where fit logs besides metrics.csv: nowhere else, or TensorBoard (fastseg.train.tensorboard)."""
    NONE = "none"
    TENSORBOARD = "tensorboard"


class Preset(StrEnum):
    """Augmentation presets (fastseg.data.transforms.build_augmentation)."""
    LIGHT = "light"
    HEAVY = "heavy"
    NONE = "none"


OPTIMIZERS = tuple(Opt)
PRESETS = tuple(Preset)


MONITORS = ("miou", "fg_miou", "pixel_acc")
"""`fit --monitor` choices besides iou:CLASS: validation metrics (higher is better)."""


def monitor_key(monitor: str) -> str | None:
    """The metrics.csv column a --monitor value names ("iou:cat" -> "iou_cat"), or None when it is
    neither one of MONITORS nor iou:CLASS (which class names exist, `check_monitor` checks)."""
    if monitor in MONITORS:
        return monitor
    kind, _, name = monitor.partition(":")
    return f"iou_{name}" if kind == "iou" and name else None


def check_monitor(monitor: str, classes: tuple[str, ...] = VOC_CLASSES) -> None:
    """Raises FastsegError unless `monitor` is one of MONITORS or iou:CLASS of the dataset's `classes`."""
    key = monitor_key(monitor)
    if key is None or (key not in MONITORS and key.removeprefix("iou_") not in classes):
        raise FastsegError(f"Unknown --monitor '{monitor}'; choose one of: {', '.join(MONITORS)} or iou:CLASS "
                           f"with CLASS one of {', '.join(classes)}.")


def _set_choice(cfg, name: str, choices: type[StrEnum], option: str) -> None:
    """Replace cfg.name (a string) by its enum member, or raise naming `option` and the choices."""
    value = getattr(cfg, name)
    try:
        member = choices(value)
    except ValueError:
        names = ", ".join(c.value for c in choices)
        raise FastsegError(f"Unknown {option} '{value}'; choose one of: {names}.") from None
    object.__setattr__(cfg, name, member)  # also on frozen dataclasses


OPTION_NAMES = {"num_workers": "--workers", "train_split": "--train", "valid_split": "--valid", "val_bs": "--bs",
                "arch_size": "--size"}
"""Config fields whose command-line option is not --<field with - for _>."""

KIND_WORDS = {bool: "true or false", int: "a whole number", float: "a number", str: "text", list: "a list of numbers"}
INTEGER = re.compile(r"[+-]?[0-9]+")


def option_name(field: str) -> str:
    """The command-line option of a config field: num_workers -> --workers, lr_min -> --lr-min."""
    return OPTION_NAMES.get(field, "--" + field.replace("_", "-"))


def _kinds(annotation) -> tuple:
    """The plain types a field annotation allows: `int | None` -> (int, NoneType); enums count as str."""
    kinds = get_args(annotation) if isinstance(annotation, UnionType) else (annotation,)
    return tuple(str if isinstance(k, type) and issubclass(k, StrEnum) else get_origin(k) or k for k in kinds)


def _as_kind(value, kind):
    """`value` as `kind`, exactly (ints as ints or their digits, numbers as floats), else None."""
    if kind is bool or isinstance(value, bool):
        return value if kind is bool and isinstance(value, bool) else None
    if kind is int:
        return value if isinstance(value, int) else int(value) if isinstance(value, str) and \
            INTEGER.fullmatch(value.strip()) else None
    if kind is float and isinstance(value, int | float):
        return float(value)
    if kind is float and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    if kind is list and isinstance(value, list | tuple) and all(_as_kind(v, float) is not None for v in value):
        return [float(v) for v in value]
    return value if kind is str and isinstance(value, str) else None


def typed(field: str, value, annotation):
    """`value` in the type `annotation` allows (see `_as_kind`), or FastsegError naming the option.

    A float must be finite; None only where the annotation allows it (the option's "not given").
    """
    kinds = _kinds(annotation)
    if value is None and NoneType in kinds:
        return None
    for kind in (k for k in kinds if k is not NoneType):
        converted = _as_kind(value, kind)
        if converted is not None:
            if isinstance(converted, float) and not math.isfinite(converted):
                raise OptionError(option_name(field), f"{option_name(field)} {value} must be a finite number.")
            return converted
    words = " or ".join(KIND_WORDS.get(k, k.__name__) for k in kinds if k is not NoneType)
    raise OptionError(option_name(field), f"{option_name(field)} must be {words}.")


def _check_types(cfg, skip: tuple[str, ...] = ()) -> None:
    """Replace every field of a config dataclass by `typed`'s value (raises naming the first wrong one)."""
    for f in fields(cfg):
        if f.name not in skip:
            object.__setattr__(cfg, f.name, typed(f.name, getattr(cfg, f.name), f.type))


class OptionError(FastsegError):
    """A value an option refuses; `option` names it as the command line does (e.g. "--epochs"), so that a
    caller can say where the value came from (a recipe file's key)."""

    def __init__(self, option: str, message: str):
        super().__init__(message)
        self.option = option


def _check(checks: list[tuple[bool, str]]) -> None:
    """Raise the message of the first failed (ok, message) check: an OptionError when it begins with
    the option's name, else a FastsegError."""
    for ok, message in checks:
        if not ok:
            option = message.split()[0]
            raise OptionError(option, message) if option.startswith("--") else FastsegError(message)


@dataclass(frozen=True)
class DataConfig:
    """What to load and how; saved into every run directory."""

    voc: str | None = None           # VOC2012 folder, or
    data: str | None = None          # a folder dataset (DIR/images, DIR/masks, DIR/classes.txt)
    sbd: str | None = None
    voc11: str | None = None
    classes: str | None = None       # a classes file for a VOC-layout dataset; None: VOC's 21 classes
    train_split: str | None = None   # None: train-aug (the SegNet seed's), or train for a folder dataset
    valid_split: str | None = None   # None: seg11valid (the SegNet seed's), or val for a folder dataset
    crop: int = DEFAULT_CROP
    augment: Preset = Preset.LIGHT
    bs: int = 32
    val_bs: int | None = None        # None: same as bs
    num_workers: int | None = None   # loader processes; None: min(8, CPUs) on CUDA, else 0
    cache: bool = False              # keep decoded images and masks in memory after their first read
    skip_bad: bool = False           # leave out samples whose files fail the preflight (with a warning)

    def __post_init__(self) -> None:
        """Raises FastsegError naming the first option of the wrong type or out of range."""
        _check_types(self)
        _set_choice(self, "augment", Preset, "--augment")
        self._check_source()
        defaults = FOLDER_SPLITS if self.data else VOC_DEFAULT_SPLITS
        object.__setattr__(self, "train_split", self.train_split or defaults[0])
        object.__setattr__(self, "valid_split", self.valid_split or defaults[1])
        names = self.roots.split_names
        _check([(split in names, f"Unknown split '{split}'; choose one of: {', '.join(names)}.")
                for split in (self.train_split, self.valid_split)] + [
            (self.crop >= MIN_SIZE, f"--crop {self.crop} is too small; use at least {MIN_SIZE} pixels."),
            (self.bs >= 1, f"--bs {self.bs} must be at least 1."),
            (self.val_bs is None or self.val_bs >= 1, f"--bs {self.val_bs} must be at least 1."),
            (self.num_workers is None or self.num_workers >= 0,
             f"--workers {self.num_workers} must be 0 (load in the main process) or more.")])

    def _check_source(self) -> None:
        """Exactly one dataset: --voc (with SBD, VOC2011 and a classes file as it needs) or --data."""
        _check([(bool(self.voc) != bool(self.data), "Pass --voc DIR (a VOC-layout dataset) or --data DIR (a folder "
                 "dataset with images/, masks/ and classes.txt), not both." if self.voc else
                 "Pass --voc DIR (a VOC-layout dataset) or --data DIR (a folder dataset with images/, masks/ and "
                 "classes.txt); run `fastseg synth` for one."),
                (not (self.data and (self.sbd or self.voc11 or self.classes)),
                 f"--sbd, --voc11 and --classes are for --voc; a folder dataset reads DIR/{CLASSES_FILE}.")])

    @property
    def roots(self) -> DataRoots:
        def path(value: str | None) -> Path | None:
            return Path(value) if value else None
        return DataRoots(path(self.voc), path(self.sbd), path(self.voc11), path(self.data), path(self.classes))


@dataclass
class FitConfig:
    """Everything needed to repeat a run."""

    data: DataConfig
    arch: str = "segnet"             # a name in the model registry (fastseg.models.ARCHS)
    width: float = 1.0               # channel multiplier; 1.0 is the faithful model
    dropout: float = 0.0             # Bayesian SegNet's central dropout (the paper's 0.5); 0: none
    pretrained: str = "imagenet"     # the seed's ImageNet VGG16-BN encoder
    epochs: int = 127                # the SegNet seed's schedule
    lr: float | str = 5e-3           # the seed's SGD learning rate; "auto" = the lr_find valley
    lr_min: float | None = None      # encoder learning rate for slice(lr_min, lr); None: one lr
    opt: Opt = Opt.SGD               # the seed's SGD with momentum
    mom: float = 0.9                 # SGD momentum (Adam's beta1); one-cycle's upper momentum
    moms: list[float] | None = None  # momentum (start, middle, end); None: from mom and sched at fit
    wd: float = 5e-4                 # L2 weight decay for SGD (as torch.optim.SGD), decoupled for Adam
    sched: Sched = Sched.ONE_CYCLE
    freeze_epochs: int = 0           # epochs training the decoder alone first (pretrained encoder)
    monitor: str = "miou"            # the metric best.safetensors and --patience follow (see MONITORS)
    patience: int | None = None      # early stopping on the monitored metric; None: never stop early
    clip: float | None = None        # gradient norm clipping
    seed: int = 42
    process_seeds: list[int] | None = None  # each process's augmentation seed, seed + rank (set by fit)
    class_weights: str = "none"      # none | median-freq | path to a weights file
    l1: float = 0.0                  # L1 weight penalty (the skip-model seed used 1e-6)
    head_prior: bool = False         # head biases start at the log class shares of the training split
    amp: Amp = Amp.AUTO              # auto: bf16 on CUDA where supported, else fp16; off elsewhere
    channels_last: bool | None = None  # None: on with CUDA (config.json records what was used)
    compile: bool = False            # torch.compile the model
    deterministic: bool = False      # bit-identical resume on CUDA too (slower: no cuDNN autotuning)
    log: Log = Log.NONE              # tensorboard: also scalars and a prediction grid in <run>/tensorboard
    device: str | None = None        # None: CUDA when present
    runs_dir: str = RUNS_DIR
    name: str | None = None          # run folder name; None: <timestamp>-<arch>

    def __post_init__(self) -> None:
        if isinstance(self.data, dict):
            self.data = DataConfig(**self.data)
        _check_types(self, skip=("data",))
        for name, choices, option in (("opt", Opt, "--opt"), ("sched", Sched, "--sched"), ("amp", Amp, "--amp"),
                                      ("log", Log, "--log")):
            _set_choice(self, name, choices, option)
        from fastseg.models import ARCHS, cli_archs  # the registry imports no torch
        _check([
            (self.arch in ARCHS, f"Unknown --arch '{self.arch}'; choose one of: {', '.join(cli_archs())}."),
            (self.epochs >= 1, f"--epochs {self.epochs} must be at least 1."),
            (self.width > 0, f"--width {self.width} must be positive."),
            (0 <= self.dropout < 1, f"--dropout {self.dropout} must be at least 0 and below 1."),
            (self.lr == "auto" or (not isinstance(self.lr, str) and self.lr > 0),
             f"--lr {self.lr} must be positive (or 'auto')."),
            (self.lr_min is None or self.lr_min > 0, f"--lr-min {self.lr_min} must be positive."),
            (self.wd >= 0, f"--wd {self.wd} must be 0 or positive."),
            (0 <= self.mom < 1, f"--mom {self.mom} must be at least 0 and below 1."),
            (self.freeze_epochs >= 0, f"--freeze-epochs {self.freeze_epochs} must be 0 or more."),
            (self.patience is None or self.patience >= 1, f"--patience {self.patience} must be at least 1."),
            (monitor_key(self.monitor) is not None, f"Unknown --monitor '{self.monitor}'; choose one of: "
             f"{', '.join(MONITORS)} or iou:CLASS with CLASS one of the dataset's classes."),
            (self.clip is None or self.clip > 0, f"--clip {self.clip} must be positive."),
            (self.l1 >= 0, f"--l1 {self.l1} must be 0 or positive."),
        ])

    @classmethod
    def from_recipe(cls, path: str | Path, **overrides) -> "FitConfig":
        """The run a recipe file (TOML, keys named as fit's options with - or _, e.g. recipes/segnet-voc.toml)
        describes, with `overrides` (named as fit's options: voc, train, epochs, ...) winning over its values.

        Raises:
            FastsegError: the file cannot be read, is not TOML, names an option fit does not have, or sets
                a value fit refuses (the message names the file and the key).
        """
        recipe = {name: entry for name, entry in read_recipe(Path(path)).items() if name not in overrides}
        with recipe_blame(path, recipe):
            return fit_config(**{name: value for name, (_, value) in recipe.items()} | overrides)


@dataclass(frozen=True)
class SynthConfig:
    """Counts and sizes. Id sets mirror the real ones: SBD shares ids with VOC train and val,
    VOC2011 val is a part of VOC2012 val, and some of it is in SBD train."""

    n_train: int = 40       # VOC2012 seg train ids
    n_val: int = 24         # VOC2012 seg val ids
    n_sbd_only: int = 40    # ids annotated by SBD alone
    size: int = 112         # longest image side; the other side and this one vary, most not ×32
    band: int = 2           # width in pixels of the void (255) band along object outlines
    seed: int = 0

    def __post_init__(self) -> None:
        """Raises FastsegError when a split would be too small to split again, or the images too small."""
        if min(self.n_train, self.n_val, self.n_sbd_only) < 2 or self.size < MIN_SIZE:
            raise FastsegError(f"synth needs --n-train, --n-val and --n-sbd-only of at least 2 and --size of at "
                               f"least {MIN_SIZE}.")


DATA_OPTIONS = {"voc": "voc", "data": "data", "sbd": "sbd", "voc11": "voc11", "classes": "classes",
                "train": "train_split", "valid": "valid_split",
                "crop": "crop", "bs": "bs", "augment": "augment", "workers": "num_workers", "cache": "cache",
                "skip_bad": "skip_bad"}
"""fit's data option names (as parameters) → DataConfig field; every other option of find-lr and fit
is a FitConfig field."""

NO_OPTION = ("data", "moms", "process_seeds")
"""FitConfig fields fit has no option for (the data has its own; the rest are derived when fit starts)."""


def fit_option_names() -> set[str]:
    """Every option of fit, named as its parameter (skip_bad, lr_min, ...): what a recipe may set."""
    return set(DATA_OPTIONS) | {f.name for f in fields(FitConfig)} - set(NO_OPTION)


def plain(value):
    """An option's value as the configs store it: paths as strings, enum members as their values."""
    if isinstance(value, Path):
        return str(value)
    return value.value if isinstance(value, Enum) else value


def fit_config(**options) -> FitConfig:
    """The FitConfig of find-lr's or fit's options (named as in DATA_OPTIONS, then FitConfig's fields)."""
    data = DataConfig(**{field: plain(options.pop(name)) for name, field in DATA_OPTIONS.items() if name in options})
    return FitConfig(data=data, **{k: plain(v) for k, v in options.items()})


RECIPE_CHOICES = {"opt": Opt, "sched": Sched, "augment": Preset, "amp": Amp, "log": Log}
"""The options of fit whose recipe value must be one of the command line's choices, besides --arch (the
splits are checked by DataConfig, against the dataset's kind)."""


def recipe_choices(name: str) -> list[str] | None:
    """The words option `name` accepts (None: any value of its type)."""
    if name == "arch":
        from fastseg.models import cli_archs
        return cli_archs()
    return [c.value for c in RECIPE_CHOICES[name]] if name in RECIPE_CHOICES else None


def read_recipe(path: Path) -> dict[str, tuple[str, object]]:
    """The options a recipe file sets, as {option: (key, value)} with the keys as the file writes them
    (with - or _) and each value among its option's choices (types are checked when the config is built).

    Raises:
        FastsegError: the file is missing, is not TOML, names an option fit does not have, or sets a
            value that is not one of its option's choices.
    """
    import tomllib

    try:
        recipe = tomllib.loads(path.read_text())
    except OSError as err:
        raise FastsegError(f"Recipe {path} could not be read ({err.strerror or type(err).__name__}); pass a TOML "
                           "file such as recipes/segnet-voc.toml.") from None
    except tomllib.TOMLDecodeError as err:
        raise FastsegError(f"Recipe {path} is not valid TOML ({err}); fix it and run again.") from None
    chosen, options = {}, fit_option_names()
    for key, value in recipe.items():
        name = key.replace("-", "_")
        if name not in options:
            raise FastsegError(f"Recipe {path} sets '{key}', which is not an option of fit; see `fastseg fit --help`.")
        choices = recipe_choices(name)
        if choices is not None and value not in choices:
            raise FastsegError(f"Recipe {path} sets {key} = {value!r}, which fit refuses; choose one of: "
                               f"{', '.join(choices)}.")
        chosen[name] = (key, value)
    return chosen


@contextlib.contextmanager
def recipe_blame(path: Path | None, recipe: dict):
    """Reword an OptionError about a value that the recipe file at `path` set ({option: (key, value)}), to
    name the file and its key."""
    try:
        yield
    except OptionError as err:
        name = err.option.removeprefix("--").replace("-", "_")
        if name not in recipe:
            raise
        raise FastsegError(f"Recipe {path} sets {recipe[name][0]} = {recipe[name][1]!r}, which fit refuses: "
                           f"{err}") from None


DEVICE_DEFAULTS = {"cuda": (32, 20), "cpu": (4, 2)}
"""(batch, timed steps) by device type: the issue's batch 32 on CUDA; a CPU run kept to minutes."""


@dataclass
class BenchConfig:
    """`fastseg bench`: model sizes and counts (batch and steps default by device)."""

    arch_size: int = 320
    batch: int | None = None   # None: DEVICE_DEFAULTS
    width: float = 1.0
    steps: int | None = None   # None: DEVICE_DEFAULTS
    images: int = 48
    eval_images: int = 8
    compile: bool = True       # the torch.compile precision row on CUDA (a minute of compilation per arch)
    device: str | None = None

    def __post_init__(self) -> None:
        """Raises OptionError naming the first option of the wrong type or out of range (0 is no default)."""
        _check_types(self)
        _check([(self.arch_size >= MIN_SIZE, f"--size {self.arch_size} is too small; use at least {MIN_SIZE} pixels."),
                (self.width > 0, f"--width {self.width} must be positive.")] +
               [(value is None or value >= 1, f"--{name} {value} must be at least 1.")
                for name, value in (("batch", self.batch), ("steps", self.steps), ("images", self.images))])


RESUME_CHANGES = ("epochs", "voc", "sbd", "voc11", "data", "device", "num_workers", "cache", "deterministic")
"""The options `fit --resume` applies (and records in config.json): the data's new place, a new total
of epochs, and how the run is computed where the results do not depend on it. Any other option
given with --resume must equal the run's."""


def resumed_config(cfg: FitConfig, given: dict, run: Path) -> tuple[FitConfig, dict]:
    """A run's config with the options given on resume (config field -> value) applied.

    Returns:
        (the new config, {field: (the run's value, the new value)} for each option that changed).

    Raises:
        OptionError: an option not in RESUME_CHANGES differs from the run's, or a value is refused.
    """
    data_fields = {f.name for f in fields(DataConfig)}
    changed = {}
    for field, value in given.items():
        recorded = getattr(cfg.data if field in data_fields else cfg, field)
        if value is None or value == recorded:
            continue
        option = option_name(field)
        if field not in RESUME_CHANGES:
            raise OptionError(option, f"{option} {value} cannot change when resuming {run} (it was started with "
                                      f"{recorded}); resume without {option}, or start a new run with another --name.")
        changed[field] = (recorded, value)
    data = {k: v for k, (_, v) in changed.items() if k in data_fields}
    rest = {k: v for k, (_, v) in changed.items() if k not in data_fields}
    return replace(cfg, data=replace(cfg.data, **data), **rest), changed
