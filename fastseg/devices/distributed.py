"""Data-parallel training and evaluation on PyTorch DDP through fastai, on CUDA (nccl) and CPU (gloo).

Started by `fastseg fit --nproc N` (fastseg.devices.launch), or by torchrun / accelerate launch.

The adapter: fastai's `DistributedDL._broadcast` sends the sample order through
`LongTensor(...).cuda()`, which fails on a CPU (gloo) process group; `GlooSafeDistributedDL`
broadcasts through fastseg.devices.collectives. `FastsegDistributedTrainer` is fastai's
`DistributedTrainer` that builds DDP itself (then torch.compile, when asked), can build it again
when the trainable parameters change (`rewrap`, for --freeze-epochs), and shares validation out in
whole batches with nothing repeated. PyTorch's SyncBatchNorm needs GPUs, so on the CPU each
process keeps its own BatchNorm statistics.
"""

import os
from contextlib import contextmanager

import torch
from fastai.distributed import DistributedDL, DistributedTrainer
from fastai.torch_core import noop
from torch.nn.parallel import DistributedDataParallel

from fastseg.devices.collectives import (
    broadcast_ints,
    broadcast_object,  # noqa: F401 - re-exported: fit names its run folder with it
    init_process_group,
    rank,
    same_in_all_processes,
    world_size,
)
from fastseg.devices.transfer import NonBlockingLoader
from fastseg.errors import EXIT_FAILED, FastsegError


def is_main() -> bool:
    """True in the process that logs, draws and writes files (rank 0, or the only process)."""
    return rank() == 0


def launched() -> bool:
    """Whether a launcher (fastseg's, torchrun, accelerate) started this process as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env() -> torch.device | None:
    """Join the process group described by the launcher's environment (WORLD_SIZE, RANK, LOCAL_RANK).

    Returns this process's device, or None when not launched for several processes.
    """
    if not launched():
        return None
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(local)
    init_process_group("cuda" if cuda else "cpu")
    return torch.device("cuda", local) if cuda else torch.device("cpu")


def bare_model(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside DistributedDataParallel and torch.compile wrappers (or the model itself):
    the module whose state_dict has the plain parameter names that `load_model` expects."""
    model = getattr(model, "_orig_mod", model)    # torch.compile's OptimizedModule around DDP
    model = getattr(model, "module", model)       # DDP
    return getattr(model, "_orig_mod", model)     # torch.compile's OptimizedModule


class GlooSafeDistributedDL(NonBlockingLoader, DistributedDL):
    """fastai's DistributedDL, broadcasting the sample order where the group's backend takes it."""

    def _broadcast(self, t, rank):
        return broadcast_ints(list(t), rank)


def parameter_checksums(model: torch.nn.Module) -> torch.Tensor:
    """One float64 sum per parameter tensor of `model` (1-D, on the CPU)."""
    return torch.stack([p.detach().double().sum() for p in model.parameters()]).cpu()


class FastsegDistributedTrainer(DistributedTrainer):
    """fastai's DistributedTrainer (DDP; SyncBatchNorm on CUDA), with DDP built here so that it is
    compiled after wrapping and can be rebuilt (`rewrap`); validation loaders that can `shard`
    themselves score whole batches in one process each; after every epoch the processes check that
    they hold the same weights."""

    def __init__(self, cuda: bool, compile: bool = False):
        super().__init__(sync_bn=cuda, cpu=not cuda)
        self.compile = compile

    def before_fit(self):
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model) if self.sync_bn else self.model
        self.learn.model = self.wrap(model)
        self.old_dls = list(self.dls)
        self.learn.dls.loaders = [self._wrap_dl(dl) for dl in self.dls]
        if rank():
            self.learn.logger = noop

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """DDP over the parameters that require gradients now, then torch.compile when asked."""
        device = next(model.parameters()).device
        ddp = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        return torch.compile(ddp) if self.compile else ddp

    def rewrap(self):
        """DDP built again around the bare model: DDP reduces the gradients of the parameters that
        required them when it was built, so it must be rebuilt when that set changes."""
        self.learn.model = self.wrap(bare_model(self.learn.model))

    def _wrap_dl(self, dl):
        if isinstance(dl, DistributedDL) or getattr(dl, "shard_of", None) is not None:
            return dl
        if hasattr(dl, "shard") and not dl.shuffle:
            return dl.shard(rank(), world_size())
        return GlooSafeDistributedDL(dl, device=self.learn.model.device)

    def after_epoch(self):
        if not same_in_all_processes(parameter_checksums(self.learn.model)):
            raise FastsegError(f"The {world_size()} processes hold different weights after epoch {self.epoch + 1}; "
                               "report this as a bug with the command you ran.", EXIT_FAILED)

    def after_fit(self):
        self.learn.model, self.learn.dls.loaders = bare_model(self.learn.model), self.old_dls


def rewrap(learn) -> None:
    """Rebuild the learner's DDP wrapper (when it has one) after its trainable parameters changed."""
    for cb in learn.cbs:
        if isinstance(cb, FastsegDistributedTrainer):
            cb.rewrap()


@contextmanager
def distributed(learn, compile: bool = False):
    """Like fastai's `Learner.distrib_ctx`: DDP (SyncBatchNorm on CUDA), then torch.compile when asked,
    while inside, for a process group that is already initialised; a no-op for a single process."""
    if world_size() <= 1:
        yield learn
        return
    trainer = FastsegDistributedTrainer(cuda=next(learn.model.parameters()).is_cuda, compile=compile)
    learn.add_cb(trainer)
    try:
        yield learn
    finally:
        learn.remove_cb(trainer)
