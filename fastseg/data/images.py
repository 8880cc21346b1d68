"""The one image reader of training, check-data, evaluate, export and predict: a photo as its user
sees it (EXIF orientation applied), in 8-bit RGB whatever its pixel mode, or one sentence saying why not.

Conversions (`to_rgb`): 8-bit modes through Pillow (alpha dropped: the stored colours are kept, as
OpenCV does); 16-bit greyscale (I;16*, and I, Pillow's mode for 16-bit PNG and PGM files) scaled
by 255/65535; 32-bit float (F) read as 0..1. Any other mode (LAB, HSV, ...) is refused.
"""

import errno
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from fastseg.errors import FastsegError

EIGHT_BIT = {"RGB", "RGBA", "RGBX", "RGBa", "L", "LA", "La", "P", "PA", "1", "CMYK", "YCbCr"}
SIXTEEN_BIT = {"I;16", "I;16L", "I;16B", "I;16N", "I"}
FLOAT = {"F"}
ORIENTATION = 0x0112        # the EXIF tag; 1 (or absent) = stored upright
SWAPS_AXES = {5, 6, 7, 8}   # orientations shown with width and height exchanged
T = Image.Transpose
TRANSPOSES = {2: T.FLIP_LEFT_RIGHT, 3: T.ROTATE_180, 4: T.FLIP_TOP_BOTTOM, 5: T.TRANSPOSE, 6: T.ROTATE_270,
              7: T.TRANSVERSE, 8: T.ROTATE_90}
"""What shows an image stored with each EXIF orientation upright (as ImageOps.exif_transpose does)."""
TRUNCATED = "it is truncated"
TOO_LARGE = "it is larger than Pillow's limit"


class ImageReadError(FastsegError):
    """An image file that cannot be read; `reason` says why in a few words, for a sentence naming the file."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"Image {path} cannot be read: {reason}.")
        self.path, self.reason = path, reason


def read_error_reason(err: BaseException) -> str:
    """The fault behind an exception raised while opening or decoding an image, in words."""
    if isinstance(err, UnidentifiedImageError):
        return "it is not an image file Pillow can read"
    if isinstance(err, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return f"{TOO_LARGE} of {Image.MAX_IMAGE_PIXELS:,} pixels"
    if isinstance(err, OSError) and err.errno == errno.ELOOP:
        return "it is a symbolic link that loops"
    if isinstance(err, OSError) and err.errno is not None:
        return (err.strerror or "it cannot be opened").lower()
    if "truncated" in str(err) or "broken data stream" in str(err):
        return TRUNCATED
    return f"it is damaged ({err})" if str(err) else "it is damaged"


def orientation(img: Image.Image) -> int:
    """The EXIF orientation of an opened image (1..8; 1 when absent or invalid)."""
    value = img.getexif().get(ORIENTATION, 1)
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def to_rgb(img: Image.Image, path: Path) -> np.ndarray:
    """A decoded image in any supported mode → H×W×3 uint8 (see the module docstring).

    Raises:
        ImageReadError: an unsupported mode, or 16-bit / float values out of their range.
    """
    mode = img.mode
    if mode in EIGHT_BIT:
        rgba = mode in ("P", "PA") and "transparency" in img.info  # Pillow warns unless P goes through RGBA
        rgb = img if mode == "RGB" else (img.convert("RGBA") if rgba else img).convert("RGB")
        return np.asarray(rgb)
    values = np.asarray(img)
    if mode in SIXTEEN_BIT and values.min(initial=0) >= 0 and values.max(initial=0) <= 65535:
        grey = np.round(values.astype(np.float64) * (255 / 65535)).astype(np.uint8)
    elif mode in FLOAT and np.isfinite(values).all() and values.min(initial=0) >= 0 and values.max(initial=0) <= 1:
        grey = np.round(values.astype(np.float64) * 255).astype(np.uint8)
    elif mode in SIXTEEN_BIT | FLOAT:
        raise ImageReadError(path, f"its {mode} values lie outside {'0..1' if mode in FLOAT else '0..65535'}; save "
                                   "it as 8-bit RGB or greyscale")
    else:
        raise ImageReadError(path, f"it holds {mode} pixels, which fastseg does not convert to RGB; save it as "
                                   "8-bit RGB or greyscale")
    return np.repeat(grey[..., None], 3, axis=-1)


def read_rgb(path: str | Path, upright: bool = True) -> tuple[np.ndarray, int]:
    """Decode an image in full: (H×W×3 uint8 as shown, its EXIF orientation). With `upright` False
    the stored pixels are returned instead of the shown ones.

    A decompression-bomb warning is an error here, as are a truncated file, a loop of symbolic links
    and an unreadable format.

    Raises:
        ImageReadError: the file cannot be read (its reason in words).
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(str(path)) as img:  # a str: Pillow < 10.1 resolves a Path, raising RuntimeError on a loop
                img.load()
                turn = orientation(img)
                shown = ImageOps.exif_transpose(img) if upright and turn != 1 else img
                return to_rgb(shown, path), turn
    except ImageReadError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageReadError(path, read_error_reason(err)) from None


def read_image(path: str | Path) -> np.ndarray:
    """The image as its user sees it: H×W×3 uint8, EXIF orientation applied (see `read_rgb`)."""
    return read_rgb(path)[0]


def shown_size(path: str | Path) -> tuple[int, int]:
    """(H, W) of the image as shown, from its header (EXIF orientation 5-8 exchange the stored sides)."""
    stored, turn = header(path)
    return stored[::-1] if turn in SWAPS_AXES else stored


def header(path: str | Path) -> tuple[tuple[int, int], int]:
    """((H, W) of the stored pixels, EXIF orientation) of an image file, from its header."""
    with Image.open(str(path)) as img:
        return img.size[::-1], orientation(img)


def mask_fit(mask: tuple[int, int], stored: tuple[int, int], turn: int) -> str | None:
    """Which orientation of its image a mask of (H, W) `mask` follows, the image stored (H, W) `stored`
    with EXIF orientation `turn`: "upright" (no rotation), "shown", "stored", "both" (it fits either,
    e.g. a 180° turn or a square image), or None (it fits neither)."""
    shown = stored[::-1] if turn in SWAPS_AXES else stored
    fits = (mask == shown, mask == stored)
    if turn == 1:
        return "upright" if fits[1] else None
    return {(True, True): "both", (True, False): "shown", (False, True): "stored"}.get(fits)


def mask_as_shown(mask: np.ndarray, image: str | Path) -> np.ndarray:
    """A mask (H×W uint8) turned to its image's shown orientation when it fits only the stored one."""
    stored, turn = header(image)
    return orient_like_image(mask, turn) if mask_fit(mask.shape, stored, turn) == "stored" else mask


def orient_like_image(mask: np.ndarray, turn: int) -> np.ndarray:
    """A mask (H×W uint8) drawn on an image's stored pixels, turned as EXIF orientation `turn` shows the image."""
    if turn == 1:
        return mask
    return np.asarray(Image.fromarray(mask).transpose(TRANSPOSES[turn]))
