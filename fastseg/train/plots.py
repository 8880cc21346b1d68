"""PNG figures of training: the loss and metric curves of a run, and the lr_find plot."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from fastseg.io.atomic import save_figure  # noqa: E402

CURVE_METRICS = ("miou", "fg_miou", "pixel_acc", "mean_acc")


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
