"""RunRecorder: after each epoch, writes metrics.csv, the best model by the monitored metric
(`--monitor`, mIoU by default) and a full checkpoint, redraws the curves, prints one table row, and
stops early when the monitored metric has not improved for `patience` epochs."""

import math
import time
from pathlib import Path

from fastai.callback.core import Callback, CancelFitException

from fastseg.config import monitor_key
from fastseg.console import log
from fastseg.devices.distributed import is_main
from fastseg.errors import FastsegError
from fastseg.evaluate.metrics import SCORE_KEYS
from fastseg.io.runs import BEST, LAST, METRICS, write_metrics_csv
from fastseg.io.serialize import save_state
from fastseg.models.weights import save_model
from fastseg.train.callbacks import bare_model, divergence_advice, run_state
from fastseg.train.plots import plot_curves

CURVES_EVERY_S = 30.0
"""curves.png is drawn after the first epoch, then after an epoch once this many seconds have passed
since the last drawing, and always at the end of the fit: every epoch of a real run, every few of the
demo's short ones (a drawing takes ~0.3 s on a CPU core)."""

TABLE_COLUMNS = ("epoch", "train_loss", "valid_loss", *SCORE_KEYS, "lr", "seconds")


def format_row(row: dict) -> str:
    cells = []
    for key in TABLE_COLUMNS:
        value = row[key]
        cells.append(f"{int(value):>5d}" if key == "epoch" else
                     f"{value:>10.2e}" if key == "lr" else f"{value:>10.4f}")
    return " ".join(cells)


def table_header() -> str:
    return " ".join(f"{c:>5}" if c == "epoch" else f"{c:>10}" for c in TABLE_COLUMNS)


def track_best(tracker: dict, row: dict, monitor: str) -> bool:
    """Update `tracker` (best, best_epoch, wait) with an epoch's metrics row; True when the monitored
    metric (a --monitor value, e.g. "miou" or "iou:cat") improved, so best.safetensors is this epoch's.
    A NaN (a class absent from the validation split) never improves."""
    score = row[monitor_key(monitor)]
    if math.isnan(score) and tracker["best"] < 0:
        raise FastsegError(f"--monitor {monitor}: the validation split has no pixel of that class and the model "
                           "predicts none, so it has no IoU; monitor miou or a class the split holds.")
    if not math.isnan(score) and score > tracker["best"]:
        tracker.update(best=score, best_epoch=row["epoch"], wait=0)
        return True
    tracker["wait"] += 1
    return False


def check_finite(row: dict, lr) -> None:
    """Raises FastsegError (exit 1) when an epoch's validation or training loss is not finite: the run
    diverged, and its metrics (the argmax of NaN logits) mean nothing."""
    for key, name in (("valid_loss", "validation"), ("train_loss", "training")):
        if not math.isfinite(row[key]):
            value = "NaN" if math.isnan(row[key]) else "infinite"
            other = "training" if key == "valid_loss" else "validation"
            raise FastsegError(f"The {name} loss is {value} after epoch {row['epoch']} ({other} loss "
                               f"{row['train_loss' if key == 'valid_loss' else 'valid_loss']:.3g}): the run diverged; "
                               f"{divergence_advice(lr)}", exit_code=1)


class RunRecorder(Callback):
    """Runs after fastai's Recorder (order 50), whose `log` then holds the epoch's numbers."""

    order = 60

    def __init__(self, run_dir: Path, meta: dict, rows: list[dict], tracker: dict, start_epoch: int,
                 patience: int | None, confusion, monitor: str = "miou", lr=None):
        self.run_dir, self.meta, self.rows, self.tracker, self.lr = run_dir, meta, rows, tracker, lr
        self.start_epoch, self.patience, self.confusion, self.monitor = start_epoch, patience, confusion, monitor
        self.drawn_at, self.drawn_rows = -math.inf, 0

    def before_fit(self):
        log(table_header())

    def after_fit(self):
        if self.drawn_rows < len(self.rows):
            self.draw_curves()

    def draw_curves(self):
        if is_main():
            plot_curves(self.rows, self.run_dir / "curves.png")
        self.drawn_at, self.drawn_rows = time.monotonic(), len(self.rows)

    def before_epoch(self):
        self.started = time.monotonic()

    def after_epoch(self):
        if self.epoch < self.start_epoch or self.recorder.cancel_train:
            return
        row = self.epoch_row()
        self.rows.append(row)
        if is_main():
            write_metrics_csv(self.run_dir / METRICS, self.rows)
        log(format_row(row))
        check_finite(row, self.lr)  # before best.safetensors and last.safetensors: the last good epoch's stay
        self._track_best(row)
        if time.monotonic() - self.drawn_at >= CURVES_EVERY_S:
            self.draw_curves()
        self.save_checkpoint(self.epoch + 1, 0)
        if self.patience is not None and self.tracker["wait"] >= self.patience:
            log(f"Early stopping: {self.monitor} has not improved for {self.patience} epochs "
                f"(best {self.tracker['best']:.4f} at epoch {self.tracker['best_epoch']}).")
            raise CancelFitException

    def epoch_row(self) -> dict:
        names = self.recorder.metric_names[1:-1]  # drop "epoch" and "time"
        values = dict(zip(names, self.recorder.log[1:len(names) + 1], strict=True))
        row = {"epoch": self.epoch + 1, **{k: float(v) for k, v in values.items()},
               "lr": float(self.opt.hypers[-1]["lr"]), "seconds": time.monotonic() - self.started}
        ious = self.confusion.scores()["iou"]
        row.update({f"iou_{name}": iou for name, iou in zip(self.meta["classes"], ious, strict=True)})
        return row

    def _track_best(self, row: dict):
        if track_best(self.tracker, row, self.monitor) and is_main():
            metrics = {k: v for k, v in row.items() if k != "seconds"}
            save_model(bare_model(self.learn.model), self.run_dir / BEST,
                       {**self.meta, "epoch": row["epoch"], "monitor": self.monitor, "metrics": metrics})

    def save_checkpoint(self, epoch: int, batch: int):
        """Full resumable state: `epoch` epochs done plus `batch` batches of the next (rank 0 writes)."""
        if is_main():
            save_state(run_state(self.learn, epoch, batch, dict(self.tracker)), self.run_dir / LAST)

    def save_interrupted(self, batch: int):
        self.save_checkpoint(self.epoch, batch)
        log(f"Interrupted in epoch {self.epoch + 1} after {batch} batches; checkpoint saved.")
