"""Data checks: `check-data`'s report and the preflight `fit` and `evaluate` run before the first batch.

One code path: both decode every image fully, read every mask, compare their sizes and the mask
values, and check the id lists (empty lists, repeated ids). The preflight refuses with one sentence
naming the first bad file (or, with `skip_bad`, leaves bad samples out with a warning listing them),
and remembers a passed check in a small cache file keyed by the files' paths, sizes and mtimes.
"""

import hashlib
import os
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from fastseg.classes import VOC, ClassSet
from fastseg.config import FOLDER_SPLITS
from fastseg.console import progress_bar
from fastseg.constants import IGNORE_INDEX, NUM_CLASSES
from fastseg.data.folder import empty_split_reason, folder_samples
from fastseg.data.images import SWAPS_AXES, TOO_LARGE, TRUNCATED, ImageReadError, mask_fit, read_rgb
from fastseg.data.masks import read_mask
from fastseg.data.samples import Sample, list_lines
from fastseg.data.sbd import resolve_sbd_root
from fastseg.data.splits import (
    CACHE_DIR,
    EVAL_SPLITS,
    TRAIN_SPLITS,
    DataRoots,
    build_split,
    data_dir,
    dataset_classes,
    shared_ids,
    split_lists,
)
from fastseg.data.voc import resolve_voc_root
from fastseg.errors import FastsegError

CHECKS_VERSION = 3  # part of the cache key: a change to the checks invalidates old passes


@dataclass(frozen=True)
class Problem:
    """What is wrong with a file; a `note` (an image shown rotated, its mask matched) is reported, not refused."""

    path: Path
    message: str
    note: bool = False

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@dataclass
class DataReport:
    counts: dict[str, int | str]          # split → size, or why it could not be built
    leaks: list[tuple[str, str, int]]     # (train split, eval split, shared ids)
    problems: list[Problem]
    classes: ClassSet = VOC               # the dataset's classes (mask values 0..num-1 are valid)
    notes: list[Problem] = field(default_factory=list)  # images shown rotated whose masks match one way


def split_samples(roots: DataRoots) -> tuple[dict[str, list[Sample]], dict[str, str]]:
    """Every split that can be built from `roots`, and the reason for each that cannot."""
    built, missing = {}, {}
    for name in roots.split_names:
        try:
            built[name] = build_split(name, roots)
        except FastsegError as err:
            missing[name] = str(err)
    return built, missing


def stored_image(path: Path) -> tuple[tuple[int, int], int] | str:
    """((H, W) of the stored pixels, EXIF orientation) of a fully decoded image, or what is wrong with it.

    A truncated file fails here (the whole image is decoded, not only its header); so do one over
    Pillow's decompression-bomb limit, warning included, and a pixel mode fastseg does not convert.
    """
    if not path.is_file():
        return "image is missing"
    if path.stat().st_size == 0:
        return "image is empty (0 bytes)"
    try:
        pixels, turn = read_rgb(path, upright=False)
    except ImageReadError as err:
        if err.reason == TRUNCATED or err.reason.startswith(TOO_LARGE):
            return "image " + err.reason.removeprefix("it ")
        return f"image cannot be read ({err.reason})"
    return pixels.shape[:2], turn


def mask_array(path: Path, colours=None) -> np.ndarray | str:
    """The mask as H×W uint8 class ids (RGB converted with `colours`), or what is wrong with the file."""
    if not path.is_file():
        return "mask is missing"
    if path.stat().st_size == 0:
        return "mask is empty (0 bytes)"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return read_mask(path, colours)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        return f"mask is larger than Pillow's limit of {Image.MAX_IMAGE_PIXELS:,} pixels"
    except FastsegError as err:
        return str(err).removeprefix(f"Mask file {path} ").removesuffix(".")


def check_sample(sample: Sample, num_classes: int = NUM_CLASSES) -> list[Problem]:
    """Problems of one sample: unreadable, empty or missing files, size mismatch, an image shown
    rotated whose mask fits both orientations, mask values outside 0..num_classes-1 and 255; and a
    note for an image shown rotated whose mask fits one orientation."""
    stored = stored_image(sample.image)
    if isinstance(stored, str):
        return [Problem(sample.image, stored)]
    mask = mask_array(sample.mask, sample.colours)
    if isinstance(mask, str):
        return [Problem(sample.mask, mask)]
    problems = orientation_problems(sample, mask.shape, *stored)
    bad = sorted(set(np.unique(mask).tolist()) - set(range(num_classes)) - {IGNORE_INDEX})
    if bad:
        problems.append(Problem(sample.mask, f"mask has values {bad[:8]} outside 0..{num_classes - 1} and 255 "
                                             f"(the dataset has {num_classes} classes)"))
    return problems


def orientation_problems(sample: Sample, mask: tuple[int, int], stored: tuple[int, int], turn: int) -> list[Problem]:
    """Whether a mask of (H, W) `mask` fits its image (stored (H, W) `stored`, EXIF orientation `turn`):
    a size mismatch or an ambiguous rotation as a problem, a rotation whose mask fits one way as a note."""
    fit = mask_fit(mask, stored, turn)
    h, w = stored if turn not in SWAPS_AXES else stored[::-1]
    rotated = f"image is rotated when shown (EXIF orientation {turn})"
    if fit is None:
        shown = f" as shown ({stored[1]}×{stored[0]} stored)" if turn != 1 else ""
        return [Problem(sample.mask, f"mask is {mask[1]}×{mask[0]} but its image is {w}×{h}{shown}")]
    if fit == "both":
        return [Problem(sample.image, f"{rotated} and its mask fits both the stored and the shown orientation, so "
                                      "which one it follows is unknown; save the image upright without the EXIF "
                                      "orientation (e.g. with exiftool -Orientation= or any editor's export)")]
    if fit in ("shown", "stored"):
        return [Problem(sample.image, f"{rotated}; its mask matches the {fit} orientation, so both are used as "
                                      "shown", note=True)]
    return []


def check_lists(paths: list[Path]) -> list[Problem]:
    """An id list that names no ids, and each id a list repeats (once per list and id)."""
    problems = []
    for path in dict.fromkeys(paths):
        lines = list_lines(path)
        if not lines:
            problems.append(Problem(path, "id list is empty"))
        for sample_id, count in Counter(lines).items():
            if count > 1:
                problems.append(Problem(path, f"id list names {sample_id} {count} times"))
    return problems


def unique_samples(splits: dict[str, list[Sample]]) -> list[Sample]:
    """Each (image, mask) pair once, sorted by id."""
    unique = {(s.image, s.mask): s for samples in splits.values() for s in samples}
    return sorted(unique.values(), key=lambda s: (s.id, str(s.mask)))


def check_samples(samples: list[Sample], num_classes: int = NUM_CLASSES, progress=None) -> list[Problem]:
    """Problems of every sample, each file reported once however many samples share it."""
    problems, reported = [], set()
    for sample in samples:
        for problem in check_sample(sample, num_classes):
            if problem.path not in reported:
                reported.add(problem.path)
                problems.append(problem)
        if progress:
            progress()
    return problems


def check_dataset(roots: DataRoots, progress=None) -> DataReport:
    """Count splits, check leakage for every training × evaluation pair, and check every file once.

    Raises:
        FastsegError: the VOC2012 folder (or a given SBD folder), or the folder dataset's images/ and
            masks/, do not exist, or its classes file is missing or malformed.
    """
    classes = dataset_classes(roots)
    if roots.folder is not None:
        folder_samples(roots.folder)
    else:
        resolve_voc_root(roots.voc)
        if roots.sbd is not None:
            resolve_sbd_root(roots.sbd)
    built, missing = split_samples(roots)
    counts: dict[str, int | str] = {n: len(s) for n, s in built.items()} | missing
    trains, evals = (FOLDER_SPLITS[:1], FOLDER_SPLITS[1:]) if roots.folder is not None else (TRAIN_SPLITS, EVAL_SPLITS)
    leaks = []
    for train in (t for t in trains if t in built):
        for evaluation in (e for e in evals if e in built):
            leaks.append((train, evaluation, len(shared_ids(built[train], built[evaluation]))))
    lists = [p for name in built for p in split_lists(name, roots)]
    found = check_lists(lists) + check_samples(unique_samples(built), classes.num, progress)
    return DataReport(counts, leaks, [p for p in found if not p.note], classes, [p for p in found if p.note])


def fingerprint(paths: list[Path]) -> str:
    """sha256 of every path with its size and mtime (or "missing"), and the checks' version."""
    digest = hashlib.sha256(f"fastseg checks {CHECKS_VERSION}\n".encode())
    for path in map(os.path.abspath, paths):  # not resolve(): one stat per file keeps a cached run ~free
        try:
            st = os.stat(path)
            digest.update(f"{path}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
        except OSError:
            digest.update(f"{path}\tmissing\n".encode())
    return digest.hexdigest()


def cache_file(roots: DataRoots, key: str) -> Path:
    return data_dir(roots) / CACHE_DIR / f"preflight-{key}.ok"


def remember_pass(path: Path) -> None:
    """Record a passed check; a read-only data folder just means no cache (the check reruns)."""
    try:
        path.parent.mkdir(exist_ok=True)  # its parent, data_dir, exists: the data is read from it
        path.touch()
    except OSError:
        pass


def refusal(problems: list[Problem]) -> FastsegError:
    """The one sentence for a failed preflight: the first problem, how many in all, what to do."""
    more = f" ({len(problems)} bad files in all; `fastseg check-data` lists them)" if len(problems) > 1 else ""
    return FastsegError(f"{problems[0]}{more}; fix or remove it, or pass --skip-bad to leave bad samples out.")


def preflight(splits: dict[str, list[Sample]], roots: DataRoots, skip_bad: bool = False,
              log=print) -> dict[str, list[Sample]]:
    """Check every file and id list `splits` read, before the first batch.

    Returns `splits` unchanged, or with `skip_bad` without the samples that have a bad file.

    Raises:
        FastsegError: a split is empty, or a file or list has a problem (without `skip_bad`).
    """
    _refuse_empty(splits, roots)
    lists = [p for name in splits for p in split_lists(name, roots)]
    samples = unique_samples(splits)
    classes_file = [roots.classes_file] if roots.classes_file else []  # the valid mask values and colours
    key = fingerprint(lists + classes_file + [p for s in samples for p in (s.image, s.mask)])
    done = cache_file(roots, key)
    if done.is_file():
        return splits
    with progress_bar("checking files", len(samples)) as advance:
        problems = [p for p in check_lists(lists) + check_samples(samples, dataset_classes(roots).num, advance)
                    if not p.note]
    if not problems:
        remember_pass(done)
        return splits
    if not skip_bad:
        raise refusal(problems)
    log(f"--skip-bad: leaving out {len(problems)} bad file(s): " + "; ".join(map(str, problems)))
    bad = {p.path for p in problems}
    kept = {name: [s for s in ss if s.image not in bad and s.mask not in bad] for name, ss in splits.items()}
    _refuse_empty(kept, roots)
    return kept


def _refuse_empty(splits: dict[str, list[Sample]], roots: DataRoots) -> None:
    for name, samples in splits.items():
        if samples:
            continue
        if roots.folder is not None:
            raise FastsegError(f"Split {name} has no images: {empty_split_reason(roots.folder, name)}.")
        lists = ", ".join(str(p) for p in split_lists(name, roots)) or "its id lists"
        raise FastsegError(f"Split {name} has no images to use (read from {lists}); add ids to the "
                           "list or choose another split.")
