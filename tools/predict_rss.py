"""Peak resident memory of `predict_image` on one synthetic image of N megapixels (4:3), in a fresh
process so that each figure is that image's alone.

Usage: python tools/predict_rss.py MEGAPIXELS [TILE]   (prints megapixels, peak RSS, seconds)
"""

import resource
import sys
import time

import numpy as np
import torch

from fastseg.models import create_model
from fastseg.predict import DEFAULT_TILE, predict_image


def main(megapixels: float, tile: int = DEFAULT_TILE) -> None:
    torch.manual_seed(0)
    model = create_model("segnet", width=0.125).eval()
    h = int((megapixels * 1e6 * 3 / 4) ** 0.5)
    w = int(h * 4 / 3)
    image = np.random.default_rng(0).integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    predict_image(model, image, "cpu", tile=tile)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{h * w / 1e6:.1f} MP ({w}×{h}): peak RSS {peak:.0f} MiB (image {image.nbytes / 2**20:.0f} MiB, "
          f"before predicting {base:.0f} MiB), {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main(float(sys.argv[1]), *(int(a) for a in sys.argv[2:]))
