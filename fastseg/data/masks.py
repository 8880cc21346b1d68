"""Reading and writing segmentation masks in the formats VOC and SBD ship, and RGB colour masks.

A mask in memory is always an H×W uint8 array of class ids (0..20 for VOC) with 255 for void pixels.
"""

from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image

from fastseg.constants import voc_palette
from fastseg.errors import FastsegError


def read_mask(path: str | Path, colours=None) -> np.ndarray:
    """Read a mask as class ids.

    Accepts a VOC palette PNG ("P" mode: the pixel index is the class id), a single-channel
    index PNG ("L" mode, the SegmentationClassAug style), an SBD `cls/*.mat` file, and, when
    `colours` gives ((R, G, B), class id) pairs (a classes file with colours), an RGB colour mask.

    Returns:
        H×W uint8 array of class ids, 255 (void) kept as it is.

    Raises:
        FastsegError: the file is missing or unreadable, an RGB mask without colours, or a colour
            that no class has (file, pixel and colour named).
    """
    path = Path(path)
    if not path.is_file():
        raise FastsegError(f"Mask file {path} does not exist; check the dataset folder.")
    if path.suffix.lower() == ".mat":
        return _read_sbd_mat(path)
    return _read_png(path, colours)


def _read_png(path: Path, colours) -> np.ndarray:
    try:
        with Image.open(str(path)) as img:  # a str: Pillow < 10.1 resolves a Path, raising RuntimeError on a loop
            img.load()
            mode = img.mode
            array = np.array(img.convert("RGB") if mode == "RGBA" else img)  # RGB kept; alpha dropped
    except (OSError, ValueError) as err:
        raise FastsegError(f"Mask file {path} cannot be read as an image ({err}).") from None
    if mode in ("P", "L"):
        return array.astype(np.uint8)
    if mode in ("I", "I;16") and array.max() <= 255:  # an image has at least one pixel
        return array.astype(np.uint8)
    if mode in ("RGB", "RGBA") and colours:
        return colours_to_ids(array, colours, path)
    raise FastsegError(
        f"Mask file {path} is an {mode} image; fastseg needs class indices (a palette or single-channel "
        "index PNG), or colours for every class in the classes file to convert RGB masks."
    )


def colours_to_ids(rgb: np.ndarray, colours, path: Path) -> np.ndarray:
    """H×W×3 uint8 colours → H×W uint8 class ids, exactly (no nearest colour).

    Raises:
        FastsegError: a pixel's colour is none of `colours` (names the file, the first such pixel
            as x, y and its colour).
    """
    code = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    keys = np.array([(r << 16) | (g << 8) | b for (r, g, b), _ in colours], np.int64)
    ids = np.array([i for _, i in colours], np.uint8)
    order = np.argsort(keys)
    keys, ids = keys[order], ids[order]
    pos = np.minimum(np.searchsorted(keys, code), len(keys) - 1)  # searchsorted is never negative
    unknown = keys[pos] != code
    if unknown.any():
        y, x = (int(v[0]) for v in np.nonzero(unknown))
        r, g, b = (int(v) for v in rgb[y, x])
        raise FastsegError(f"Mask file {path} has colour {r} {g} {b} at pixel x={x}, y={y}, which no class in the "
                           "classes file has; add it to the classes file or fix the mask.")
    return ids[pos]


def _read_sbd_mat(path: Path) -> np.ndarray:
    try:
        # Only GTcls is needed; its sparse Boundaries load as scipy sparse arrays and are ignored.
        gt = scipy.io.loadmat(str(path), variable_names=["GTcls"])["GTcls"]
        segmentation = gt[0]["Segmentation"][0]
    except Exception as err:  # scipy raises several types for a damaged or foreign file
        raise FastsegError(
            f"Mask file {path} is not an SBD cls .mat file with GTcls.Segmentation ({err})."
        ) from None
    return np.asarray(segmentation, dtype=np.uint8)


def write_palette_png(mask: np.ndarray, path: str | Path, palette: list[int] | None = None) -> None:
    """Write an H×W uint8 class-id mask as a palette PNG (indices kept, 255 included), in `palette`
    (768 ints, e.g. `ClassSet.palette()`) or the VOC colour map."""
    img = Image.fromarray(np.asarray(mask, dtype=np.uint8))  # "L"; the palette makes it "P"
    img.putpalette(palette or voc_palette())
    img.save(path, format="PNG")


def write_sbd_mat(mask: np.ndarray, path: str | Path) -> None:
    """Write an H×W uint8 class-id mask as SBD does: `GTcls` with Segmentation, Boundaries and
    CategoriesPresent (Boundaries are per-class sparse edge maps, as in the real files)."""
    mask = np.asarray(mask, dtype=np.uint8)
    present = np.array([c for c in np.unique(mask) if 0 < c < 255], dtype=np.uint8)
    boundaries = np.empty((20, 1), dtype=object)
    for c in range(1, 21):  # an absent class's edge map is all zeros: an empty sparse matrix
        boundaries[c - 1, 0] = scipy.sparse.csc_matrix(_edges(mask == c).astype(np.float64))
    gt = {"Segmentation": mask, "Boundaries": boundaries, "CategoriesPresent": present.reshape(-1, 1)}
    scipy.io.savemat(str(path), {"GTcls": gt}, do_compression=True)


def _edges(region: np.ndarray) -> np.ndarray:
    """Pixels of `region` (H×W bool) with a 4-neighbour outside it."""
    return region & label_edges(region)


def label_edges(labels: np.ndarray) -> np.ndarray:
    """H×W bool: pixels with a 4-neighbour (inside the image) of another value."""
    edge = np.zeros(labels.shape, bool)
    vertical = labels[:-1] != labels[1:]
    horizontal = labels[:, :-1] != labels[:, 1:]
    edge[:-1] = vertical
    edge[1:] |= vertical
    edge[:, :-1] |= horizontal
    edge[:, 1:] |= horizontal
    return edge
