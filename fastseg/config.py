"""Typed run configuration with the SegNet seed's defaults; saved into every run directory."""

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from fastseg.data.dataloaders import DataConfig
from fastseg.errors import FastsegError

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("one-cycle", "poly", "flat")
AMP_MODES = ("auto", "bf16", "fp16", "off")


@dataclass
class FitConfig:
    """Everything needed to repeat a run."""

    data: DataConfig
    arch: str = "segnet"
    width: float = 1.0               # channel multiplier; 1.0 is the faithful model
    pretrained: str = "imagenet"     # the seed's ImageNet VGG16-BN encoder
    epochs: int = 127                # the SegNet seed's schedule
    lr: float | str = 5e-3           # the seed's SGD learning rate; "auto" = the lr_find valley
    lr_min: float | None = None      # encoder learning rate for slice(lr_min, lr); None: one lr
    opt: str = "sgd"                 # the seed's SGD with momentum
    mom: float = 0.9                 # SGD momentum (Adam's beta1); one-cycle's upper momentum
    moms: list[float] | None = None  # momentum (start, middle, end); None: from mom and sched at fit
    wd: float = 5e-4                 # L2 weight decay for SGD (as torch.optim.SGD), decoupled for Adam
    sched: str = "one-cycle"
    freeze_epochs: int = 0           # epochs training the decoder alone first (pretrained encoder)
    patience: int | None = None      # early stopping on mIoU; None: never stop early
    clip: float | None = None        # gradient norm clipping
    seed: int = 42
    class_weights: str = "none"      # none | median-freq | path to a weights file
    l1: float = 0.0                  # L1 weight penalty (the skip-model seed used 1e-6)
    head_prior: bool = False         # head biases start at the log class shares of the training split
    amp: str = "auto"                # auto: bf16 on CUDA where supported, else fp16; off elsewhere
    channels_last: bool | None = None  # None: on with CUDA (config.json records what was used)
    compile: bool = False            # torch.compile the model
    device: str | None = None        # None: CUDA when present
    runs_dir: str = "runs"
    name: str | None = None          # run folder name; None: <timestamp>-<arch>
    extra: dict = field(default_factory=dict)

    def validate(self) -> None:
        from fastseg.models import BASELINES, MODELS
        checks = [
            (self.arch in MODELS | BASELINES, f"Unknown --arch '{self.arch}'; choose one of: {', '.join(MODELS)}."),
            (self.opt in OPTIMIZERS, f"Unknown --opt '{self.opt}'; choose one of: {', '.join(OPTIMIZERS)}."),
            (self.sched in SCHEDULES, f"Unknown --sched '{self.sched}'; choose one of: {', '.join(SCHEDULES)}."),
            (self.amp in AMP_MODES, f"Unknown --amp '{self.amp}'; choose one of: {', '.join(AMP_MODES)}."),
            (self.epochs >= 1, f"--epochs {self.epochs} must be at least 1."),
            (self.width > 0, f"--width {self.width} must be positive."),
            (self.lr == "auto" or self.lr > 0, f"--lr {self.lr} must be positive (or 'auto')."),
            (self.lr_min is None or self.lr_min > 0, f"--lr-min {self.lr_min} must be positive."),
            (self.wd >= 0, f"--wd {self.wd} must be 0 or positive."),
            (0 <= self.mom < 1, f"--mom {self.mom} must be at least 0 and below 1."),
            (self.freeze_epochs >= 0, f"--freeze-epochs {self.freeze_epochs} must be 0 or more."),
            (self.patience is None or self.patience >= 1, f"--patience {self.patience} must be at least 1."),
            (self.clip is None or self.clip > 0, f"--clip {self.clip} must be positive."),
            (self.l1 >= 0, f"--l1 {self.l1} must be 0 or positive."),
        ]
        for ok, message in checks:
            if not ok:
                raise FastsegError(message)
        if self.device is not None:
            check_device(self.device)
        self.data.validate()


def check_device(requested: str) -> None:
    """Raises FastsegError for a device other than cpu, cuda or cuda:N, or CUDA where there is none."""
    import torch
    kind, colon, index = requested.partition(":")
    if kind not in ("cpu", "cuda") or (colon and (kind == "cpu" or not index.isdigit())):
        raise FastsegError(f"Unknown --device {requested}; use cpu, cuda or cuda:N.")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if kind == "cuda" and int(index or 0) >= count:
        have = f"only {count} CUDA device(s)" if count else "no CUDA GPU"
        raise FastsegError(f"--device {requested} is not available (this machine has {have}); use --device cpu.")


def save_config(cfg: FitConfig, path: Path) -> None:
    from fastseg.atomic import atomic_write
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(asdict(cfg), indent=2)))


def load_config(path: Path) -> FitConfig:
    """Read a run's config.json back into a FitConfig."""
    try:
        raw = json.loads(path.read_text())
        data = DataConfig(**raw.pop("data"))
        known = {f.name for f in fields(FitConfig)}
        return FitConfig(data=data, **{k: v for k, v in raw.items() if k in known})
    except (OSError, ValueError, TypeError, KeyError) as err:
        raise FastsegError(f"Run config {path} could not be read ({type(err).__name__}); pass a run "
                           "folder written by `fastseg fit`.") from None
