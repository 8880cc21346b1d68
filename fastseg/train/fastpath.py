"""Removing the host syncs fastai adds per step, and CUDA settings for speed.

fastai's Recorder tracks the training loss with `AvgSmoothLoss` and the validation loss with
`AvgLoss`; both call `to_detach(loss)`, whose default `cpu=True` copies the loss to the host on
every batch: one device→host sync per step. The versions here keep the running values on the
device; they are read once per epoch (and by the progress bar at most twice a second).
"""

import torch
from fastai.learner import AvgLoss, AvgSmoothLoss
from fastai.torch_core import find_bs


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


def cuda_settings(device: torch.device) -> None:
    """cuDNN autotuning for the fixed training crop (validation's few padded sizes are tuned once each)."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
