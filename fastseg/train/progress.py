"""Progress display for fit: rich bars on a terminal, nothing extra otherwise (the per-epoch table
row is printed by RunRecorder either way)."""

import time

from fastai.callback.core import Callback
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from fastseg.console import console

REFRESH_SECONDS = 0.5  # how often the running loss is read from the device (one sync per refresh)


class RichProgress(Callback):
    """Epoch and batch bars with ETA and the running (smoothed) training loss."""

    order = 70

    def before_fit(self):
        self.bars = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                             TimeRemainingColumn(), TextColumn("{task.fields[loss]}"), console=console,
                             transient=True)
        self.bars.start()
        self.epoch_task = self.bars.add_task("epoch", total=self.n_epoch, loss="")
        self.batch_task = self.bars.add_task("train", total=1, loss="")
        self.shown_at = 0.0

    def before_epoch(self):
        self.bars.update(self.epoch_task, completed=self.epoch)

    def before_train(self):
        self.bars.reset(self.batch_task, total=len(self.dl), description="train")

    def before_validate(self):
        self.bars.reset(self.batch_task, total=len(self.dl), description="valid", loss="")

    def after_batch(self):
        now = time.monotonic()
        fields = {}
        if self.training and now - self.shown_at > REFRESH_SECONDS:
            fields["loss"] = f"loss {float(self.learn.smooth_loss):.4f}"
            self.shown_at = now
        self.bars.update(self.batch_task, advance=1, **fields)

    def after_fit(self):
        self.bars.stop()
