"""A folder dataset: `DIR/images/` and `DIR/masks/` with the same file stems, and `DIR/classes.txt`.

    DIR/images/<stem>.{jpg,jpeg,png,bmp,tif,tiff}   RGB images
    DIR/masks/<stem>.png                            index masks (mode L or P; 255 = void), or RGB
                                                    colour masks when classes.txt gives colours
    DIR/classes.txt                                 the classes (format: fastseg.classes)
    DIR/train.txt, DIR/val.txt                      optional: one stem per line

The splits are `train` and `val`. With both lists, each is read as it is; with one, the other split
is every remaining stem; with neither, the stems (sorted) are shuffled by a generator seeded with
FOLDER_SPLIT_SEED and the first VAL_SHARE of them (at least one) are `val`, the rest `train`: the
same split on every machine, printed with the leakage check by `fit`.
"""

import math
import random
from pathlib import Path

from fastseg.config import FOLDER_SPLITS
from fastseg.data.samples import Sample, read_id_list
from fastseg.errors import FastsegError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
IMAGES, MASKS = "images", "masks"
VAL_SHARE = 0.1      # the documented 90/10 split when DIR has no train.txt / val.txt
FOLDER_SPLIT_SEED = 0


def folder_samples(root: Path) -> dict[str, Sample]:
    """Every (image, mask) pair of the folder dataset, by stem.

    Raises:
        FastsegError: a missing folder, two images with one stem, or an image without its mask
            (or a mask without its image); the first such file is named.
    """
    root = Path(root)
    for sub in (IMAGES, MASKS):
        if not (root / sub).is_dir():
            raise FastsegError(f"Folder dataset {root} has no {sub}/ folder; put images in {root / IMAGES} and "
                               f"masks with the same names (.png) in {root / MASKS}.")
    images: dict[str, Path] = {}
    for path in sorted(p for p in (root / IMAGES).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
        if path.stem in images:
            raise FastsegError(f"Images {images[path.stem]} and {path} share the stem {path.stem}; keep one image "
                               "per name.")
        images[path.stem] = path
    masks = {p.stem: p for p in (root / MASKS).iterdir() if p.suffix.lower() == ".png"}
    unmatched = [(images[s], root / MASKS / f"{s}.png") for s in sorted(images.keys() - masks.keys())]
    unmatched += [(masks[s], f"an image {s}.* in {root / IMAGES}") for s in sorted(masks.keys() - images.keys())]
    if unmatched:
        have, missing = unmatched[0]
        more = f" ({len(unmatched)} unpaired files in all)" if len(unmatched) > 1 else ""
        raise FastsegError(f"{have} has no partner {missing}{more}; add it or remove the file.")
    if not images:
        raise FastsegError(f"Folder dataset {root} has no images in {root / IMAGES} (any of "
                           f"{', '.join(IMAGE_SUFFIXES)}); add images and their masks.")
    return {stem: Sample(stem, images[stem], masks[stem]) for stem in images}


def list_file(root: Path, name: str) -> Path:
    return Path(root) / f"{name}.txt"


def folder_split(name: str, root: Path) -> list[Sample]:
    """The samples of split `name` (train or val), sorted by stem (the rules: the module docstring).

    Raises:
        FastsegError: an unknown split, a list naming a stem the folders lack, or an empty split.
    """
    if name not in FOLDER_SPLITS:
        raise FastsegError(f"Unknown split '{name}'; a folder dataset has the splits {', '.join(FOLDER_SPLITS)}.")
    samples = folder_samples(root)
    lists = {n: read_id_list(list_file(root, n)) for n in FOLDER_SPLITS if list_file(root, n).is_file()}
    for listed, stems in lists.items():
        absent = [s for s in stems if s not in samples]
        if absent:
            raise FastsegError(f"{list_file(root, listed)} names {absent[0]}, which {Path(root) / IMAGES} does not "
                               f"hold ({len(absent)} such stem(s)); fix the list or add the image and its mask.")
    stems = lists.get(name) or _remaining(name, lists, sorted(samples))
    return [samples[s] for s in sorted(stems)]


def _remaining(name: str, lists: dict[str, list[str]], stems: list[str]) -> list[str]:
    """Stems of split `name` when its list is absent: those the other list leaves, else the seeded split."""
    other = next((lists[n] for n in FOLDER_SPLITS if n != name and n in lists), None)
    if other is not None:
        taken = set(other)
        return [s for s in stems if s not in taken]
    train, val = seeded_split(stems)
    return train if name == "train" else val


def seeded_split(stems: list[str]) -> tuple[list[str], list[str]]:
    """(train, val) stems: VAL_SHARE (at least one) of the sorted stems go to val, chosen by a generator
    seeded with FOLDER_SPLIT_SEED."""
    order = sorted(stems)
    random.Random(FOLDER_SPLIT_SEED).shuffle(order)
    n_val = max(1, math.ceil(len(order) * VAL_SHARE)) if len(order) > 1 else 0
    return sorted(order[n_val:]), sorted(order[:n_val])


def split_note(root: Path) -> str | None:
    """The sentence `fit` prints when the splits are not both read from lists (None when they are)."""
    listed = [n for n in FOLDER_SPLITS if list_file(root, n).is_file()]
    if len(listed) == len(FOLDER_SPLITS):
        return None
    if listed:
        other = next(n for n in FOLDER_SPLITS if n not in listed)
        return (f"Splits: {listed[0]} from {list_file(root, listed[0])}, {other} the images of {Path(root) / IMAGES} "
                f"it does not list.")
    return (f"Splits: {root} has no train.txt or val.txt, so {VAL_SHARE:.0%} of its images (chosen with seed "
            f"{FOLDER_SPLIT_SEED}, the same on every machine) are val and the rest train; write the lists to choose.")


def empty_split_reason(root: Path, name: str) -> str:
    """Why split `name` of the folder dataset at `root` has no images, for the sentence refusing it."""
    listed = list_file(root, name)
    if listed.is_file():
        return f"{listed} names none"
    other = next(n for n in FOLDER_SPLITS if n != name)
    if list_file(root, other).is_file():
        return (f"{list_file(root, other)} lists every image of {Path(root) / IMAGES} and there is no {listed}; leave "
                f"some out of {other}.txt or write {name}.txt")
    return f"{Path(root) / IMAGES} holds too few images to split; add images or write {name}.txt"


def folder_lists(root: Path) -> list[Path]:
    """The list files the folder dataset's splits are built from (for the preflight's list checks)."""
    return [p for p in (list_file(root, n) for n in FOLDER_SPLITS) if p.is_file()]
