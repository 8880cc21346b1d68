"""Every torch.distributed collective fastseg makes goes through here (a test checks that no other
module calls one), each putting its tensor where the process group's backend takes it.

A group made for CUDA by `init_process_group` has a backend per device ("cpu:gloo,cuda:nccl"), so
small CPU tensors (confusion matrices, flags) and CUDA ones both work. A group made by someone else
with "nccl" alone refuses CPU tensors: `backend_device` then moves them to this process's GPU and
back. Without a process group (one process) every function returns its input unchanged.
"""

import atexit

import torch
import torch.distributed as dist

CUDA_BACKENDS = "cpu:gloo,cuda:nccl"  # nccl for CUDA tensors, gloo for the CPU tensors of metrics and flags
CPU_BACKEND = "gloo"


def running() -> bool:
    """Whether this process is in an initialised process group."""
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if running() else 1


def rank() -> int:
    return dist.get_rank() if running() else 0


def init_process_group(device_type: str) -> None:
    """Join the group torchrun's (or fastseg's launcher's) environment describes, with a backend for
    the CPU and, for `device_type` "cuda", one for CUDA (the process's GPU must be set first).

    A command that ends well leaves it (`leave_process_group`, from the CLI). A CPU (gloo) group is
    also left when the process exits however it ends: gloo is destroyed without waiting on the
    peers, and a process that fails keeps its exit code instead of aborting at shutdown. A CUDA
    group is not left on failure: destroying NCCL then may wait for peers that never come."""
    if not running():
        dist.init_process_group(CUDA_BACKENDS if device_type == "cuda" else CPU_BACKEND)
        if device_type != "cuda":
            atexit.register(leave_process_group)


def leave_process_group() -> None:
    """Destroy this process's group, if it is in one, while the interpreter is still whole: a gloo
    group left to the interpreter's shutdown can abort the process (SIGABRT, "terminate called
    without an active exception"), and the launcher then stops the processes that have not
    finished; NCCL warns."""
    if running():
        dist.destroy_process_group()


def backend_device(tensor: torch.Tensor) -> torch.device:
    """Where `tensor` must be for the group's backend: its own device when a backend serves that
    device type, else this process's GPU (an "nccl"-only group)."""
    served = str(dist.get_backend_config())  # e.g. "cpu:gloo,cuda:nccl", "cpu:gloo,cuda:gloo", "cuda:nccl"
    if f"{tensor.device.type}:" in served:
        return tensor.device
    return torch.device("cuda", torch.cuda.current_device())


def _reduced(tensor: torch.Tensor, op) -> torch.Tensor:
    if not running():
        return tensor
    out = tensor.to(backend_device(tensor), copy=True)
    dist.all_reduce(out, op=op)
    return out.to(tensor.device)


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """The element-wise sum of `tensor` over all processes, on `tensor`'s device (a new tensor)."""
    return _reduced(tensor, dist.ReduceOp.SUM)


def any_process(flag: bool) -> bool:
    """Whether `flag` is true in any process (every process must call this at the same point)."""
    if not running():
        return flag
    return bool(_reduced(torch.tensor([int(flag)], dtype=torch.int32), dist.ReduceOp.MAX).item())


def same_in_all_processes(values: torch.Tensor) -> bool:
    """Whether every process holds the same `values` (a small 1-D float64 tensor, e.g. checksums)."""
    if not running():
        return True
    lowest = -_reduced(-values, dist.ReduceOp.MAX)
    return bool(torch.equal(lowest, _reduced(values, dist.ReduceOp.MAX)))


def broadcast_ints(values: list[int], src: int = 0) -> list[int]:
    """Process `src`'s list of ints (every process passes a list of the same length)."""
    if not running():
        return values
    tensor = torch.tensor(values, dtype=torch.long)
    placed = tensor.to(backend_device(tensor))
    dist.broadcast(placed, src)
    return placed.cpu().tolist()


def broadcast_object(value, src: int = 0):
    """`value` from process `src` (any picklable object), in every process."""
    if not running():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_object(value) -> list:
    """Every process's `value` (picklable), in rank order, in every process."""
    if not running():
        return [value]
    parts = [None] * world_size()
    dist.all_gather_object(parts, value)
    return parts
