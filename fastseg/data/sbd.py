"""SBD on disk: `benchmark_RELEASE/dataset/{img,cls,train.txt,val.txt}`."""

from pathlib import Path

from fastseg.data.samples import Sample, read_id_list
from fastseg.errors import FastsegError


def resolve_sbd_root(path: str | Path) -> Path:
    """Find the SBD `dataset` folder from itself, `benchmark_RELEASE`, or the folder holding that.

    Raises:
        FastsegError: no candidate has `train.txt` and a `cls` folder.
    """
    path = Path(path)
    for candidate in (path, path / "dataset", path / "benchmark_RELEASE" / "dataset"):
        if (candidate / "train.txt").is_file() and (candidate / "cls").is_dir():
            return candidate
    raise FastsegError(
        f"SBD folder {path} was not found (no train.txt and cls/ under it); pass the "
        "benchmark_RELEASE/dataset folder or run `fastseg download sbd`."
    )


def sbd_ids(sbd_root: Path, list_name: str) -> list[str]:
    """Ids of SBD's `<list_name>.txt` (train or val)."""
    return read_id_list(sbd_root / f"{list_name}.txt")


def sbd_sample(sbd_root: Path, sample_id: str) -> Sample:
    """The JPEG and `cls/*.mat` mask of one SBD id."""
    return Sample(sample_id, sbd_root / "img" / f"{sample_id}.jpg", sbd_root / "cls" / f"{sample_id}.mat")
