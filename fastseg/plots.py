"""PNG figures: training curves and the lr_find plot."""

from pathlib import Path

import matplotlib
import numpy as np
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from fastseg.atomic import atomic_write  # noqa: E402

CURVE_METRICS = ("miou", "fg_miou", "pixel_acc", "mean_acc")


def save_figure(fig, path: Path) -> Path:
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))
    plt.close(fig)
    return path


def plot_curves(rows: list[dict], path: Path) -> Path:
    """Loss (train, valid) and metric curves per epoch from metrics.csv rows."""
    fig, (loss_ax, met_ax) = plt.subplots(1, 2, figsize=(10, 3.8))
    epochs = [r["epoch"] for r in rows]
    for key in ("train_loss", "valid_loss"):
        loss_ax.plot(epochs, [r[key] for r in rows], marker=".", label=key)
    loss_ax.set(xlabel="epoch", ylabel="loss", title="Loss")
    for key in CURVE_METRICS:
        met_ax.plot(epochs, [r[key] for r in rows], marker=".", label=key)
    met_ax.set(xlabel="epoch", ylim=(0, 1), title="Validation metrics")
    for ax in (loss_ax, met_ax):
        ax.grid(alpha=0.3)
        ax.legend()
    return save_figure(fig, path)


def plot_lr_find(lrs, losses, suggestions: dict, path: Path) -> Path:
    """Loss against learning rate (log scale) with the suggestions marked."""
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(lrs, losses)
    ax.set(xscale="log", xlabel="learning rate", ylabel="loss", title="lr_find")
    for (name, lr), colour in zip(suggestions.items(), ("C1", "C2", "C3", "C4"), strict=False):
        ax.axvline(lr, color=colour, linestyle="--", label=f"{name} {lr:.2e}")
    ax.legend()
    return save_figure(fig, path)


def colorize(mask) -> np.ndarray:
    """H×W class ids (255 void) → H×W×3 uint8 in the VOC palette."""
    from fastseg.constants import voc_palette
    palette = np.array(voc_palette(), dtype=np.uint8).reshape(256, 3)
    return palette[np.asarray(mask, dtype=np.uint8)]


def denormalize(x) -> np.ndarray:
    """N×3×H×W ImageNet-normalised tensor → N×H×W×3 uint8."""
    from fastseg.constants import IMAGENET_MEAN, IMAGENET_STD
    x = torch.as_tensor(x).detach().float().cpu()
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return ((x * std + mean).clamp(0, 1) * 255).byte().permute(0, 2, 3, 1).numpy().astype(np.uint8)


def overlay(image, mask, alpha: float = 0.5) -> np.ndarray:
    """H×W×3 uint8 image with the VOC-coloured mask blended over it (void shown in its colour too)."""
    blend = image.astype(np.float32) * (1 - alpha) + colorize(mask).astype(np.float32) * alpha
    return blend.astype(np.uint8)


def plot_batch(x, y, path: Path, title: str) -> Path:
    """A grid of samples: image | mask overlaid, for a normalised batch x (N×3×H×W) and y (N×H×W)."""
    images, masks = denormalize(x), y.detach().cpu().numpy()
    n = len(images)
    fig, axes = plt.subplots(2, n, figsize=(2.2 * n, 4.6), squeeze=False)
    for i in range(n):
        axes[0, i].imshow(images[i])
        axes[1, i].imshow(overlay(images[i], masks[i]))
        for ax in axes[:, i]:
            ax.axis("off")
    axes[0, 0].set_title("image", loc="left")
    axes[1, 0].set_title("mask (VOC palette)", loc="left")
    fig.suptitle(title)
    return save_figure(fig, path)
