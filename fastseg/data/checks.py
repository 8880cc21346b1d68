"""`check-data`: split counts, leakage between training and evaluation splits, and per-file problems."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from fastseg.constants import IGNORE_INDEX, NUM_CLASSES
from fastseg.data.masks import read_mask
from fastseg.data.samples import Sample
from fastseg.data.sbd import resolve_sbd_root
from fastseg.data.splits import EVAL_SPLITS, SPLITS, TRAIN_SPLITS, DataRoots, build_split, shared_ids
from fastseg.data.voc import resolve_voc_root
from fastseg.errors import FastsegError

VALID_VALUES = set(range(NUM_CLASSES)) | {IGNORE_INDEX}


@dataclass(frozen=True)
class Problem:
    path: Path
    message: str


@dataclass
class DataReport:
    counts: dict[str, int | str]          # split → size, or why it could not be built
    leaks: list[tuple[str, str, int]]     # (train split, eval split, shared ids)
    problems: list[Problem]


def split_samples(roots: DataRoots) -> tuple[dict[str, list[Sample]], dict[str, str]]:
    """Every split that can be built from `roots`, and the reason for each that cannot."""
    built, missing = {}, {}
    for name in SPLITS:
        try:
            built[name] = build_split(name, roots)
        except FastsegError as err:
            missing[name] = str(err)
    return built, missing


def check_sample(sample: Sample) -> list[Problem]:
    """Problems of one sample: unreadable or missing files, size mismatch, bad mask values."""
    try:
        with Image.open(sample.image) as img:
            img.verify()
            width, height = img.size
    except (OSError, SyntaxError) as err:
        message = "is missing" if not sample.image.exists() else f"cannot be read ({type(err).__name__})"
        return [Problem(sample.image, f"image {message}")]
    try:
        mask = read_mask(sample.mask)
    except FastsegError as err:
        return [Problem(sample.mask, str(err))]
    problems = []
    if mask.shape != (height, width):
        problems.append(Problem(sample.mask, f"mask is {mask.shape[1]}×{mask.shape[0]} but its image is "
                                             f"{width}×{height}"))
    bad = sorted(set(np.unique(mask).tolist()) - VALID_VALUES)
    if bad:
        problems.append(Problem(sample.mask, f"mask has values {bad[:8]} outside 0..20 and 255"))
    return problems


def check_dataset(roots: DataRoots, progress=None) -> DataReport:
    """Count splits, check leakage for every training × evaluation pair, and check every file once.

    Raises:
        FastsegError: the VOC2012 folder (or a given SBD folder) does not exist.
    """
    resolve_voc_root(roots.voc)
    if roots.sbd is not None:
        resolve_sbd_root(roots.sbd)
    built, missing = split_samples(roots)
    counts: dict[str, int | str] = {n: len(s) for n, s in built.items()} | missing
    leaks = []
    for train in (t for t in TRAIN_SPLITS if t in built):
        for evaluation in (e for e in EVAL_SPLITS if e in built):
            leaks.append((train, evaluation, len(shared_ids(built[train], built[evaluation]))))
    unique = {(s.image, s.mask): s for samples in built.values() for s in samples}
    problems = []
    for sample in sorted(unique.values(), key=lambda s: (s.id, str(s.mask))):
        problems += check_sample(sample)
        if progress:
            progress()
    return DataReport(counts, leaks, problems)
