"""Evaluation figures: normalised confusion matrix and random / best / worst prediction grids."""

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from fastseg.constants import IGNORE_INDEX, VOC_CLASSES
from fastseg.metrics import truth_shares
from fastseg.plots import colorize, save_figure


def plot_confusion(cm: torch.Tensor, path: Path) -> Path:
    """Row-normalised confusion matrix (truth rows, prediction columns)."""
    rows = truth_shares(cm).numpy()
    fig, ax = plt.subplots(figsize=(9, 8))
    image = ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    ticks = range(len(VOC_CLASSES))
    ax.set_xticks(ticks, VOC_CLASSES, rotation=90)
    ax.set_yticks(ticks, VOC_CLASSES)
    ax.set(xlabel="predicted", ylabel="truth", title="Confusion matrix (each row sums to 1)")
    fig.colorbar(image, ax=ax, fraction=0.046)
    return save_figure(fig, path)


def error_map(truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """H×W×3: wrong pixels red, right ones dark grey, void white."""
    out = np.full((*truth.shape, 3), 60, np.uint8)
    out[(truth != pred) & (truth != IGNORE_INDEX)] = (220, 30, 30)
    out[truth == IGNORE_INDEX] = (255, 255, 255)
    return out


def plot_gallery(entries: list, path: Path, title: str) -> Path:
    """Rows of image | truth | prediction | error map; entries are (mIoU, index, (img, truth, pred))."""
    n = max(1, len(entries))
    fig, axes = plt.subplots(n, 4, figsize=(10, 2.6 * n), squeeze=False)
    for row, (score, _, (img, truth, pred)) in enumerate(entries):
        panels = (img, colorize(truth), colorize(pred), error_map(truth, pred))
        for col, (panel, name) in enumerate(zip(panels, ("image", "truth", "prediction", "errors"), strict=True)):
            axes[row, col].imshow(panel)
            axes[row, col].set_title(f"{name}" + (f" (mIoU {score:.2f})" if col == 0 else ""), fontsize=9)
    for ax in axes.flat:
        ax.axis("off")
    fig.suptitle(title)
    return save_figure(fig, path)
