"""Disagreement of tiled `predict` with whole-image inference on a mosaic of validation images.

The mosaic (about 1500×1100) tiles the split's images row by row; the whole mosaic is predicted in
one pass (tile larger than the mosaic) and with `--tile` windows, and the share of pixels whose class
differs is printed, with the share of those within 8 px of an inner window edge.

Usage: python tools/tile_agreement.py WEIGHTS DATA_ROOT [TILE [OVERLAP]]
"""

import sys
from pathlib import Path

import numpy as np
from PIL import Image

from fastseg.constants import DEFAULT_OVERLAP
from fastseg.data.splits import DataRoots, build_split
from fastseg.evaluate.predict import predict_image, tile_starts
from fastseg.models.weights import load_model

MOSAIC = (1100, 1500)  # H, W


def mosaic(paths: list[Path]) -> np.ndarray:
    """H×W×3 uint8: the images placed left to right, row by row, until MOSAIC is full."""
    out = np.zeros((*MOSAIC, 3), np.uint8)
    top = left = row_h = 0
    for path in paths * 100:
        img = np.asarray(Image.open(path).convert("RGB"))
        h, w = img.shape[:2]
        if left + w > MOSAIC[1]:
            top, left, row_h = top + row_h, 0, 0
        if top >= MOSAIC[0]:
            break
        part = img[: MOSAIC[0] - top, : MOSAIC[1] - left]
        out[top:top + part.shape[0], left:left + part.shape[1]] = part
        left, row_h = left + w, max(row_h, h)
    return out


def near_inner_edges(h: int, w: int, tile: int, overlap: int, band: int = 8) -> np.ndarray:
    near = np.zeros((h, w), bool)
    for start in tile_starts(h, tile, overlap):
        for edge in (start, start + tile):
            if 0 < edge < h:
                near[max(0, edge - band): edge + band] = True
    for start in tile_starts(w, tile, overlap):
        for edge in (start, start + tile):
            if 0 < edge < w:
                near[:, max(0, edge - band): edge + band] = True
    return near


def main(weights: str, root: str, tile: int = 256, overlap: int = DEFAULT_OVERLAP) -> None:
    model, _ = load_model(Path(weights), "cpu")
    roots = DataRoots(Path(root) / "VOCdevkit" / "VOC2012", Path(root) / "benchmark_RELEASE" / "dataset")
    image = mosaic([s.image for s in build_split("voc12-val", roots)])
    whole = predict_image(model, image, "cpu", tile=max(image.shape))
    tiled = predict_image(model, image, "cpu", tile=tile, overlap=overlap)
    differ = whole != tiled
    near = near_inner_edges(*differ.shape, tile, overlap)
    print(f"{image.shape[1]}×{image.shape[0]} mosaic, tile {tile}: {differ.mean():.2%} of pixels differ; "
          f"{(differ & near).sum() / max(differ.sum(), 1):.0%} of them within 8 px of an inner window edge")


if __name__ == "__main__":
    main(*sys.argv[1:3], *(int(a) for a in sys.argv[3:]))
