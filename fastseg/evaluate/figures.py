"""PNG figures of predictions: colourised masks, overlays, the batch grid of `show-batch`, the
normalised confusion matrix and the random / best / worst prediction grids of `evaluate`."""

from pathlib import Path

import matplotlib
import numpy as np
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from fastseg.constants import IGNORE_INDEX, VOC_CLASSES, voc_palette  # noqa: E402
from fastseg.evaluate.metrics import truth_shares  # noqa: E402
from fastseg.io.atomic import save_figure  # noqa: E402


def colorize(mask, palette: list[int] | None = None) -> np.ndarray:
    """H×W class ids (255 void) → H×W×3 uint8 in `palette` (768 ints, `ClassSet.palette()`; default VOC's)."""
    table = np.array(palette or voc_palette(), dtype=np.uint8).reshape(256, 3)
    return table[np.asarray(mask, dtype=np.uint8)]


def denormalize(x) -> np.ndarray:
    """N×3×H×W ImageNet-normalised tensor → N×H×W×3 uint8."""
    from fastseg.data.transforms import denormalise
    x = torch.as_tensor(x).detach().float().cpu()
    return (denormalise(x).clamp(0, 1) * 255).byte().permute(0, 2, 3, 1).numpy().astype(np.uint8)


def overlay(image, mask, alpha: float = 0.5, palette: list[int] | None = None) -> np.ndarray:
    """H×W×3 uint8 image with the mask, coloured in `palette`, blended over it (void in its colour too)."""
    blend = image.astype(np.float32) * (1 - alpha) + colorize(mask, palette).astype(np.float32) * alpha
    return blend.astype(np.uint8)


def plot_batch(x, y, path: Path, title: str, palette: list[int] | None = None) -> Path:
    """A grid of samples: image | mask overlaid (in `palette`), for a normalised batch x (N×3×H×W)
    and y (N×H×W)."""
    images, masks = denormalize(x), y.detach().cpu().numpy()
    n = len(images)
    fig, axes = plt.subplots(2, n, figsize=(2.2 * n, 4.6), squeeze=False)
    for i in range(n):
        axes[0, i].imshow(images[i])
        axes[1, i].imshow(overlay(images[i], masks[i], palette=palette))
        for ax in axes[:, i]:
            ax.axis("off")
    axes[0, 0].set_title("image", loc="left")
    axes[1, 0].set_title("mask", loc="left")
    fig.suptitle(title)
    return save_figure(fig, path)


def plot_confusion(cm: torch.Tensor, path: Path, names: tuple[str, ...] = VOC_CLASSES) -> Path:
    """Row-normalised confusion matrix (truth rows, prediction columns), labelled with class `names`."""
    rows = truth_shares(cm).numpy()
    fig, ax = plt.subplots(figsize=(9, 8))
    image = ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    ticks = range(len(names))
    ax.set_xticks(ticks, names, rotation=90)
    ax.set_yticks(ticks, names)
    ax.set(xlabel="predicted", ylabel="truth", title="Confusion matrix (each row sums to 1)")
    fig.colorbar(image, ax=ax, fraction=0.046)
    return save_figure(fig, path)


def error_map(truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """H×W×3: wrong pixels red, right ones dark grey, void white."""
    out = np.full((*truth.shape, 3), 60, np.uint8)
    out[(truth != pred) & (truth != IGNORE_INDEX)] = (220, 30, 30)
    out[truth == IGNORE_INDEX] = (255, 255, 255)
    return out


def plot_gallery(entries: list, path: Path, title: str, palette: list[int] | None = None,
                 score_name: str = "mIoU") -> Path:
    """Rows of image | truth | prediction (coloured in `palette`) | error map; entries are
    (score, index, (img, truth, pred)), the score shown as `score_name`."""
    n = max(1, len(entries))
    fig, axes = plt.subplots(n, 4, figsize=(10, 2.6 * n), squeeze=False)
    for row, (score, _, (img, truth, pred)) in enumerate(entries):
        panels = (img, colorize(truth, palette), colorize(pred, palette), error_map(truth, pred))
        for col, (panel, name) in enumerate(zip(panels, ("image", "truth", "prediction", "errors"), strict=True)):
            axes[row, col].imshow(panel)
            axes[row, col].set_title(f"{name}" + (f" ({score_name} {score:.2f})" if col == 0 else ""), fontsize=9)
    for ax in axes.flat:
        ax.axis("off")
    fig.suptitle(title)
    return save_figure(fig, path)


def plot_reliability(calibration: dict, path: Path) -> Path:
    """reliability.png: per confidence bin, the accuracy of its pixels against the diagonal of perfect
    calibration, with the share of pixels per bin below; `calibration` as `CalibrationStats.summary()`."""
    bins = calibration["bins"]
    centres = [(b["lo"] + b["hi"]) / 2 for b in bins]
    width = bins[0]["hi"] - bins[0]["lo"]
    accuracy = [b["accuracy"] or 0.0 for b in bins]
    total = max(1, calibration["pixels"])
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(5, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    top.bar(centres, accuracy, width=width * 0.95, color="#4c72b0", label="accuracy")
    top.plot([0, 1], [0, 1], "k--", lw=1, label="perfectly calibrated")
    top.set(ylabel="accuracy", ylim=(0, 1), title=f"Reliability (ECE {calibration['ece']:.3f}, NLL "
            f"{calibration['nll']:.3f}, T {calibration.get('temperature', 1.0):.2f})")
    top.legend(loc="upper left", fontsize=8)
    bottom.bar(centres, [b["pixels"] / total for b in bins], width=width * 0.95, color="#999999")
    bottom.set(xlabel="confidence (max softmax)", ylabel="pixels", xlim=(0, 1))
    return save_figure(fig, path)


def plot_uncertainty(image: np.ndarray, mask: np.ndarray, maps: dict, path: Path,
                     palette: list[int] | None = None) -> Path:
    """One row: image | prediction (in `palette`) | confidence (max softmax, dark = unsure) | entropy
    (bright = unsure); `maps` as `predict.uncertainty_maps` gives them (H×W each)."""
    aspect = image.shape[0] / max(image.shape[1], 1)
    fig, axes = plt.subplots(1, 4, figsize=(16, 4 * aspect + 0.6))
    axes[0].imshow(image)
    axes[1].imshow(colorize(mask, palette))
    shown = axes[2].imshow(maps["confidence"], cmap="viridis", vmin=0, vmax=1)
    fig.colorbar(shown, ax=axes[2], fraction=0.046)
    shown = axes[3].imshow(maps["entropy"], cmap="magma", vmin=0)
    fig.colorbar(shown, ax=axes[3], fraction=0.046)
    for ax, title in zip(axes, ("image", "prediction", "confidence", "entropy (nats)"), strict=True):
        ax.set_title(title)
        ax.axis("off")
    return save_figure(fig, path)


def plot_compare(curves: list[list[float]], names: list[str], table: list[dict], path: Path) -> Path:
    """compare.png: validation mIoU per epoch of every run, overlaid, and each run's per-class IoU
    difference to the first run as bars (`table` rows as `compare.score_table` gives them)."""
    fig, (curve_ax, bar_ax) = plt.subplots(1, 2, figsize=(14, 4.5), gridspec_kw={"width_ratios": [1, 2]})
    for curve, name in zip(curves, names, strict=True):
        curve_ax.plot(range(1, len(curve) + 1), curve, marker=".", label=name)
    curve_ax.set(xlabel="epoch", ylabel="validation mIoU", title="Validation mIoU", ylim=(0, 1))
    curve_ax.grid(alpha=0.3)
    curve_ax.legend()
    classes = [row for row in table if row["metric"].startswith("IoU ")]
    x = np.arange(len(classes))
    width = 0.8 / max(1, len(names) - 1)
    for k, name in enumerate(names[1:]):
        diffs = [np.nan_to_num(row["values"][k + 1] - row["values"][0]) for row in classes]
        bar_ax.bar(x + k * width, diffs, width, label=f"{name} − {names[0]}")
    bar_ax.axhline(0, color="black", linewidth=0.8)
    bar_ax.set_xticks(x + width * (len(names) - 2) / 2, [row["metric"][4:] for row in classes], rotation=60, ha="right")
    bar_ax.set(ylabel="IoU difference", title=f"Per-class IoU against {names[0]}")
    bar_ax.grid(alpha=0.3, axis="y")
    bar_ax.legend()
    return save_figure(fig, path)
