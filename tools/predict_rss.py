"""Peak resident memory of `predict_image` on one synthetic image of N megapixels (4:3), in a fresh
process so that each figure is that image's alone.

Usage: python tools/predict_rss.py MEGAPIXELS [MODEL [TILE]]
MODEL: segnet (width 1/8, the demo's; slow on a CPU) or pixel (a 1×1 convolution to 21 classes:
the same tiling and buffers at a fraction of the compute, for memory figures of large images).
"""

import resource
import sys
import time

import numpy as np
import torch

from fastseg.constants import DEFAULT_TILE
from fastseg.evaluate.predict import predict_image
from fastseg.models import create_model


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(megapixels: float, model_name: str = "pixel", tile: int = DEFAULT_TILE) -> None:
    torch.manual_seed(0)
    model = (create_model("segnet", width=0.125) if model_name == "segnet" else torch.nn.Conv2d(3, 21, 1)).eval()
    h = int((megapixels * 1e6 * 3 / 4) ** 0.5)
    w = int(h * 4 / 3)
    image = np.random.default_rng(0).integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    base = rss_mib()
    start = time.perf_counter()
    predict_image(model, image, "cpu", tile=tile)
    print(f"{h * w / 1e6:.1f} MP ({w}×{h}), {model_name}, tile {tile}: peak RSS {rss_mib():.0f} MiB, "
          f"{rss_mib() - base:.0f} MiB above the process with the image loaded ({image.nbytes / 2**20:.0f} MiB), "
          f"{time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main(float(sys.argv[1]), *sys.argv[2:3], *(int(a) for a in sys.argv[3:]))
