"""A seeded synthetic dataset laid out exactly like VOC2012, VOC2011's lists and SBD, or as a folder
dataset (`--layout folder`: images/, masks/, classes.txt, train.txt, val.txt) with 2..21 classes,
its masks as index PNGs or, with `colour_masks`, as RGB colour images.

Each of the 20 classes has its own texture (pattern kind, orientation and period) and one of five
shapes. Every object takes a colour from one shared pool at random and draws its pattern in a dark
shade of that colour, so that the pattern's light/dark polarity is the same for every object while
no colour belongs to a class: a per-pixel model can tell dark object pixels from the background, but
only texture and shape tell the classes apart. The background clutter uses the same pool.
"""

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from fastseg.classes import ClassSet, write_classes
from fastseg.config import CLASSES_FILE, SynthConfig
from fastseg.constants import IGNORE_INDEX, NUM_CLASSES
from fastseg.data.folder import IMAGES, MASKS, list_file
from fastseg.data.masks import label_edges, write_palette_png, write_sbd_mat
from fastseg.data.splits import DataRoots

OBJECTS = (1, 3)         # objects per image, inclusive
RADIUS = (0.25, 0.4)     # object half-size as a fraction of the image's shorter side
SHADE = 0.35             # brightness of an object's pattern relative to its colour
SHAPES = ("disk", "square", "triangle", "diamond", "cross")
TEXTURES = tuple([("stripes", angle, period) for period in (4, 8) for angle in (0, 45, 90, 135)]
                 + [("checker", 0, 4), ("checker", 0, 8), ("checker", 45, 6), ("checker", 45, 10),
                    ("dots", 0, 4), ("dots", 0, 8), ("grid", 0, 5), ("grid", 0, 9), ("grid", 45, 7),
                    ("rings", 0, 6), ("dashes", 0, 8), ("dashes", 90, 8)])
"""(kind, angle in degrees, period in pixels) of classes 1..20, in order."""
COLOURS = np.array([(220, 40, 40), (40, 180, 60), (50, 80, 220), (230, 200, 40),
                    (200, 60, 200), (40, 200, 210), (240, 240, 240), (30, 30, 30)], dtype=np.uint8)
OBJECT_COLOURS = COLOURS[:-1]
"""Objects take any pool colour but the near-black one, whose dark shade would not show a pattern."""
PARALLEL_FROM = 200
"""Datasets of at least this many samples are written by several processes (a worker costs ~1 s to start)."""
JPEG_QUALITY = 98
JPEG_SUBSAMPLING = 0
"""Near-lossless JPEGs with full-resolution colour (4:4:4). Pillow's default 4:2:0 halves the colour
resolution, and at quality 92 it blurred the 2-pixel textures enough that a SegNet trained on them
in a plain loop (650 steps of 32) reached 0.27 mIoU instead of 0.53; quality 98 at 4:4:4 gave 0.53."""




@dataclass(frozen=True)
class IdSets:
    voc_train: list[str]
    voc_val: list[str]
    sbd_train: list[str]
    sbd_val: list[str]
    voc11_val: list[str]


def make_id_sets(cfg: SynthConfig) -> IdSets:
    """Partition ids like the real datasets (see SynthConfig)."""
    ids = [f"2008_{i:06d}" for i in range(cfg.n_train + cfg.n_val + cfg.n_sbd_only)]
    train, val = ids[:cfg.n_train], ids[cfg.n_train:cfg.n_train + cfg.n_val]
    only = ids[cfg.n_train + cfg.n_val:]
    cut = len(only) * 7 // 10
    sbd_train = only[:cut] + train[: cfg.n_train // 2] + val[: cfg.n_val // 3]
    sbd_val = only[cut:] + train[cfg.n_train // 2: cfg.n_train * 3 // 4] + val[cfg.n_val // 3: cfg.n_val // 2]
    voc11_val = val[: cfg.n_val * 2 // 3]
    return IdSets(train, val, sorted(sbd_train), sorted(sbd_val), voc11_val)


def class_appearance(class_id: int) -> tuple[str, tuple[str, int, int]]:
    """(shape, texture) of a foreground class 1..20."""
    return SHAPES[(class_id - 1) % len(SHAPES)], TEXTURES[class_id - 1]


def shape_mask(shape: str, h: int, w: int, cy: float, cx: float, r: float) -> np.ndarray:
    """H×W bool mask of `shape` centred at (cy, cx) with half-size r."""
    y, x = np.mgrid[:h, :w].astype(np.float32)
    dy, dx = (y - cy) / r, (x - cx) / r
    if shape == "disk":
        return dy ** 2 + dx ** 2 <= 1
    if shape == "square":
        return (np.abs(dy) <= 0.85) & (np.abs(dx) <= 0.85)
    if shape == "triangle":
        return (dy <= 0.8) & (dy >= 2 * np.abs(dx) - 1.1)
    if shape == "diamond":
        return np.abs(dy) + np.abs(dx) <= 1
    return ((np.abs(dy) <= 0.3) & (np.abs(dx) <= 1)) | ((np.abs(dx) <= 0.3) & (np.abs(dy) <= 1))


def texture_pattern(texture: tuple[str, int, int], h: int, w: int, phase: float) -> np.ndarray:
    """H×W bool: True where `texture` = (kind, angle, period) shows the dark shade."""
    kind, angle, period = texture
    y, x = np.mgrid[:h, :w].astype(np.float32) + phase
    a = np.deg2rad(angle)
    u = x * np.cos(a) + y * np.sin(a)          # across the pattern
    v = -x * np.sin(a) + y * np.cos(a)         # along it
    ui, vi = np.floor(u / (period / 2)), np.floor(v / (period / 2))
    if kind == "stripes":
        return ui % 2 == 0
    if kind == "checker":
        return (ui + vi) % 2 == 0
    if kind == "dots":
        return ((u % period) < period / 2) & ((v % period) < period / 2)
    if kind == "grid":
        return ((u % period) < 1.5) | ((v % period) < 1.5)
    if kind == "rings":
        return np.floor(np.hypot(x - w / 2, y - h / 2) / (period / 2)) % 2 == 0
    return (ui % 2 == 0) & ((v % (2 * period)) < period)  # dashes


def clutter(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """H×W×3 uint8 background: smooth colour noise plus solid blobs and lines in the pool colours."""
    coarse = rng.integers(0, 256, size=(h // 16 + 2, w // 16 + 2, 3)).astype(np.uint8)
    img = np.asarray(Image.fromarray(coarse).resize((w, h), Image.BILINEAR), dtype=np.float32)
    img = img * 0.6 + 50
    for _ in range(rng.integers(3, 7)):
        blob = shape_mask("disk", h, w, rng.uniform(0, h), rng.uniform(0, w), rng.uniform(4, h / 5))
        img[blob] = COLOURS[rng.integers(len(COLOURS))]
    for _ in range(rng.integers(2, 5)):
        img[_line(rng, h, w)] = COLOURS[rng.integers(len(COLOURS))]
    return img


def _line(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    y, x = np.mgrid[:h, :w]
    a, b = rng.uniform(-1, 1, 2)
    return np.abs(a * (x - rng.uniform(0, w)) + b * (y - rng.uniform(0, h))) < 1.5 * np.hypot(a, b)


def draw_image(rng: np.random.Generator, h: int, w: int,
               num_classes: int = NUM_CLASSES) -> tuple[np.ndarray, np.ndarray]:
    """One image and its clean label map, with objects of classes 1..num_classes-1.

    Returns:
        (H×W×3 uint8 RGB image, H×W uint8 class ids 0..num_classes-1 without a void band).
    """
    img = clutter(rng, h, w)
    labels = np.zeros((h, w), np.uint8)
    objects = min(int(rng.integers(OBJECTS[0], OBJECTS[1] + 1)), num_classes - 1)
    for class_id in rng.choice(np.arange(1, num_classes), size=objects, replace=False):
        shape, texture = class_appearance(int(class_id))
        r = rng.uniform(*RADIUS) * min(h, w)
        region = shape_mask(shape, h, w, rng.uniform(r, h - r), rng.uniform(r, w - r), r)
        colour = OBJECT_COLOURS[rng.integers(len(OBJECT_COLOURS))].astype(np.float32)
        pattern = texture_pattern(texture, h, w, float(rng.uniform(0, 16)))
        img[region] = np.where(pattern[region, None], colour * SHADE, colour)
        labels[region] = class_id
    noise = rng.normal(0, 6, img.shape)
    return np.clip(img + noise, 0, 255).astype(np.uint8), labels


def add_void_band(labels: np.ndarray, band: int) -> np.ndarray:
    """Copy of `labels` with 255 on pixels within `band`//2 px of a boundary between labels, as VOC
    draws along object outlines."""
    edge = label_edges(labels)
    if band > 2:
        edge = ndimage.binary_dilation(edge, iterations=band // 2 - 1)
    out = labels.copy()
    out[edge] = IGNORE_INDEX
    return out


def image_size(rng: np.random.Generator, size: int) -> tuple[int, int]:
    """(H, W): one side near `size`, the other 60-100 % of it, like VOC's 500×375."""
    long_side = int(rng.integers(size * 9 // 10, size + 1))
    short_side = int(rng.integers(size * 6 // 10, size + 1))
    return (long_side, short_side) if rng.random() < 0.5 else (short_side, long_side)


def default_workers(n_samples: int) -> int:
    """Processes for `generate`: one per CPU core (at most 4) for large sets, none for small ones."""
    return min(4, os.cpu_count() or 1) if n_samples >= PARALLEL_FROM else 0


def _run_jobs(jobs: list[tuple], workers: int):
    """Write each sample (in worker processes when `workers` > 1), yielding ids as they finish."""
    if workers <= 1:
        yield from map(_write_job, jobs)
        return
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield from pool.map(_write_job, jobs, chunksize=16)


def _write_job(job: tuple) -> str:
    cfg, index, sample_id, voc, sbd = job
    _write_sample(np.random.default_rng([cfg.seed, index]), cfg, sample_id, voc, sbd)
    return sample_id


def generate(out: str | Path, cfg: SynthConfig = SynthConfig(), progress=None, workers: int | None = None) -> Path:
    """Write the dataset under `out` and return `out`.

    Every sample draws from its own generator seeded by (cfg.seed, its index), so the files are the
    same whatever the number of worker processes (`workers`; None: see `default_workers`).

    Layout: `VOCdevkit/VOC2012/{JPEGImages,SegmentationClass,ImageSets/Segmentation}`,
    `VOCdevkit/VOC2011/ImageSets/Segmentation/val.txt` and
    `benchmark_RELEASE/dataset/{img,cls,train.txt,val.txt}`.
    `progress`, if given, is called with each id written.
    """
    out = Path(out)
    sets = make_id_sets(cfg)
    roots = DataRoots.under(out)
    voc, sbd, voc11 = roots.voc, roots.sbd, roots.voc11
    for folder in (voc / "JPEGImages", voc / "SegmentationClass", voc / "ImageSets" / "Segmentation",
                   voc11 / "ImageSets" / "Segmentation", sbd / "img", sbd / "cls"):
        folder.mkdir(parents=True, exist_ok=True)
    voc_ids = set(sets.voc_train) | set(sets.voc_val)
    sbd_ids = set(sets.sbd_train) | set(sets.sbd_val)
    jobs = [(cfg, index, sample_id, voc if sample_id in voc_ids else None, sbd if sample_id in sbd_ids else None)
            for index, sample_id in enumerate(sorted(voc_ids | sbd_ids))]
    for sample_id in _run_jobs(jobs, workers if workers is not None else default_workers(len(jobs))):
        if progress:
            progress(sample_id)
    _write_lists(voc, voc11, sbd, sets)
    return out


def save_jpeg(img: np.ndarray, path: Path) -> None:
    """Write an H×W×3 uint8 RGB image as a near-lossless 4:4:4 JPEG (see JPEG_QUALITY)."""
    Image.fromarray(img).save(path, quality=JPEG_QUALITY, subsampling=JPEG_SUBSAMPLING)


def _write_sample(rng, cfg: SynthConfig, sample_id: str, voc: Path | None, sbd: Path | None) -> None:
    img, labels = draw_image(rng, *image_size(rng, cfg.size))
    for root, folder in ((voc, "JPEGImages"), (sbd, "img")):
        if root is not None:
            save_jpeg(img, root / folder / f"{sample_id}.jpg")
    if voc is not None:
        write_palette_png(add_void_band(labels, cfg.band), voc / "SegmentationClass" / f"{sample_id}.png")
    if sbd is not None:
        write_sbd_mat(labels, sbd / "cls" / f"{sample_id}.mat")


def _write_lists(voc: Path, voc11: Path, sbd: Path, sets: IdSets) -> None:
    def write(path: Path, ids: list[str]) -> None:
        path.write_text("".join(f"{i}\n" for i in ids))
    seg = voc / "ImageSets" / "Segmentation"
    write(seg / "train.txt", sets.voc_train)
    write(seg / "val.txt", sets.voc_val)
    write(seg / "trainval.txt", sets.voc_train + sets.voc_val)
    write(voc11 / "ImageSets" / "Segmentation" / "val.txt", sets.voc11_val)
    write(sbd / "train.txt", sets.sbd_train)
    write(sbd / "val.txt", sets.sbd_val)


VOID_COLOUR = (255, 255, 255)  # a folder dataset's void (outline) colour in RGB masks


def folder_classes(num_classes: int) -> ClassSet:
    """The synthetic folder dataset's classes: background, then each class named after its texture
    and shape (e.g. stripes0-disk), with distinct colours (not VOC's) and a white void outline."""
    names = ["background"] + [f"{texture[0]}{texture[1]}-{shape}" for shape, texture in
                              (class_appearance(c) for c in range(1, num_classes))]
    colours = [(0, 0, 0)] + [((c * 67 + 20) % 256, (c * 131 + 90) % 256, (c * 29 + 160) % 256)
                             for c in range(1, num_classes)]
    return ClassSet(tuple(names), tuple(colours), "outline", VOID_COLOUR)


def generate_folder(out: str | Path, cfg: SynthConfig, num_classes: int = 5, colour_masks: bool = False,
                    progress=None) -> Path:
    """Write a folder dataset under `out`: cfg.n_train + cfg.n_val images (every fifth a PNG, the
    rest JPEGs), their masks (index PNGs, or RGB colour PNGs with `colour_masks`), classes.txt with
    colours, train.txt and val.txt. Returns `out`.
    """
    out = Path(out)
    classes = folder_classes(num_classes)
    for folder in (IMAGES, MASKS):
        (out / folder).mkdir(parents=True, exist_ok=True)
    stems = [f"img_{i:04d}" for i in range(cfg.n_train + cfg.n_val)]
    colours = np.array(classes.palette(), np.uint8).reshape(256, 3)  # class id → RGB, void's white at 255
    for index, stem in enumerate(stems):
        rng = np.random.default_rng([cfg.seed, index])
        img, labels = draw_image(rng, *image_size(rng, cfg.size), num_classes)
        if index % 5 == 4:
            Image.fromarray(img).save(out / IMAGES / f"{stem}.png")
        else:
            save_jpeg(img, out / IMAGES / f"{stem}.jpg")
        mask = add_void_band(labels, cfg.band)
        if colour_masks:
            Image.fromarray(colours[mask]).save(out / MASKS / f"{stem}.png")
        else:
            Image.fromarray(mask, mode="L").save(out / MASKS / f"{stem}.png")
        if progress:
            progress(stem)
    write_classes(classes, out / CLASSES_FILE)
    for name, part in (("train", stems[:cfg.n_train]), ("val", stems[cfg.n_train:])):
        list_file(out, name).write_text("".join(f"{s}\n" for s in part))
    return out
