"""Which device a command runs on: `--device` checked, else CUDA when present, else the CPU; under
torchrun the process's own GPU."""

import torch

from fastseg.devices.distributed import init_from_env
from fastseg.errors import FastsegError


def run_device(requested: str | None) -> torch.device:
    """This process's device: torchrun's (`init_from_env`), else `pick_device(requested)`."""
    return init_from_env() or pick_device(requested)


def pick_device(requested: str | None) -> torch.device:
    """The device `--device` names (cpu, cuda, cuda:N; checked by `check_device`), or CUDA when
    present, else the CPU."""
    if requested is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    check_device(requested)
    return torch.device(requested)


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
