"""Named splits (`voc12-train`, `train-aug`, `seg11valid`, ... or a folder dataset's `train` and
`val`), the dataset's classes, and the leakage check.

Sizes on the real datasets: voc12-train 1,464; voc12-val 1,449; train-aug 10,582;
seg11valid 736; voc12-val-a 725 and voc12-val-b 724 (a seeded half of voc12-val each).
"""

import functools
import random
from dataclasses import dataclass, replace
from pathlib import Path

from fastseg.classes import VOC, ClassSet, read_classes
from fastseg.config import EVAL_SPLITS, SPLITS, TRAIN_SPLITS, DataRoots  # noqa: F401 - the names live in config
from fastseg.data.folder import folder_lists, folder_split
from fastseg.data.samples import Sample
from fastseg.data.sbd import resolve_sbd_root, sbd_ids, sbd_sample
from fastseg.data.voc import resolve_voc_root, voc_ids, voc_sample
from fastseg.errors import FastsegError

VAL_HALF_SEED = 0  # fixed so that voc12-val-a / voc12-val-b are the same halves for every user
CACHE_DIR = "fastseg-cache"  # in `data_dir`: the preflight's passes and the class-pixel counts

@dataclass(frozen=True)
class LeakageReport:
    """Sizes of a training/evaluation pairing and the ids found in both."""

    train_name: str
    eval_name: str
    n_train: int
    n_eval: int
    shared: tuple[str, ...]

    def summary(self) -> str:
        verdict = "no shared ids" if not self.shared else f"{len(self.shared)} SHARED ids"
        return (f"Leakage check: {self.train_name} ({self.n_train}) vs {self.eval_name} "
                f"({self.n_eval}): {verdict}.")


def dataset_classes(roots: DataRoots) -> ClassSet:
    """The dataset's classes: its classes file's (a folder dataset's classes.txt, or --classes), else VOC's.

    Raises:
        FastsegError: the classes file is missing or malformed (fastseg.classes names the line).
    """
    path = roots.classes_file
    if path is None:
        return VOC
    if not path.is_file():
        raise FastsegError(f"Classes file {path} does not exist; write one class name per line, class 0 first "
                           "(an optional R G B colour after each name).")
    stat = path.stat()
    return _read_classes_once(path.resolve(), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=8)
def _read_classes_once(path: Path, mtime_ns: int, size: int) -> ClassSet:
    """`read_classes`, parsed once per file content (every split, check and loader of a command asks)."""
    return read_classes(path)


def build_split(name: str, roots: DataRoots) -> list[Sample]:
    """The samples of a named split, sorted by id; with a classes file that gives colours, each sample
    carries them (RGB colour masks are then converted to class ids).

    Raises:
        FastsegError: unknown name, or a dataset the split needs is missing.
    """
    if roots.folder is not None:
        samples = folder_split(name, roots.folder)
    else:
        samples = _voc_split(name, roots)
    colours = dataset_classes(roots).colour_ids() if roots.classes_file else None
    return [replace(s, colours=colours) for s in samples] if colours else samples


def _voc_split(name: str, roots: DataRoots) -> list[Sample]:
    builders = {"voc12-train": _voc12_list("train"), "voc12-val": _voc12_list("val"),
                "voc12-val-a": _val_half(0), "voc12-val-b": _val_half(1),
                "train-aug": _train_aug, "seg11valid": _seg11valid}
    if name not in builders:
        raise FastsegError(f"Unknown split '{name}'; choose one of: {', '.join(SPLITS)}.")
    return builders[name](roots)


def data_dir(roots: DataRoots) -> Path:
    """The folder fastseg keeps its caches beside: the folder dataset, or the folder holding the
    resolved VOC2012 root (VOCdevkit), whatever --voc pointed at."""
    return roots.folder if roots.folder is not None else resolve_voc_root(roots.voc).parent


def split_lists(name: str, roots: DataRoots) -> list[Path]:
    """The id list files a split is built from (those that exist), for the preflight's list checks."""
    if roots.folder is not None:
        return folder_lists(roots.folder)
    voc = resolve_voc_root(roots.voc)
    voc_list = {n: voc / "ImageSets" / "Segmentation" / f"{n}.txt" for n in ("train", "val")}
    sbd = resolve_sbd_root(roots.sbd) if roots.sbd is not None and name in ("train-aug", "seg11valid") else None
    sbd_list = {n: sbd / f"{n}.txt" for n in ("train", "val")} if sbd else {}
    lists = {"voc12-train": [voc_list["train"]], "train-aug": [*voc_list.values(), *sbd_list.values()],
             "seg11valid": [sbd_list.get("train")]}
    if name == "seg11valid":
        voc11 = resolve_voc_root(roots.voc11 or _find_voc11(voc), year="2011")
        lists[name].append(voc11 / "ImageSets" / "Segmentation" / "val.txt")
    return [p for p in lists.get(name, [voc_list["val"]]) if p is not None and p.is_file()]


def _voc12_list(list_name: str):
    def build(roots: DataRoots) -> list[Sample]:
        voc = resolve_voc_root(roots.voc)
        return [voc_sample(voc, i) for i in sorted(voc_ids(voc, list_name))]
    return build


def _val_half(half: int):
    def build(roots: DataRoots) -> list[Sample]:
        samples = _voc12_list("val")(roots)
        order = list(range(len(samples)))
        random.Random(VAL_HALF_SEED).shuffle(order)
        cut = (len(samples) + 1) // 2
        chosen = sorted(order[:cut] if half == 0 else order[cut:])
        return [samples[i] for i in chosen]
    return build


def _require_sbd(roots: DataRoots, split: str) -> Path:
    if roots.sbd is None:
        raise FastsegError(f"Split {split} needs SBD; pass --sbd DIR (benchmark_RELEASE/dataset).")
    return resolve_sbd_root(roots.sbd)


def _train_aug(roots: DataRoots) -> list[Sample]:
    """(SBD train ∪ SBD val ∪ VOC12 train) − VOC12 val, VOC masks where VOC has one."""
    voc, sbd = resolve_voc_root(roots.voc), _require_sbd(roots, "train-aug")
    voc_annotated = set(voc_ids(voc, "train")) | set(voc_ids(voc, "val"))
    ids = (set(sbd_ids(sbd, "train")) | set(sbd_ids(sbd, "val")) | set(voc_ids(voc, "train")))
    ids -= set(voc_ids(voc, "val"))
    return [voc_sample(voc, i) if i in voc_annotated else sbd_sample(sbd, i) for i in sorted(ids)]


def _seg11valid(roots: DataRoots) -> list[Sample]:
    """VOC2011 seg val − SBD train, read from VOC2012's files (every id is in VOC2012)."""
    voc, sbd = resolve_voc_root(roots.voc), _require_sbd(roots, "seg11valid")
    voc11 = resolve_voc_root(roots.voc11 or _find_voc11(voc), year="2011")
    ids = set(voc_ids(voc11, "val")) - set(sbd_ids(sbd, "train"))
    return [voc_sample(voc, i) for i in sorted(ids)]


def _find_voc11(voc12: Path) -> Path:
    """VOC2011 beside VOC2012 (VOCdevkit/VOC2011) or as extracted by `download voc2011`."""
    for base in (voc12.parent, voc12.parent.parent):
        for candidate in (base / "VOC2011", base / "TrainVal" / "VOCdevkit" / "VOC2011"):
            if candidate.is_dir():
                return candidate
    return voc12.parent / "VOC2011"


def shared_ids(train: list[Sample], evaluation: list[Sample]) -> tuple[str, ...]:
    """Sorted ids present in both lists."""
    return tuple(sorted({s.id for s in train} & {s.id for s in evaluation}))


def check_leakage(train: list[Sample], evaluation: list[Sample], train_name: str,
                  eval_name: str) -> LeakageReport:
    """Compare the ids of a training and an evaluation split.

    Raises:
        FastsegError: an id is in both (the message lists the first few).
    """
    shared = shared_ids(train, evaluation)
    report = LeakageReport(train_name, eval_name, len(train), len(evaluation), shared)
    if shared:
        raise FastsegError(f"{report.summary()[:-1]}: {', '.join(shared[:5])}; evaluation images "
                           "must not be trained on, so pick another pair of splits.")
    return report
