"""`fastseg predict`: palette masks and overlays for image files, at each image's size, in the
colours of the model's classes (its sidecar's; VOC's colour map where none are given).

Images whose longer side exceeds `tile` are predicted by overlapping tiles (sliding window). Each
window's probabilities are weighted by a taper (high in its middle, low at its edges), so a pixel
defers to the windows that see it in context, and the weighted sums are kept only for the band of
rows that windows still reach: memory grows with tile × image width, not with the image's area.

Outputs mirror the inputs: `<out>/<path relative to its input folder>/<stem>.png` and
`<stem>_overlay.jpg` (a file given directly lands in `<out>` itself); when two inputs of one folder
share a stem (`a.jpg`, `a.png`) both get their extension in the name (`a_jpg.png`, `a_png.png`).
predict never writes over a file it did not write: it refuses an `--out` inside an input folder and
any existing output that its manifest (`<out>/.fastseg-predict.json`) does not list as its own.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fastseg.console import tracked
from fastseg.constants import DEFAULT_OVERLAP, DEFAULT_TILE
from fastseg.data.images import ImageReadError, read_image
from fastseg.data.masks import write_palette_png
from fastseg.data.transforms import model_input
from fastseg.errors import FastsegError, absent
from fastseg.evaluate.figures import overlay
from fastseg.evaluate.uncertainty import MonteCarlo
from fastseg.io.atomic import atomic_write

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
TAPER_SIGMA = 0.125    # Gaussian taper: sigma as a fraction of the tile side (0.25 and flat weights disagree more)
MANIFEST = ".fastseg-predict.json"  # in --out: every file predict wrote there, with size and mtime
OVERLAY_ROWS = 1024    # rows blended at a time, so the overlay needs no float copy of the whole image


@dataclass
class Uncertainty:
    """What predict adds to each mask: Monte Carlo dropout samples (`mc`, 0 for one deterministic pass),
    the uncertainty maps (`probs`), and the softmax temperature the maps use (the sidecar's)."""

    mc: int = 0
    probs: bool = False
    temperature: float = 1.0


@dataclass
class PredictReport:
    written: list[Path]                 # masks written (each with its overlay)
    failed: list[tuple[Path, str]]      # inputs that could not be read, and why


def list_images(inputs: list[Path]) -> list[tuple[Path, Path]]:
    """(image file, its path relative to its input folder) for files named directly (relative path:
    the name) or found (recursively) in folders, sorted within each folder.

    Raises:
        FastsegError: an input does not exist, or none holds an image (nothing to predict).
    """
    found = []
    for item in inputs:
        if item.is_dir():
            found += [(p, p.relative_to(item)) for p in sorted(item.rglob("*")) if p.suffix.lower() in IMAGE_SUFFIXES]
        elif item.exists():
            found.append((item, Path(item.name)))
        else:
            raise FastsegError(f"{item} {absent(item)}; pass image files or folders of images.")
    if not found:
        where = ", ".join(map(str, inputs))
        raise FastsegError(f"No images to predict in {where} (looked for {', '.join(sorted(IMAGE_SUFFIXES))}); pass "
                           "image files or folders that hold some.")
    return found


def output_names(images: list[tuple[Path, Path]]) -> dict[Path, Path]:
    """Image file → mask path relative to --out: `<folder>/<stem>.png`, or `<stem>_<ext>.png` for
    stems shared within a folder (a.jpg and a.png).

    Raises:
        FastsegError: two inputs would still write one mask (the same relative path in two input folders).
    """
    stems: dict[Path, int] = {}
    for _, rel in images:
        stems[rel.with_suffix("")] = stems.get(rel.with_suffix(""), 0) + 1
    names: dict[Path, Path] = {}
    taken: dict[Path, Path] = {}
    for path, rel in images:
        shared = stems[rel.with_suffix("")] > 1
        name = rel.with_name(f"{rel.stem}_{rel.suffix[1:].lower()}.png" if shared else f"{rel.stem}.png")
        if name in taken and taken[name] != path:
            raise FastsegError(f"{taken[name]} and {path} would both be written as {name}; predict them into "
                               "separate --out folders.")
        taken[name], names[path] = path, name
    return names


def overlay_name(mask: Path) -> Path:
    return mask.with_name(f"{mask.stem}_overlay.jpg")


def read_manifest(out: Path) -> dict[str, list[int]]:
    """Files predict wrote in `out` (relative path → [size, mtime_ns]); {} when there are none."""
    try:
        return json.loads((out / MANIFEST).read_text())
    except (OSError, ValueError):
        return {}


def _stamp(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def check_out(inputs: list[Path], out: Path, names: list[Path]) -> dict[str, list[int]]:
    """Refuse an --out where predict could write over a file it did not write. Returns the manifest.

    Raises:
        FastsegError: --out is (inside) an input folder, or holds a planned output predict did not write
            (or that changed since).
    """
    target = out.resolve()
    for item in inputs:
        if item.is_dir() and (target == item.resolve() or item.resolve() in target.parents):
            raise FastsegError(f"--out {out} is inside the input folder {item}; choose an --out outside it, so "
                               "that no input can be overwritten.")
    manifest = read_manifest(out)
    for rel in (p for name in names for p in (name, overlay_name(name))):
        path = out / rel
        if path.exists() and manifest.get(str(rel)) != _stamp(path):
            raise FastsegError(f"{path} already exists and was not written by predict; choose another --out or "
                               "move that file away.")
    return manifest


def predict_padded(model, image: np.ndarray, device, temperature: float = 1.0) -> torch.Tensor:
    """Probabilities 1×C×H×W of an H×W×3 uint8 image, fed as `evaluate` feeds it (`model_input`: padded
    with black to a multiple of 32, then normalised), at softmax temperature `temperature`. For a
    `MonteCarlo` model with maps wanted (`model.keep_variance`), one more channel: the sampled
    variance of the winning class (1×(C+1)×H×W)."""
    h, w = image.shape[:2]
    probs = (model(model_input(image, device))[..., :h, :w].float() / temperature).softmax(1)
    variance = getattr(model, "variance", None)
    return probs if variance is None else torch.cat([probs, variance[:, None, :h, :w]], 1)


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets covering [0, length) with tiles of `tile` overlapping by at least `overlap`."""
    if length <= tile:
        return [0]
    step = tile - overlap
    starts = list(range(0, length - tile, step)) + [length - tile]
    return sorted(set(starts))


def taper(length: int, device=None) -> torch.Tensor:
    """1-D window weights (length,): a Gaussian centred on the window, TAPER_SIGMA × length wide,
    so a window's edge pixels (seen without their context) count least; never 0 (a pixel near the
    image border may have one window only)."""
    i = torch.arange(length, dtype=torch.float32, device=device)
    sigma = TAPER_SIGMA * length
    return torch.exp(-0.5 * ((i - (length - 1) / 2) / sigma) ** 2).clamp_min(1e-4)


def predict_tiled(model, image: np.ndarray, device, tile: int, overlap: int, temperature: float = 1.0,
                  maps: bool = False) -> tuple[np.ndarray, dict | None]:
    """H×W×3 uint8 → (H×W uint8 class ids, uncertainty maps or None) from overlapping tile×tile
    windows blended by `taper`.

    The weighted sums live in one band of tile rows (C×tile×W float32, allocated once): a row is
    finished as soon as no later window reaches it, and the rows still shared with the next row of
    windows move up. The classes are the argmax of the sums; with `maps`, the sums are divided by the
    per-pixel weight total for `uncertainty_maps`.
    """
    h, w = image.shape[:2]
    out, found = np.empty((h, w), np.uint8), {}
    tops, lefts = tile_starts(h, tile, overlap), tile_starts(w, tile, overlap)
    total = None
    for k, top in enumerate(tops):
        bottom = min(top + tile, h)
        for left in lefts:
            right = min(left + tile, w)
            prob = predict_padded(model, image[top:bottom, left:right], device, temperature)[0]
            if total is None:  # with maps, one more channel: the weight total
                total = _band(prob.shape[0] + maps, min(tile, h), w, device)
            window = taper(bottom - top, device)[:, None] * taper(right - left, device)[None, :]
            total[:prob.shape[0], : bottom - top, left:right] += prob * window
            if maps:
                total[-1, : bottom - top, left:right] += window
        done = (tops[k + 1] if k + 1 < len(tops) else h) - top  # rows no later window reaches
        classes = image_classes(total[:total.shape[0] - maps], model)
        out[top:top + done] = total[:classes, :done].argmax(0).byte().cpu().numpy()
        if maps:
            _store_rows(found, uncertainty_maps(total[:-1, :done] / total[-1:, :done], classes), top, (h, w))
        shared = bottom - top - done
        total[:, :shared] = total[:, done:done + shared].clone()
        total[:, shared:] = 0
    return out, (found or None)


def image_classes(probs: torch.Tensor, model) -> int:
    """The number of class channels of `predict_padded`'s output (one fewer with the MC variance).
    In a tiled band with maps, the weight total comes last and is not counted by the caller."""
    return probs.shape[0] - (getattr(model, "variance", None) is not None)


def uncertainty_maps(probs: torch.Tensor, classes: int) -> dict[str, torch.Tensor]:
    """From (C[+1])×H×W probabilities (and the MC variance as the last channel): H×W confidence (max
    softmax), entropy in nats, and the variance when present."""
    p = probs[:classes]
    found = {"confidence": p.max(0).values, "entropy": -(p * p.clamp_min(1e-30).log()).sum(0)}
    if probs.shape[0] > classes:
        found["variance"] = probs[classes]
    return found


def _store_rows(found: dict, rows: dict, top: int, shape: tuple) -> None:
    for name, values in rows.items():
        found.setdefault(name, np.zeros(shape, np.float32))[top:top + values.shape[0]] = values.cpu().numpy()


def _band(classes: int, rows: int, width: int, device) -> torch.Tensor:
    """The running weighted sums of one band of rows: C×rows×W float32 zeros."""
    return torch.zeros(classes, rows, width, device=device)


def predict_image(model, image: np.ndarray, device, tile: int = DEFAULT_TILE,
                  overlap: int = DEFAULT_OVERLAP) -> np.ndarray:
    """H×W×3 uint8 image → H×W uint8 class ids (tiled when the longer side exceeds `tile`)."""
    return predict_with_maps(model, image, device, tile, overlap)[0]


def predict_with_maps(model, image: np.ndarray, device, tile: int = DEFAULT_TILE,
                      overlap: int = DEFAULT_OVERLAP, temperature: float = 1.0,
                      maps: bool = False) -> tuple[np.ndarray, dict | None]:
    """H×W×3 uint8 image → (H×W uint8 class ids, H×W float32 uncertainty maps when `maps`, else None);
    tiled when the longer side exceeds `tile`."""
    with torch.no_grad():
        if max(image.shape[:2]) > tile:
            return predict_tiled(model, image, device, tile, overlap, temperature, maps)
        prob = predict_padded(model, image, device, temperature)[0]
        classes = image_classes(prob, model)
        mask = prob[:classes].argmax(0).byte().cpu().numpy()
        return mask, ({k: v.cpu().numpy() for k, v in uncertainty_maps(prob, classes).items()} if maps else None)


def banded_overlay(image: np.ndarray, mask: np.ndarray, palette: list[int] | None = None) -> np.ndarray:
    """`overlay` (in `palette`) computed OVERLAY_ROWS rows at a time (H×W×3 uint8)."""
    out = np.empty_like(image)
    for r in range(0, image.shape[0], OVERLAY_ROWS):
        out[r:r + OVERLAY_ROWS] = overlay(image[r:r + OVERLAY_ROWS], mask[r:r + OVERLAY_ROWS], palette=palette)
    return out


def predict_files(model, inputs: list[Path], out: Path, device, tile: int = DEFAULT_TILE,
                  overlap: int = DEFAULT_OVERLAP, palette: list[int] | None = None,
                  uncertainty: Uncertainty = Uncertainty()) -> PredictReport:
    """Write a palette mask and an overlay per image under `out` (names: the module docstring), coloured
    in `palette` (768 ints, the model's `ClassSet.palette()`; None: VOC's); with `uncertainty.probs`
    also `<stem>_uncertainty.safetensors` and `<stem>_uncertainty.png` (`write_uncertainty`).

    Raises:
        FastsegError: --out could overwrite a file predict did not write (`check_out`), or two inputs
            map to one output (`output_names`); nothing is written then.
    """
    images = list_images(inputs)
    names = output_names(images)
    manifest = check_out(inputs, out, list(names.values()))
    report = PredictReport([], [])
    model = model.to(device).eval()
    if uncertainty.mc:
        model = MonteCarlo(model, uncertainty.mc, keep_variance=uncertainty.probs)
    for path, _ in tracked(images, "predict"):
        try:
            image = read_image(path)  # as shown: the mask and overlay match the photo the user sees
        except ImageReadError as err:
            report.failed.append((path, err.reason))
            continue
        mask, maps = predict_with_maps(model, image, device, tile, overlap, uncertainty.temperature,
                                       uncertainty.probs)
        report.written.append(write_outputs(image, mask, out, names[path], manifest, palette))
        if maps is not None:
            write_uncertainty(image, mask, maps, out, names[path], manifest, palette)
    return report


def write_outputs(image: np.ndarray, mask: np.ndarray, out: Path, rel: Path, manifest: dict,
                  palette: list[int] | None = None) -> Path:
    """Write the mask and overlay (atomically) and record both in the manifest. Returns the mask path."""
    (out / rel).parent.mkdir(parents=True, exist_ok=True)
    for name, write in ((rel, lambda tmp: write_palette_png(mask, tmp, palette)),
                        (overlay_name(rel), lambda tmp: Image.fromarray(banded_overlay(image, mask, palette)).save(
                            tmp, format="JPEG", quality=90))):
        manifest[str(name)] = _stamp(atomic_write(out / name, write))
    atomic_write(out / MANIFEST, lambda tmp: tmp.write_text(json.dumps(manifest, indent=1)))
    return out / rel


def uncertainty_names(rel: Path) -> tuple[Path, Path]:
    """The maps' files beside a mask: `<stem>_uncertainty.safetensors` and `<stem>_uncertainty.png`."""
    stem = rel.with_suffix("").name
    return rel.with_name(f"{stem}_uncertainty.safetensors"), rel.with_name(f"{stem}_uncertainty.png")


def write_uncertainty(image: np.ndarray, mask: np.ndarray, maps: dict, out: Path, rel: Path, manifest: dict,
                      palette: list[int] | None = None) -> None:
    """The maps as one safetensors file (H×W float32 each: confidence in [0, 1], entropy in nats,
    and with --mc the variance of the winning class) and a PNG of image | prediction | confidence |
    entropy."""
    from safetensors.numpy import save

    from fastseg.evaluate.figures import plot_uncertainty
    tensors, picture = uncertainty_names(rel)
    for name, write in ((tensors, lambda tmp: tmp.write_bytes(save({k: np.ascontiguousarray(v) for k, v in
                                                                     maps.items()}))),
                        (picture, lambda tmp: plot_uncertainty(image, mask, maps, tmp, palette))):
        manifest[str(name)] = _stamp(atomic_write(out / name, write))
    atomic_write(out / MANIFEST, lambda tmp: tmp.write_text(json.dumps(manifest, indent=1)))
