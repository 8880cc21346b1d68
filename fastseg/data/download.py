"""Download, verify and extract the official VOC2012, VOC2011 and SBD archives.

A partial download is kept as `<archive>.part` and resumed with an HTTP Range request; a
finished archive whose md5 is wrong is moved aside to `<archive>.bad` and nothing is extracted;
re-running after success does nothing.
"""

import hashlib
import tarfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path

from rich.progress import DownloadColumn, Progress, TransferSpeedColumn

from fastseg.console import log, progress_bar
from fastseg.errors import FastsegError

CHUNK = 1 << 20
TIMEOUT_SECONDS = 30


@dataclass(frozen=True)
class Archive:
    filename: str
    url: str
    md5: str
    marker: str  # a file that exists once the archive is extracted (relative to the root)


ARCHIVES = {
    "voc2012": Archive("VOCtrainval_11-May-2012.tar",
                       "https://thor.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar",
                       "6cd6e144f989b92b3379bac3b3de84fd", "VOCdevkit/VOC2012/ImageSets/Segmentation/val.txt"),
    "voc2011": Archive("VOCtrainval_25-May-2011.tar",
                       "https://thor.robots.ox.ac.uk/pascal/VOC/voc2011/VOCtrainval_25-May-2011.tar",
                       "6c3384ef61512963050cb5d687e5bf1e",
                       "TrainVal/VOCdevkit/VOC2011/ImageSets/Segmentation/val.txt"),
    "sbd": Archive("benchmark.tgz",
                   "https://www2.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/semantic_contours/"
                   "benchmark.tgz",
                   "82b4d87ceb2ed10f6038a1cba92111cb", "benchmark_RELEASE/dataset/train.txt"),
}


def download_dataset(name: str, root: str | Path, archive: Archive | None = None) -> Path:
    """Fetch (resuming), verify and extract dataset `name` under `root`; returns the marker path.

    `archive` overrides the official entry (tests serve their own archive).
    """
    if name not in ARCHIVES and archive is None:
        raise FastsegError(f"Unknown dataset '{name}'; choose one of: {', '.join(ARCHIVES)}.")
    archive = archive or ARCHIVES[name]
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise FastsegError(f"--root {root} is a file, not a folder; pass a folder to download into.")
    root.mkdir(parents=True, exist_ok=True)
    marker = root / archive.marker
    if marker.exists():
        log(f"{name} is already extracted under {root}.")
        return marker
    path = root / archive.filename
    if path.is_file():  # placed by hand or downloaded before: its md5 must match (it is not refetched)
        verify(path, archive.md5)
    else:
        fetch(archive.url, path)
        verify(path, archive.md5)
    extract(path, root)
    if not marker.exists():
        raise FastsegError(f"Archive {path} did not contain {archive.marker}; it is not the {name} archive, "
                           "so delete it and download again.")
    log(f"{name} is ready under {root}.")
    return marker


def fetch(url: str, path: Path) -> None:
    """Download `url` to `path`, resuming from `path`.part when it exists."""
    part = path.with_name(path.name + ".part")
    done = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={done}-"} if done else {})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:
            if done and response.status != 206:  # the server ignored the range: start again
                done = 0
            total = done + int(response.headers.get("Content-Length", 0)) or None
            _stream(response, part, done, total, path.name)
    except (urllib.error.URLError, HTTPException, TimeoutError, ConnectionError) as err:
        reason = getattr(err, "reason", None) or err.__class__.__name__
        raise FastsegError(
            f"Downloading {url} failed ({reason}); run the command again to resume, or download the file "
            f"elsewhere and place it at {path}.", exit_code=1) from None
    part.replace(path)


def _stream(response, part: Path, done: int, total: int | None, label: str) -> None:
    columns = (*Progress.get_default_columns()[:3], DownloadColumn(), TransferSpeedColumn())
    with part.open("ab" if done else "wb") as out, progress_bar(label, total, done, columns) as advance:
        while chunk := response.read(CHUNK):
            out.write(chunk)
            advance(len(chunk))
    if total is not None and part.stat().st_size < total:
        raise ConnectionError("transfer cut short")


def md5sum(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify(path: Path, md5: str) -> None:
    """Raise (after moving the file aside to `.bad`) when `path`'s md5 is not `md5`."""
    actual = md5sum(path)
    if actual != md5:
        bad = path.with_name(path.name + ".bad")
        path.replace(bad)
        raise FastsegError(f"Archive {path.name} has md5 {actual}, expected {md5}; it was moved to {bad} and "
                           "nothing was extracted, so run the command again to download it anew.", exit_code=1)


def extract(path: Path, root: Path) -> None:
    """Extract a tar/tgz archive under `root`, refusing members that would land outside it."""
    log(f"Extracting {path.name} ...")
    with tarfile.open(path) as tar:
        tar.extractall(root, filter="data")
