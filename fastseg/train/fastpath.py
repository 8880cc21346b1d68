"""The training step's fast path: one input path for every batch, no host syncs fastai adds per
step, and the CUDA settings for speed or for determinism.

`InputPath` is the step before each batch: fastai hands the model `TensorImage` / `TensorMask`
subclasses, whose `__torch_function__` wraps every op of the forward and backward pass in Python;
they are stripped to plain tensors, and the images converted to channels_last when the model is.
The copy to the device happens in the loader (`devices.transfer`: non-blocking from pinned memory).

fastai's Recorder tracks the training loss with `AvgSmoothLoss` and the validation loss with
`AvgLoss`; both call `to_detach(loss)`, whose default `cpu=True` copies the loss to the host on
every batch: one device→host sync per step. The versions here keep the running values on the
device; they are read once per epoch (and by the progress bar at most twice a second).
"""

import os
from contextlib import contextmanager

import torch
from fastai.callback.core import Callback
from fastai.learner import AvgLoss, AvgSmoothLoss
from fastai.torch_core import find_bs

CUBLAS_DETERMINISTIC = ":4096:8"  # the cuBLAS workspace setting deterministic mode needs (CUDA docs)


def plain_input(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """Images N×C×H×W as a plain torch.Tensor (fastai's subclass stripped), channels_last if asked."""
    x = x.as_subclass(torch.Tensor)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


class InputPath(Callback):
    """Before each batch: images stripped of fastai's subclass (and channels_last when asked), masks
    N×H×W stripped too. Runs first, so every other callback sees what the model sees."""

    order = -20

    def __init__(self, channels_last: bool):
        self.channels_last = channels_last

    def before_batch(self):
        self.learn.xb = tuple(plain_input(x, self.channels_last) for x in self.xb)
        self.learn.yb = tuple(y.as_subclass(torch.Tensor) for y in self.yb)


class DeviceSmoothLoss(AvgSmoothLoss):
    """Exponentially smoothed training loss, kept on the loss's device."""

    def accumulate(self, learn):
        self.count += 1
        loss = learn.loss.detach().float().mean()
        self.val = torch.lerp(loss, self.val.to(loss.device), self.beta)


class DeviceAvgLoss(AvgLoss):
    """Batch-size-weighted mean validation loss, kept on the loss's device (this process's shard
    under DDP)."""

    def accumulate(self, learn):
        bs = find_bs(learn.yb)
        self.total = self.total + learn.loss.detach().float().mean() * bs
        self.count += bs


def install_device_losses(learn) -> None:
    """Swap the Recorder's loss trackers for the device-side ones."""
    learn.recorder.smooth_loss = DeviceSmoothLoss(beta=learn.recorder.smooth_loss.beta)
    learn.recorder.loss = DeviceAvgLoss()


def cuda_settings(device: torch.device, deterministic: bool = False) -> None:
    """cuDNN autotuning for the fixed training crop (validation's few padded sizes are tuned once
    each), unless the run is `deterministic` (autotuning picks kernels by timing)."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not deterministic


@contextmanager
def deterministic_mode(enabled: bool):
    """While inside, with `enabled`: deterministic cuDNN kernels, `torch.use_deterministic_algorithms`
    (under which SegNet's unpool is a scatter, see `models.blocks.Unpool`) and cuBLAS's fixed
    workspace, so a resumed CUDA run repeats an uninterrupted one bit for bit. Restored on exit."""
    if not enabled:
        yield
        return
    before = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic,
              os.environ.get("CUBLAS_WORKSPACE_CONFIG"))
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_DETERMINISTIC)
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic = True
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0])
        torch.backends.cudnn.deterministic = before[1]
        if before[2] is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
