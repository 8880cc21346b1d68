"""Run directories: `runs/<timestamp>-<arch>/` with config.json, metrics.csv, weights and plots,
and what `fastseg runs` reads back from them."""

import csv
import io
import json
import math
import os
import time
from contextlib import contextmanager
from dataclasses import asdict, fields
from pathlib import Path

from fastseg.config import DataConfig, FitConfig, monitor_key
from fastseg.errors import FastsegError
from fastseg.io.atomic import atomic_write

CONFIG = "config.json"
METRICS = "metrics.csv"
BEST = "best.safetensors"        # best model by the monitored metric (metadata in its header)
LAST = "last.safetensors"        # full checkpoint for --resume (its structure in its header)
LR_FIND = "lr_find.json"
LOCK = ".lock"                   # the PID of the process training in the folder
FAILED = "failed.json"           # why the fit stopped with an error (the loss became NaN); removed on --resume
EVALUATION = "metrics.json"      # what `fastseg evaluate` wrote last
PER_IMAGE = "per_image_cm.safetensors"  # evaluate's N×C×C confusion matrices, one per image (for compare)


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
def run_lock(run: Path, refusal: str = "wait for it to finish or stop it before resuming"):
    """Hold `run/.lock` (this process's PID) while inside. The lock file is created exclusively, so of
    two processes taking it at once one wins; a lock left by a process that no longer exists (killed
    with -9) is taken over.

    Raises:
        FastsegError: another live process holds the lock (`refusal` says what to do).
    """
    path = run / LOCK
    for _ in range(2):
        if _link_lock(path):
            break
        holder = _lock_holder(path)
        if holder is not None and holder != os.getpid() and _alive(holder):
            raise FastsegError(f"Run folder {run} is in use by process {holder} (see {path}); {refusal}.")
        path.unlink(missing_ok=True)  # left by a dead process: take it over
    else:
        raise FastsegError(f"Run folder {run} is being taken by another process (see {path}); {refusal}.")
    try:
        yield path
    finally:
        if _lock_holder(path) == os.getpid():
            path.unlink(missing_ok=True)


@contextmanager
def claim_run(run: Path):
    """Take a new run's folder before anything else, atomically: create it (and its parents) and hold
    its lock while inside. Of several fits started at once with one --name, exactly one gets it.
    A folder holding only find-lr's results is reused. When the body fails before config.json is
    written, what this created is removed again, so a failed start leaves nothing.

    Raises:
        FastsegError: the folder holds a run, another process holds it, or it cannot be written.
    """
    created = [p for p in (run, *run.parents) if not p.exists()][::-1]
    try:
        run.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise FastsegError(f"Run folder {run} cannot be written ({err.strerror}); choose a writable "
                           "--runs-dir.") from None
    try:
        with run_lock(run, "choose another --name, or wait for it to finish"):
            check_new_run(run)  # after the lock: a run that finished meanwhile is not overwritten
            yield ensure_writable(run)
    finally:
        if not (run / CONFIG).exists():
            for folder in reversed(created):
                _remove_if_empty(folder)


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass


def _link_lock(path: Path) -> bool:
    """Create the lock file `path` holding this process's PID, complete or not at all (a hard link of a
    written file, which fails when `path` exists). Returns whether this process created it."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(f"{os.getpid()}\n")
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)


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


def mark_failed(run: Path, reason: str) -> None:
    """Record why the fit in `run` stopped with an error, for `fastseg runs`."""
    atomic_write(run / FAILED, lambda tmp: tmp.write_text(json.dumps({"error": reason}, indent=2)))


def checkpoint_position(run: Path) -> dict:
    """epoch, batch and tracker (best, best_epoch, wait) of the run's last checkpoint, read from its
    JSON skeleton alone (io.serialize's format: dicts as "__dict__" pairs), without loading a tensor."""
    from fastseg.io.serialize import read_meta  # torch: imported only when a run is read
    entries = dict(read_meta(run / LAST)["__dict__"])
    return {"epoch": entries["epoch"], "batch": entries["batch"], "tracker": dict(entries["tracker"]["__dict__"])}


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def describe_run(run: Path) -> dict:
    """One row of `fastseg runs`: name, arch, width, data, epochs done / planned, best monitored metric
    and its epoch, state, wall seconds of training, bytes on disk. Never raises: a folder fastseg did
    not write is "foreign", one whose files cannot be read is "damaged" with the reason."""
    row = {"name": run.name, "path": str(run), "modified": 0.0, "bytes": 0}
    try:
        row |= {"modified": run.stat().st_mtime, "bytes": folder_bytes(run)}
    except OSError as err:
        return row | {"state": "damaged", "reason": f"{err.strerror or type(err).__name__} reading it"}
    if not (run / CONFIG).is_file():
        return row | {"state": "find-lr only" if (run / LR_FIND).is_file() else "foreign"}
    try:
        return row | _run_fields(run)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        return row | {"state": "damaged", "reason": f"{type(err).__name__} reading it"}


def _run_fields(run: Path) -> dict:
    cfg = json.loads((run / CONFIG).read_text())
    rows = read_metrics_csv(run / METRICS)
    from fastseg.io.serialize import read_meta
    best = read_meta(run / BEST) if (run / BEST).is_file() else None
    data = cfg["data"]
    fields = {"arch": cfg["arch"], "width": cfg["width"], "voc": data.get("voc"), "data": data.get("data"),
              "sbd": data.get("sbd"),
              "splits": f"{data['train_split']} / {data['valid_split']}", "epochs_done": len(rows),
              "epochs": cfg["epochs"], "monitor": cfg.get("monitor", "miou"),
              "seconds": sum(r["seconds"] for r in rows if isinstance(r.get("seconds"), float))}
    if best:
        fields |= {"best": best["metrics"][monitor_key(fields["monitor"])], "best_epoch": best["epoch"],
                   "best_miou": best["metrics"]["miou"]}
    return fields | {"state": run_state_name(run, cfg, len(rows))}


def run_state_name(run: Path, cfg: dict, done: int) -> str:
    """running (its lock's process is alive), failed (failed.json), finished, stopped early (patience),
    interrupted (resumable from last.safetensors), or incomplete (no checkpoint: it never finished an epoch)."""
    holder = _lock_holder(run / LOCK)
    if holder is not None and _alive(holder):
        return "running"
    if (run / FAILED).is_file():
        return "failed"
    if not (run / LAST).is_file():
        return "incomplete"
    position = checkpoint_position(run)
    if position["epoch"] >= cfg["epochs"] and position["batch"] == 0:
        return "finished"
    patience = cfg.get("patience")
    if patience and position["batch"] == 0 and position["tracker"]["wait"] >= patience:
        return "stopped early"
    return "interrupted"


def list_runs(runs_dir: Path) -> list[dict]:
    """`describe_run` of every folder in `runs_dir`, oldest first (by last change)."""
    if not runs_dir.is_dir():
        raise FastsegError(f"Runs folder {runs_dir} does not exist; pass --runs-dir DIR, the folder `fastseg fit` "
                           "wrote its runs into.")
    rows = [describe_run(p) for p in runs_dir.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return sorted(rows, key=lambda r: (r["modified"], r["name"]))


def format_bytes(n: int) -> str:
    """1536 -> "1.5 KiB"; GiB at most."""
    if n < 1024:
        return f"{n} B"
    for unit in ("KiB", "MiB", "GiB"):
        n /= 1024
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}"


def format_seconds(s: float) -> str:
    if not s or math.isnan(s):
        return "–"
    return f"{s / 3600:.1f} h" if s >= 3600 else f"{s / 60:.1f} min" if s >= 60 else f"{s:.0f} s"


def save_config(cfg: FitConfig, path: Path) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(asdict(cfg), indent=2)))


def load_config(path: Path) -> FitConfig:
    """Read a run's config.json back into a FitConfig."""
    try:
        raw = json.loads(path.read_text())
        data = DataConfig(**raw.pop("data"))
        known = {f.name for f in fields(FitConfig)}
        return FitConfig(data=data, **{k: v for k, v in raw.items() if k in known})
    except FastsegError as err:
        raise FastsegError(f"Run config {path} holds a value fastseg does not know ({err}).") from None
    except (OSError, ValueError, TypeError, KeyError) as err:
        raise FastsegError(f"Run config {path} could not be read ({type(err).__name__}); pass a run "
                           "folder written by `fastseg fit`.") from None
