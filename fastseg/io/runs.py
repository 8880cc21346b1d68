"""Run directories: `runs/<timestamp>-<arch>/` with config.json, metrics.csv, weights and plots."""

import csv
import io
import os
import time
from contextlib import contextmanager
from pathlib import Path

from fastseg.errors import FastsegError
from fastseg.io.atomic import atomic_write

CONFIG = "config.json"
METRICS = "metrics.csv"
BEST = "best.safetensors"        # best model by mIoU (+ best.json)
LAST = "last.safetensors"        # full checkpoint for --resume (+ last.json)
LR_FIND = "lr_find.json"
LOCK = ".lock"                   # the PID of the process training in the folder


def default_run_name(arch: str) -> str:
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{arch}"


def check_new_run(run: Path) -> Path:
    """Refuse a run folder that holds a fit already (one with only lr_find results is reused).

    Raises:
        FastsegError: the folder holds a run; nothing of it is touched.
    """
    if (run / CONFIG).exists():
        raise FastsegError(f"Run folder {run} already holds a run; pass --resume {run} to continue "
                           "it or choose another --name.")
    return run


def ensure_writable(folder: Path) -> Path:
    """Create `folder` and check a file can be written in it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise FastsegError(f"Run folder {folder} cannot be written ({err.strerror}); choose a writable "
                           "--runs-dir.") from None
    return folder


@contextmanager
def run_lock(run: Path):
    """Hold `run/.lock` (this process's PID) while inside; a lock left by a process that no longer
    exists (killed with -9) is taken over.

    Raises:
        FastsegError: another live process holds the lock.
    """
    path = run / LOCK
    holder = _lock_holder(path)
    if holder is not None and holder != os.getpid() and _alive(holder):
        raise FastsegError(f"Run folder {run} is in use by process {holder} (see {path}); wait for it to "
                           "finish or stop it before resuming.")
    atomic_write(path, lambda tmp: tmp.write_text(f"{os.getpid()}\n"))
    try:
        yield path
    finally:
        if _lock_holder(path) == os.getpid():
            path.unlink(missing_ok=True)


def _lock_holder(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def latest_run(runs_dir: str | Path, must_have: str = BEST) -> Path:
    """The most recently modified run folder containing `must_have`."""
    runs = [p.parent for p in Path(runs_dir).glob(f"*/{must_have}")]
    if not runs:
        raise FastsegError(f"No run with {must_have} was found in {runs_dir}; train one with `fastseg fit` "
                           "or pass a run folder.")
    return max(runs, key=lambda p: (p / must_have).stat().st_mtime)


def write_metrics_csv(path: Path, rows: list[dict]) -> None:
    """Rewrite metrics.csv atomically from all epoch rows so far."""
    if not rows:
        return
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(path, lambda tmp: tmp.write_text(buffer.getvalue()))


def read_metrics_csv(path: Path) -> list[dict]:
    """Epoch rows of metrics.csv with numbers parsed as floats."""
    if not path.is_file():
        return []
    with path.open() as f:
        return [{k: int(v) if k == "epoch" else _number(v) for k, v in row.items()} for row in csv.DictReader(f)]


def _number(text: str):
    try:
        return float(text)
    except ValueError:
        return text
