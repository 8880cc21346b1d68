"""Time the preflight on a dataset: cold (no cache) and warm (the cached pass), for the splits of a fit.

Usage: python tools/preflight_cost.py DATA_ROOT [TRAIN_SPLIT VALID_SPLIT]
(DATA_ROOT holds VOCdevkit/ and benchmark_RELEASE/, as `fastseg synth` writes them.)
"""

import shutil
import sys
import time
from pathlib import Path

from fastseg.data.checks import CACHE_DIR, preflight
from fastseg.data.splits import DataRoots, build_split


def main(root: Path, train: str = "train-aug", valid: str = "voc12-val") -> None:
    roots = DataRoots.under(root)
    splits = {name: build_split(name, roots) for name in (train, valid)}
    files = 2 * len({s.image for ss in splits.values() for s in ss})
    shutil.rmtree(root / "VOCdevkit" / CACHE_DIR, ignore_errors=True)
    for label in ("cold", "warm"):
        start = time.perf_counter()
        preflight(splits, roots, log=lambda _: None)
        print(f"{label}: {time.perf_counter() - start:.2f} s for {files} files ({train} + {valid})")


if __name__ == "__main__":
    main(Path(sys.argv[1]), *sys.argv[2:])
