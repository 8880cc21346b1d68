"""Statistics of a training split: per-class pixel counts (cached beside the data), the
median-frequency class weights built from them, and class-weight files."""

import hashlib
import json
from pathlib import Path

import numpy as np

from fastseg.config import DataConfig
from fastseg.console import progress_bar
from fastseg.constants import IGNORE_INDEX, NUM_CLASSES
from fastseg.data.samples import Sample, sample_mask_array
from fastseg.data.splits import CACHE_DIR, build_split, data_dir
from fastseg.errors import FastsegError
from fastseg.io.atomic import atomic_write


def training_class_pixels(data: DataConfig, num_classes: int = NUM_CLASSES) -> tuple[np.ndarray, np.ndarray]:
    """Per class of the training split: its pixels and the pixels of the images holding it, two
    int64 arrays of length num_classes (one pass over the masks, then cached beside the data)."""
    samples = build_split(data.train_split, data.roots)
    with progress_bar("class frequencies", total=len(samples)) as advance:
        return cached_class_pixels(samples, class_stats_dir(data), num_classes, progress=advance)


def class_stats_dir(data: DataConfig) -> Path:
    """Where the class-statistics cache lives: beside the data (`VOCdevkit/fastseg-cache` for VOC,
    `DIR/fastseg-cache` for a folder dataset)."""
    return data_dir(data.roots) / CACHE_DIR


def class_pixel_counts(samples: list[Sample], num_classes: int = NUM_CLASSES, progress=None):
    """Per class: (pixels of the class, pixels of the images that contain it); void not counted.

    Returns two int64 arrays of length num_classes.
    """
    pixels = np.zeros(num_classes, np.int64)
    image_pixels = np.zeros(num_classes, np.int64)
    for sample in samples:
        mask = sample_mask_array(sample)
        counts = np.bincount(mask[mask != IGNORE_INDEX].ravel(), minlength=num_classes)[:num_classes]
        pixels += counts
        image_pixels += (counts > 0) * int(counts.sum())
        if progress:
            progress()
    return pixels, image_pixels


def median_frequency_weights(pixels: np.ndarray, image_pixels: np.ndarray) -> np.ndarray:
    """Eigen & Fergus median-frequency balancing: w_c = median(f) / f_c with
    f_c = pixels of c / pixels of images containing c. Classes never seen get weight 0."""
    seen = image_pixels > 0
    freq = np.where(seen, pixels / np.maximum(image_pixels, 1), 0.0)
    median = np.median(freq[seen])
    return np.where(freq > 0, median / np.maximum(freq, 1e-12), 0.0)


def cached_class_pixels(samples: list[Sample], cache_dir: Path, num_classes: int = NUM_CLASSES,
                        progress=None) -> tuple[np.ndarray, np.ndarray]:
    """`class_pixel_counts` of `samples`, computed once per split content, class count and colour table
    (RGB masks) and cached as JSON in `cache_dir` (a read-only folder only costs recomputing next time)."""
    listing = "\n".join(str(s.mask) for s in samples)
    if num_classes != NUM_CLASSES:  # VOC's key stays as it was, so existing caches still count
        listing += f"\n{num_classes} classes"
    if samples and samples[0].colours:  # recoloured classes count other pixels
        listing += f"\n{samples[0].colours}"
    key = hashlib.sha1(listing.encode()).hexdigest()[:16]
    cache = cache_dir / f"class-pixels-{key}.json"
    if cache.is_file():
        saved = json.loads(cache.read_text())
        return np.array(saved["pixels"], np.int64), np.array(saved["image_pixels"], np.int64)
    pixels, image_pixels = class_pixel_counts(samples, num_classes, progress=progress)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        content = json.dumps({"pixels": pixels.tolist(), "image_pixels": image_pixels.tolist()})
        atomic_write(cache, lambda tmp: tmp.write_text(content))
    except OSError:
        pass
    return pixels, image_pixels


def read_weights_file(path: Path, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """Class weights from a JSON list or a text file with one number per line."""
    try:
        text = path.read_text()
        values = json.loads(text) if text.lstrip().startswith("[") else [float(v) for v in text.split()]
        weights = np.asarray(values, dtype=np.float64)
    except (OSError, ValueError) as err:
        raise FastsegError(f"Class weights file {path} could not be read ({err}); give "
                           f"{num_classes} numbers, one per line or as a JSON list.") from None
    if weights.shape != (num_classes,) or (weights < 0).any():
        raise FastsegError(f"Class weights file {path} has {weights.size} values; give {num_classes} "
                           "non-negative numbers, one per class.")
    return weights
