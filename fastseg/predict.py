"""`fastseg predict`: VOC-palette masks and overlays for image files, at each image's size.

Images whose longer side exceeds `tile` are predicted by overlapping tiles (sliding window) whose
probabilities are averaged, so memory stays bounded whatever the image size.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from rich.progress import track

from fastseg.console import console
from fastseg.constants import IMAGENET_MEAN, IMAGENET_STD, STRIDE
from fastseg.data.masks import write_palette_png
from fastseg.data.transforms import padded_size
from fastseg.errors import FastsegError
from fastseg.plots import overlay

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
DEFAULT_TILE = 512     # tiles of 512×512 px: one VOC image fits in a single tile
DEFAULT_OVERLAP = 128  # pixels shared by neighbouring tiles; their probabilities are averaged


@dataclass
class PredictReport:
    written: list[Path]
    failed: list[tuple[Path, str]]


def list_images(inputs: list[Path]) -> list[Path]:
    """Image files named directly or found (recursively) in folders, sorted."""
    found = []
    for item in inputs:
        if item.is_dir():
            found += sorted(p for p in item.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        elif item.exists():
            found.append(item)
        else:
            raise FastsegError(f"{item} does not exist; pass image files or folders of images.")
    return found


def to_input(image: np.ndarray, device) -> torch.Tensor:
    """H×W×3 uint8 → 1×3×H×W normalised float tensor."""
    x = torch.from_numpy(image).to(device).permute(2, 0, 1).float().div(255)
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(3, 1, 1)
    return ((x - mean) / std).unsqueeze(0)


def predict_padded(model, x: torch.Tensor) -> torch.Tensor:
    """Probabilities 1×C×H×W for 1×3×H×W input, padded (bottom/right, zeros) to a multiple of 32."""
    h, w = x.shape[-2:]
    ph, pw = padded_size([(h, w)], STRIDE)
    padded = torch.nn.functional.pad(x, (0, pw - w, 0, ph - h))
    return model(padded)[..., :h, :w].float().softmax(1)


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets covering [0, length) with tiles of `tile` overlapping by at least `overlap`."""
    if length <= tile:
        return [0]
    step = tile - overlap
    starts = list(range(0, length - tile, step)) + [length - tile]
    return sorted(set(starts))


def predict_tiled(model, x: torch.Tensor, tile: int, overlap: int) -> torch.Tensor:
    """Probabilities 1×C×H×W averaged over overlapping tile×tile windows."""
    h, w = x.shape[-2:]
    total, count = None, torch.zeros(1, 1, h, w, device=x.device)
    for top in tile_starts(h, tile, overlap):
        for left in tile_starts(w, tile, overlap):
            window = (..., slice(top, top + tile), slice(left, left + tile))
            prob = predict_padded(model, x[window])
            if total is None:
                total = torch.zeros(1, prob.shape[1], h, w, device=x.device)
            total[window] += prob
            count[window] += 1
    return total / count


def predict_image(model, image: np.ndarray, device, tile: int = DEFAULT_TILE,
                  overlap: int = DEFAULT_OVERLAP) -> np.ndarray:
    """H×W×3 uint8 image → H×W uint8 class ids (tiled when the longer side exceeds `tile`)."""
    x = to_input(image, device)
    with torch.no_grad():
        prob = predict_tiled(model, x, tile, overlap) if max(image.shape[:2]) > tile else predict_padded(model, x)
    return prob.argmax(1)[0].byte().cpu().numpy()


def predict_files(model, inputs: list[Path], out: Path, device, tile: int = DEFAULT_TILE,
                  overlap: int = DEFAULT_OVERLAP) -> PredictReport:
    """Write `<name>.png` (palette mask) and `<name>_overlay.jpg` for each image into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    report = PredictReport([], [])
    model = model.to(device).eval()
    for path in track(list_images(inputs), description="predict", console=console, disable=not console.is_terminal):
        try:
            with Image.open(path) as img:
                image = np.asarray(img.convert("RGB"))
        except (OSError, UnidentifiedImageError) as err:
            report.failed.append((path, type(err).__name__))
            continue
        mask = predict_image(model, image, device, tile, overlap)
        write_palette_png(mask, out / f"{path.stem}.png")
        Image.fromarray(overlay(image, mask)).save(out / f"{path.stem}_overlay.jpg", quality=90)
        report.written.append(out / f"{path.stem}.png")
    return report
