"""`--nproc N`: fastseg starts its own worker processes through PyTorch's elastic launcher API
(what torchrun runs), so no option of fastseg has to pass through a launcher's parser.

Each worker calls `func(*args)` with the environment torchrun would give it (RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR, ...); `fastseg.devices.distributed.init_from_env` joins the group. One
machine meets on a free port of 127.0.0.1; several (`nnodes`, one launcher on each) meet at
`endpoint` through a c10d rendezvous, the first launcher there hosting it.
"""

import logging
import multiprocessing
import os
import uuid
from contextlib import contextmanager

from fastseg.errors import EXIT_FAILED, FastsegError, Interrupted

LOCAL_ENDPOINT = "127.0.0.1:0"  # one machine: the rendezvous on a free local port
RUN_ID = "fastseg"              # several machines: every launcher names the same rendezvous


def check_launch(nproc: int, nnodes: int, endpoint: str | None, device: str | None) -> None:
    """Raises FastsegError for process counts below 1, several machines without a rendezvous
    address, a launch from inside a launched process, or more CUDA processes than GPUs."""
    import torch

    from fastseg.devices.distributed import launched
    if nproc < 1 or nnodes < 1:
        raise FastsegError(f"--nproc {nproc} and --nnodes {nnodes} must be at least 1.")
    if nnodes > 1 and not endpoint:
        raise FastsegError(f"--nnodes {nnodes} needs --rdzv-endpoint HOST:PORT, an address every machine reaches "
                           "(the same on each).")
    if launched():
        raise FastsegError("This process was started by a launcher (torchrun or accelerate) already; drop --nproc, "
                           "or run fastseg without the launcher.")
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if on_cuda(device) and nproc > gpus:
        raise FastsegError(f"--nproc {nproc} needs {nproc} GPUs and this machine has {gpus}; pass --nproc {gpus} "
                           "or --device cpu.")


def on_cuda(device: str | None) -> bool:
    """Whether processes for --device `device` (None: CUDA when present) run on GPUs."""
    import torch
    return (device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda")


def launch(func, args: tuple, nproc: int, nnodes: int = 1, endpoint: str | None = None, device: str | None = None):
    """Run `func(*args)` in `nproc` processes on this machine (one per GPU; gloo processes on the CPU)
    and return the value of the lowest rank here (rank 0 on the first machine).

    `func` exits with a code rather than raising for a user's error (the CLI's `worker`), having said
    why; a failed worker ends every worker, and this raises FastsegError with its exit code.

    Raises:
        FastsegError: a worker failed (its exit code), or Interrupted: Ctrl-C or SIGTERM stopped them.
    """
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch
    config = LaunchConfig(min_nodes=nnodes, max_nodes=nnodes, nproc_per_node=nproc, max_restarts=0,
                          run_id=RUN_ID if nnodes > 1 else str(uuid.uuid4()), rdzv_backend="c10d",
                          rdzv_endpoint=endpoint or LOCAL_ENDPOINT, start_method="spawn", monitor_interval=0.1)
    try:
        with quiet_launcher(), cpu_threads(0 if on_cuda(device) else nproc):
            results = elastic_launch(config, in_process)(func, args)
    except ChildFailedError as err:
        code = min(f.exitcode for f in err.failures.values())
        raise FastsegError(f"{len(err.failures)} of the worker processes stopped (exit code {code}); the reason is "
                           "printed above.", code if code > 0 else EXIT_FAILED) from None
    except SignalException as err:
        raise Interrupted(f"All processes stopped ({err.sigval.name}).", []) from None
    return results[min(results)]


def in_process(func, args: tuple):
    """`func(*args)` in a launched process, whose own subprocesses (data loader workers) are forked
    as under torchrun: the launcher spawns its processes, and a spawned process would spawn them
    too, importing torch and fastai again in every loader worker of every epoch."""
    multiprocessing.set_start_method("fork", force=True)
    return func(*args)


@contextmanager
def quiet_launcher():
    """The elastic launcher's own log lines (start, worker failures with their tracebacks' location)
    silenced: workers say what went wrong, in one sentence."""
    names = ["torch.distributed", *(n for n in logging.root.manager.loggerDict if n.startswith("torch.distributed."))]
    levels = {name: logging.getLogger(name).level for name in names}
    for name in names:
        logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


@contextmanager
def cpu_threads(nproc: int):
    """For `nproc` CPU processes, OMP_NUM_THREADS = cores // nproc in their environment unless set
    (as torchrun does), so that they do not each take every core; nproc 0 changes nothing."""
    if not nproc or "OMP_NUM_THREADS" in os.environ:
        yield
        return
    os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // nproc))
    try:
        yield
    finally:
        del os.environ["OMP_NUM_THREADS"]
