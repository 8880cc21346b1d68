"""One labelled image on disk, and the id lists that name them."""

from dataclasses import dataclass
from pathlib import Path

from fastseg.errors import FastsegError


@dataclass(frozen=True)
class Sample:
    """An image id with the paths of its RGB image and its mask (PNG or SBD .mat); `colours` are the
    ((R, G, B), class id) pairs of a dataset whose masks may be RGB colour images (None: index masks)."""

    id: str
    image: Path
    mask: Path
    colours: tuple[tuple[tuple[int, int, int], int], ...] | None = None


def sample_mask_array(sample: Sample):
    """The sample's mask as H×W uint8 class ids (`fastseg.data.masks.read_mask`, colours converted), in
    the orientation its image is shown in (a mask drawn on the stored pixels of an image with an EXIF
    rotation is turned with it)."""
    from fastseg.data.images import mask_as_shown
    from fastseg.data.masks import read_mask
    return mask_as_shown(read_mask(sample.mask, sample.colours), sample.image)


def read_id_list(path: Path) -> list[str]:
    """Non-empty, stripped lines of an id list file, in file order, each id once (check-data reports
    repeated ids)."""
    if not path.is_file():
        raise FastsegError(f"Id list {path} does not exist; check the dataset folder.")
    return list(dict.fromkeys(list_lines(path)))


def list_lines(path: Path) -> list[str]:
    """Non-empty, stripped lines of an id list file, repeats kept.

    Raises:
        FastsegError: the file is not UTF-8 text.
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise FastsegError(f"Id list {path} is not UTF-8 text; write one id (file stem) per line.") from None
    return [line.strip() for line in text.splitlines() if line.strip()]
