"""VOC segmentation metrics from one streaming confusion matrix, ignoring void (255) pixels.

Every number (mIoU, foreground mIoU, pixel and mean accuracy, frequency-weighted IoU, per-class
IoU) comes from the C×C matrix, accumulated on the model's device with `bincount`. A class absent
from both prediction and truth over the whole set has no IoU and is left out of the means (it is
NaN in the per-class list); a class with no true pixels is left out of the mean accuracy.
"""

import math

import torch
from fastai.learner import Metric

from fastseg.classes import VOC, ClassSet
from fastseg.constants import IGNORE_INDEX, NUM_CLASSES
from fastseg.devices.collectives import all_reduce_sum

SCORE_KEYS = ("miou", "fg_miou", "pixel_acc", "mean_acc", "fw_iou")


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int = NUM_CLASSES,
                     ignore_index: int = IGNORE_INDEX, per_sample: bool = False) -> torch.Tensor:
    """Count (truth, prediction) pairs in one bincount.

    Args:
        pred: integer class ids (e.g. N×H×W).
        target: integer true classes of pred's shape, on pred's device.
        per_sample: one matrix per entry of the first dimension instead of one in all.
    Returns:
        C×C (or N×C×C) int64 on that device; rows are true classes, columns predicted classes.
        Pixels whose target is `ignore_index` are not counted: they go to one extra bin that is
        dropped, which avoids boolean indexing (a device→host sync on CUDA).
    """
    n = pred.shape[0] if per_sample else 1
    index = target.long() * num_classes + pred.long()
    if per_sample:
        sample = torch.arange(n, device=pred.device).view(n, *[1] * (pred.dim() - 1))
        index = index + sample * num_classes ** 2
    void_bin = n * num_classes ** 2
    index = torch.where(target == ignore_index, void_bin, index)
    counts = torch.bincount(index.flatten(), minlength=void_bin + 1)[:void_bin]
    return counts.view(n, num_classes, num_classes) if per_sample else counts.view(num_classes, num_classes)


def class_iou(cm: torch.Tensor) -> torch.Tensor:
    """Per-class IoU of a C×C (or …×C×C) confusion matrix, float64, NaN where the class is absent
    from both truth and prediction."""
    cm = cm.double()
    tp = cm.diagonal(dim1=-2, dim2=-1)
    union = cm.sum(-1) + cm.sum(-2) - tp
    return torch.where(union > 0, tp / union.clamp(min=1), torch.nan)


def truth_shares(cm: torch.Tensor) -> torch.Tensor:
    """C×C float64: each row of the confusion matrix divided by its sum (the share of the true
    class's pixels given each prediction); rows of absent classes stay 0."""
    return cm.double() / cm.sum(1, keepdim=True).clamp(min=1)


def scores(cm: torch.Tensor, background: bool = True) -> dict:
    """All metrics of a C×C confusion matrix (rows truth, columns prediction).

    Returns:
        {"miou", "fg_miou" (classes 1.., i.e. without background; every class when class 0 is not
        background, `background=False`), "pixel_acc", "mean_acc", "fw_iou"} as floats, plus "iou"
        and "acc": per-class lists with NaN where undefined.
    """
    cm = cm.double().cpu()
    tp, truth = cm.diag(), cm.sum(1)
    iou = class_iou(cm)
    acc = torch.where(truth > 0, tp / truth.clamp(min=1), torch.nan)
    total = cm.sum()
    freq = truth / total.clamp(min=1)
    return {"miou": _nanmean(iou), "fg_miou": _nanmean(iou[1:] if background else iou),
            "pixel_acc": float(tp.sum() / total) if total > 0 else math.nan,
            "mean_acc": _nanmean(acc), "fw_iou": float(torch.nansum(freq * iou)),
            "iou": iou.tolist(), "acc": acc.tolist()}


def _nanmean(x: torch.Tensor) -> float:
    valid = ~torch.isnan(x)
    return float(x[valid].mean()) if valid.any() else math.nan


class ConfusionState:
    """A confusion matrix shared by several fastai metrics, so each batch is counted once."""

    def __init__(self, num_classes: int = NUM_CLASSES, background: bool = True):
        self.num_classes, self.background = num_classes, background
        self.reset()

    def reset(self):
        self.cm: torch.Tensor | None = None
        self._scores: dict | None = None

    def update(self, logits: torch.Tensor, target: torch.Tensor):
        """logits: N×C×H×W; target: N×H×W with 255 for void."""
        batch = confusion_matrix(logits.argmax(1), target, self.num_classes)
        self.cm = batch if self.cm is None else self.cm + batch
        self._scores = None

    def total(self) -> torch.Tensor:
        """The matrix summed over processes (C×C int64)."""
        cm = self.cm if self.cm is not None else torch.zeros(self.num_classes, self.num_classes, dtype=torch.long)
        return all_reduce_sum(cm)

    def scores(self) -> dict:
        if self._scores is None:
            self._scores = scores(self.total(), self.background)
        return self._scores


class ScoreMetric(Metric):
    """One number of `ConfusionState.scores()` as a fastai metric; only the owner accumulates."""

    def __init__(self, name: str, state: ConfusionState, owner: bool, index: int | None = None,
                 class_name: str | None = None):
        self._name, self.state, self.owner, self.index, self.class_name = name, state, owner, index, class_name

    def reset(self):
        if self.owner:
            self.state.reset()

    def accumulate(self, learn):
        if self.owner:
            self.state.update(learn.pred, learn.yb[0])

    @property
    def value(self):
        result = self.state.scores()
        return result[self._name] if self.index is None else result["iou"][self.index]

    @property
    def name(self):
        return self._name if self.index is None else f"iou_{self.class_name}"


def seg_metrics(classes: ClassSet = VOC, per_class: bool = False) -> list[ScoreMetric]:
    """fastai metrics miou, fg_miou, pixel_acc, mean_acc, fw_iou (and per-class IoU, named
    iou_<class>) over one shared confusion matrix of the dataset's classes."""
    state = ConfusionState(classes.num, classes.background)
    metrics = [ScoreMetric(key, state, owner=(i == 0)) for i, key in enumerate(SCORE_KEYS)]
    if per_class:
        metrics += [ScoreMetric("iou", state, False, c, name) for c, name in enumerate(classes.names)]
    return metrics
