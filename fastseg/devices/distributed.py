"""Data-parallel training and evaluation on PyTorch DDP through fastai, on CUDA (nccl) and CPU (gloo).

Launch with `torchrun --nproc_per_node N -m fastseg fit ...` (or `accelerate launch -m fastseg ...`).

The adapter: fastai's `DistributedDL._broadcast` sends the sample order through
`LongTensor(...).cuda()`, which fails on a CPU (gloo) process group. `GlooSafeDistributedDL`
broadcasts on the device the group's backend needs, and `FastsegDistributedTrainer` is fastai's
`DistributedTrainer` using it; nothing else of fastai is changed. PyTorch's SyncBatchNorm needs
GPUs, so on CPU each process keeps its own BatchNorm statistics.
"""

import os
from contextlib import contextmanager

import torch
import torch.distributed as dist
from fastai.distributed import DistributedDL, DistributedTrainer

from fastseg.devices.transfer import NonBlockingLoader


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    """True in the process that logs, draws and writes files (rank 0, or the only process)."""
    return rank() == 0


def collective_device() -> str:
    """Where tensors for collectives must live: CUDA for nccl, the CPU for gloo."""
    return "cuda" if dist.get_backend() == "nccl" else "cpu"


def init_from_env() -> torch.device | None:
    """Join the process group described by torchrun's environment (WORLD_SIZE, RANK, LOCAL_RANK).

    Returns this process's device, or None when not launched for several processes.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return torch.device("cuda", local) if cuda else torch.device("cpu")


class GlooSafeDistributedDL(NonBlockingLoader, DistributedDL):
    """fastai's DistributedDL, broadcasting the sample order on CPU for gloo and on CUDA for nccl."""

    def _broadcast(self, t, rank):
        tensor = torch.tensor(t, dtype=torch.long, device=collective_device())
        dist.broadcast(tensor, rank)
        return tensor.cpu().tolist()


class FastsegDistributedTrainer(DistributedTrainer):
    """fastai's DistributedTrainer (DDP through accelerate) with the gloo-safe loader."""

    def _wrap_dl(self, dl):
        return dl if isinstance(dl, DistributedDL) else GlooSafeDistributedDL(dl, device=self.learn.model.device)


@contextmanager
def distributed(learn):
    """Like fastai's `Learner.distrib_ctx`: DDP (SyncBatchNorm on CUDA) while inside, for a process
    group that is already initialised; a no-op for a single process."""
    if world_size() <= 1:
        yield learn
        return
    cuda = collective_device() == "cuda"
    trainer = FastsegDistributedTrainer(sync_bn=cuda, cpu=not cuda)
    learn.add_cb(trainer)
    try:
        yield learn
    finally:
        learn.remove_cb(trainer)


def duplicate_mask(dl, batch_size: int) -> torch.Tensor | None:
    """For a batch just drawn from a DistributedDL: True for samples that only pad the last shard
    (fastai repeats samples so every rank gets as many), None when nothing is padded."""
    if not isinstance(dl, DistributedDL) or not hasattr(dl, "n_padded") or dl.n_padded == dl.n:
        return None
    shard = dl.n_padded // dl.world_size
    first = dl.rank * shard + dl.i - batch_size  # global position of the batch's first sample
    return torch.arange(first, first + batch_size) >= dl.n


def broadcast_object(value):
    """`value` from rank 0, in every process."""
    if world_size() <= 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]
