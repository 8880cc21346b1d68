"""`fit --log tensorboard`: the epoch's metrics.csv row as TensorBoard scalars, and a prediction grid.

Written with `torch.utils.tensorboard` into `<run>/tensorboard/` (open it with `tensorboard --logdir
runs`), by rank 0 only. Scalars, each at step = epoch: `loss/train`, `loss/valid`, `metrics/<name>`
for miou, fg_miou, pixel_acc, mean_acc and fw_iou, `iou/<class>` for every class, and `lr`. The
image `predictions` shows the first validation images (up to GRID_IMAGES) as rows of image | truth |
prediction, coloured in the dataset's palette. tensorboard is an optional extra:
`pip install 'fastseg[tensorboard]'`.
"""

from pathlib import Path

import numpy as np
import torch
from fastai.callback.core import Callback

from fastseg.classes import ClassSet
from fastseg.errors import FastsegError
from fastseg.evaluate.metrics import SCORE_KEYS

TENSORBOARD_DIR = "tensorboard"
GRID_IMAGES = 4


def require_tensorboard() -> None:
    """Raises FastsegError (one sentence, before anything is written) when tensorboard is not installed."""
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        raise FastsegError("--log tensorboard needs the tensorboard package; install it with "
                           "pip install 'fastseg[tensorboard]' (or pass --log none).") from None


def scalar_tags(row: dict, classes: ClassSet) -> dict[str, float]:
    """TensorBoard tag → value of one metrics.csv row."""
    tags = {"loss/train": row["train_loss"], "loss/valid": row["valid_loss"], "lr": row["lr"]}
    tags |= {f"metrics/{key}": row[key] for key in SCORE_KEYS}
    return tags | {f"iou/{name}": row[f"iou_{name}"] for name in classes.names}


def prediction_grid(images: np.ndarray, truth: np.ndarray, pred: np.ndarray, palette: list[int]) -> np.ndarray:
    """Rows of image | truth | prediction: N×H×W×3 uint8 images, N×H×W class ids → (N·H)×(3·W)×3 uint8."""
    from fastseg.evaluate.figures import colorize
    rows = [np.concatenate([img, colorize(t, palette), colorize(p, palette)], axis=1)
            for img, t, p in zip(images, truth, pred, strict=True)]
    return np.concatenate(rows, axis=0)


class TensorBoardLog(Callback):
    """After RunRecorder (order 60) has written an epoch's row: its scalars and the prediction grid."""

    order = 61

    def __init__(self, run_dir: Path, recorder, classes: ClassSet):
        self.folder, self.run_recorder, self.classes = Path(run_dir) / TENSORBOARD_DIR, recorder, classes
        self.writer = None

    def before_fit(self):
        from torch.utils.tensorboard import SummaryWriter
        self.writer = SummaryWriter(log_dir=str(self.folder))
        self.logged = len(self.run_recorder.rows)  # a resumed run's earlier epochs are in the file already
        x, y = self.dls.valid.one_batch()
        self.grid_x = x[:GRID_IMAGES].as_subclass(torch.Tensor)
        self.grid_y = y[:GRID_IMAGES].as_subclass(torch.Tensor)

    def after_epoch(self):
        self.log_rows()

    def log_rows(self):
        """Log every row RunRecorder wrote since the last call (and the grid at the newest epoch)."""
        rows = self.run_recorder.rows
        if len(rows) <= self.logged:
            return
        for row in rows[self.logged:]:
            for tag, value in scalar_tags(row, self.classes).items():
                self.writer.add_scalar(tag, value, row["epoch"])
        self.writer.add_image("predictions", self.grid(), rows[-1]["epoch"], dataformats="HWC")
        self.writer.flush()
        self.logged = len(rows)

    def grid(self) -> np.ndarray:
        from fastseg.evaluate.figures import denormalize
        training = self.model.training
        self.model.eval()
        with torch.no_grad():
            pred = self.model(self.grid_x).argmax(1).cpu().numpy()
        self.model.train(training)
        return prediction_grid(denormalize(self.grid_x), self.grid_y.cpu().numpy(), pred, self.classes.palette())

    def after_fit(self):
        """Also after early stopping, which RunRecorder raises in the epoch's after_epoch before this
        callback's: that epoch's row is logged here."""
        if self.writer is not None:
            self.log_rows()
            self.writer.close()
