"""Atomic file writes: write to a temporary file beside the target, then rename over it."""

import os
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call `write(tmp_path)` and rename the result to `path`, so a reader never sees a partial file
    and an interrupted write leaves the previous version intact.

    Raises:
        OSError: the write or rename failed (disk full, no permission); its filename is `path`, the
            file the user knows, not the temporary one.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as err:
        raise OSError(err.errno, err.strerror, str(path)) from err
    finally:
        tmp.unlink(missing_ok=True)
    return path


def save_figure(fig, path: Path) -> Path:
    """Write a matplotlib figure to `path` as PNG, atomically, and close it."""
    import matplotlib.pyplot as plt
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))
    plt.close(fig)
    return path
