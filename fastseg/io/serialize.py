"""fastseg's files of tensors: one .safetensors file each, its JSON metadata in the safetensors header.

Model weights (`models.weights`) and full training checkpoints (optimizer state, RNG states, ...)
are both written by `save_tensors`: one file renamed into place, so a crash leaves either the old
file or the new one, never new tensors beside old metadata. Resuming never unpickles anything: a
checkpoint's tensors are stored as tensors, its structure as a JSON skeleton in the header.

Files written before fastseg kept the metadata in the header have it in a JSON sidecar
(`legacy_sidecar`); they are still read, and become one file when fastseg rewrites them.
"""

import json
import os
import struct
from pathlib import Path

import numpy as np
import torch
from fastcore.foundation import L
from safetensors import SafetensorError
from safetensors.torch import load, save

from fastseg.errors import FastsegError
from fastseg.io.atomic import atomic_write


def flatten(obj, tensors: dict[str, torch.Tensor]):
    """JSON-able skeleton of `obj`; every tensor or array is moved into `tensors` under a new key."""
    if isinstance(obj, torch.Tensor):
        key = f"t{len(tensors)}"
        tensors[key] = obj.detach().cpu().contiguous()
        return {"__tensor__": key}
    if isinstance(obj, np.ndarray):
        key = f"t{len(tensors)}"
        tensors[key] = torch.from_numpy(np.ascontiguousarray(obj))
        return {"__ndarray__": key}
    if isinstance(obj, dict):
        return {"__dict__": [[flatten(k, tensors), flatten(v, tensors)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple, L)):
        return {"__tuple__" if isinstance(obj, tuple) else "__list__": [flatten(v, tensors) for v in obj]}
    if isinstance(obj, (np.integer, np.floating)):
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot serialise {type(obj).__name__}")


def unflatten(skeleton, tensors: dict[str, torch.Tensor]):
    """Inverse of `flatten`."""
    if isinstance(skeleton, dict):
        if "__tensor__" in skeleton:
            return tensors[skeleton["__tensor__"]]
        if "__ndarray__" in skeleton:
            return tensors[skeleton["__ndarray__"]].numpy()
        if "__dict__" in skeleton:
            return {unflatten(k, tensors): unflatten(v, tensors) for k, v in skeleton["__dict__"]}
        if "__tuple__" in skeleton:
            return tuple(unflatten(v, tensors) for v in skeleton["__tuple__"])
        return [unflatten(v, tensors) for v in skeleton["__list__"]]
    return skeleton


META_KEY = "fastseg"  # the safetensors header's metadata entry holding fastseg's JSON
EXPORT_WEIGHTS, EXPORT_CONFIG = "model.safetensors", "config.json"
"""An exported model folder (`fastseg export RUN --format folder`), named as the Hugging Face Hub's
PyTorch mixin names them: the weights and, beside them, config.json."""


def legacy_sidecar(path: Path) -> Path:
    """Where a .safetensors file written before the one-file format kept its metadata: `<name>.json`,
    or config.json beside an export folder's model.safetensors."""
    path = Path(path)
    return path.with_name(EXPORT_CONFIG) if path.name == EXPORT_WEIGHTS else path.with_suffix(".json")


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], meta) -> Path:
    """Write `tensors` and `meta` (anything JSON can hold) as one safetensors file, atomically, and
    remove a legacy sidecar beside it (the file now carries its own metadata); an export folder's
    config.json, which Hub tools read, is rewritten instead, as a copy of the header's. Python writes
    the bytes, so a full disk is an OSError naming the file and the mode is the usual one (0644
    under umask 022). Returns `path`."""
    path = Path(path)
    atomic_write(path, lambda tmp: tmp.write_bytes(save(tensors, metadata={META_KEY: json.dumps(meta)})))
    side = legacy_sidecar(path)
    if side.name == EXPORT_CONFIG:
        atomic_write(side, lambda tmp: tmp.write_text(json.dumps(meta, indent=2)))
    else:
        side.unlink(missing_ok=True)
    return path


def header_meta(data: bytes) -> dict | list | None:
    """fastseg's metadata in the header of the safetensors bytes `data` (or the header's first bytes),
    or None when the header has none (a file written by other tools, or before the one-file format).

    Raises:
        ValueError: `data` does not start with a safetensors header.
    """
    if len(data) < 8:
        raise ValueError("no safetensors header")
    (size,) = struct.unpack("<Q", data[:8])
    if len(data) < 8 + size:
        raise ValueError("truncated safetensors header")
    entry = json.loads(data[8:8 + size]).get("__metadata__", {}).get(META_KEY)
    return None if entry is None else json.loads(entry)


def _file_meta(path: Path):
    """`header_meta` of the file at `path`, reading its header only."""
    with Path(path).open("rb") as f:
        head = f.read(8)
        size = struct.unpack("<Q", head)[0] if len(head) == 8 else 0
        if size > os.fstat(f.fileno()).st_size:  # not a header's length (a pickle, say): read no further
            raise ValueError("no safetensors header")
        return header_meta(head + f.read(size))


def read_meta(path: Path):
    """The metadata of a file written by `save_tensors` (its header's), or for an older file its legacy
    sidecar's JSON; None when there is neither. Reads the header only, never the tensors.

    Raises:
        OSError, ValueError: the file cannot be read, its header is damaged, or the sidecar is not JSON.
    """
    meta = _file_meta(path)
    if meta is not None:
        return meta
    side = legacy_sidecar(path)
    return json.loads(side.read_text()) if side.is_file() else None


def meta_file(path: Path) -> Path:
    """The file holding `path`'s metadata, for messages: `path` itself, or the legacy sidecar of a
    file written before the metadata moved into the header."""
    try:
        inside = _file_meta(path) is not None
    except (OSError, ValueError):
        inside = False
    side = legacy_sidecar(path)
    return side if not inside and side.is_file() else Path(path)


def save_state(state: dict, path: Path) -> None:
    """Write `state` as one .safetensors file at `path`, atomically (`save_tensors`): its tensors as
    tensors, its structure as the header's JSON skeleton."""
    tensors: dict[str, torch.Tensor] = {}
    skeleton = flatten(state, tensors)
    save_tensors(path, tensors, skeleton)


def load_state(path: Path) -> dict:
    """Read a state written by `save_state` (or by fastseg before the one-file format: the skeleton in
    `<name>.json`), into memory: nothing stays mapped from the file, which a resumed run replaces
    after its next epoch.

    Raises:
        FastsegError: the file (or a legacy checkpoint's JSON) is missing or damaged.
    """
    try:
        data = path.read_bytes()
        tensors = load(data)
        skeleton = header_meta(data)
        if skeleton is None:
            skeleton = json.loads(legacy_sidecar(path).read_text())
        return unflatten(skeleton, tensors)
    except (OSError, ValueError, KeyError, SafetensorError) as err:
        raise FastsegError(f"Checkpoint {path} could not be read ({type(err).__name__}); it may be "
                           "incomplete, so resume from a run whose checkpoint files are intact.") from None
