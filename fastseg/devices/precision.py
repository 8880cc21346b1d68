"""Mixed precision on the device the run trains on: which mode a run really gets, and autocast.

fastai's `MixedPrecision` always enters `autocast('cuda')`, so on the CPU it trains in fp32 while
the run says bf16. `DeviceMixedPrecision` is the same callback with the autocast (and, for fp16,
the grad scaler) of the run's device; `resolve_amp` decides the mode once, so config.json records
the precision actually used.
"""

from pathlib import Path

import torch
from fastai.callback.fp16 import AMPMode, MixedPrecision
from fastai.torch_core import L
from torch.amp import GradScaler, autocast

from fastseg.errors import FastsegError

CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo flags of CPUs with native bf16 math


def cpu_has_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether this CPU computes bf16 natively; without it bf16 matmuls are emulated, ~100× slower."""
    try:
        flags = set(cpuinfo.read_text().split())
    except OSError:
        return "BF16" in torch.backends.cpu.get_cpu_capability().upper()
    return any(flag in flags for flag in CPU_BF16_FLAGS)


def resolve_amp(requested: str, device: torch.device) -> str:
    """The precision a run uses: "off", "bf16" or "fp16".

    auto: bf16 on CUDA where supported, else fp16; off on every other device (bf16 on a CPU is
    only faster with native bf16 instructions, and never by much).

    Raises:
        FastsegError: fp16 off CUDA (no grad scaler there), or bf16 on a GPU without it.
    """
    cuda = device.type == "cuda"
    if requested == "auto":
        return ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if cuda else "off"
    if requested == "fp16" and not cuda:
        raise FastsegError(f"--amp fp16 needs a CUDA device (its gradient scaler is CUDA-only); on {device.type} "
                           "use --amp bf16 or --amp off.")
    if requested == "bf16" and cuda and not torch.cuda.is_bf16_supported():
        raise FastsegError("--amp bf16 is not supported by this GPU; use --amp fp16 or --amp off.")
    return requested


def amp_warning(requested: str, device: torch.device) -> str | None:
    """A one-line warning for bf16 asked for on a CPU without native bf16, else None."""
    if requested == "bf16" and device.type == "cpu" and not cpu_has_bf16():
        return ("Warning: this CPU has no native bf16 instructions (avx512_bf16/amx_bf16); --amp bf16 will be "
                "much slower than --amp off.")
    return None


class DeviceMixedPrecision(MixedPrecision):
    """fastai's MixedPrecision with autocast on `device_type` (cuda or cpu); the grad scaler is
    enabled for fp16 only (bf16 has fp32's range). Weights stay fp32; predictions are cast to fp32
    before the loss."""

    def __init__(self, amp_mode: str, device_type: str):
        super().__init__(amp_mode=AMPMode(amp_mode))
        self.device_type = device_type

    def before_fit(self):
        dtype = torch.bfloat16 if self.amp_mode == AMPMode.BF16 else torch.float16
        self.autocast = autocast(self.device_type, dtype=dtype)
        self.learn.scaler = GradScaler(self.device_type, enabled=dtype == torch.float16)
        self.scales = L()


def precision_callbacks(amp: str, device: torch.device) -> list:
    """The callbacks for a resolved `amp` ("off", "bf16" or "fp16") on `device`."""
    return [] if amp == "off" else [DeviceMixedPrecision(amp, device.type)]
