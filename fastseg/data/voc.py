"""PASCAL VOC on disk: `VOCdevkit/VOC20xx/{JPEGImages,SegmentationClass,ImageSets/Segmentation}`."""

from pathlib import Path

from fastseg.data.samples import Sample, read_id_list
from fastseg.errors import FastsegError


def resolve_voc_root(path: str | Path, year: str = "2012") -> Path:
    """Find the `VOC<year>` folder from itself, its `VOCdevkit` parent, or the folder holding that.

    Raises:
        FastsegError: no candidate has an `ImageSets/Segmentation` folder.
    """
    path = Path(path)
    candidates = [path, path / f"VOC{year}", path / "VOCdevkit" / f"VOC{year}",
                  path / "TrainVal" / "VOCdevkit" / f"VOC{year}"]
    for candidate in candidates:
        if (candidate / "ImageSets" / "Segmentation").is_dir():
            return candidate
    raise FastsegError(
        f"VOC{year} folder {path} was not found (no ImageSets/Segmentation under it); pass the "
        f"VOCdevkit/VOC{year} folder or run `fastseg download voc{year}`."
    )


def voc_ids(voc_root: Path, list_name: str) -> list[str]:
    """Ids of `ImageSets/Segmentation/<list_name>.txt` (train, val or trainval)."""
    return read_id_list(voc_root / "ImageSets" / "Segmentation" / f"{list_name}.txt")


def voc_sample(voc_root: Path, sample_id: str) -> Sample:
    """The JPEG and palette-PNG mask of one VOC id."""
    return Sample(sample_id, voc_root / "JPEGImages" / f"{sample_id}.jpg",
                  voc_root / "SegmentationClass" / f"{sample_id}.png")
