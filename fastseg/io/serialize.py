"""Nested Python state (dicts, lists, tensors, numpy arrays, scalars) as safetensors + JSON.

Used for full training checkpoints (optimizer state, RNG states, ...) so that resuming never
unpickles anything: tensors go to one .safetensors file, the structure to a JSON skeleton.
"""

import json
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


def save_state(state: dict, path: Path) -> None:
    """Write `state` as `path` (.safetensors) + `path`.json, each atomically; the JSON is written
    last, so a checkpoint whose JSON exists has complete tensors. Python writes the bytes, so a full
    disk is an OSError naming the file and the mode is the usual one (0644 under umask 022)."""
    tensors: dict[str, torch.Tensor] = {}
    skeleton = flatten(state, tensors)
    atomic_write(path, lambda tmp: tmp.write_bytes(save(tensors)))
    atomic_write(path.with_suffix(".json"), lambda tmp: tmp.write_text(json.dumps(skeleton)))


def load_state(path: Path) -> dict:
    """Read a state written by `save_state`, into memory: nothing stays mapped from the file, which
    a resumed run replaces after its next epoch.

    Raises:
        FastsegError: the files are missing or damaged.
    """
    try:
        skeleton = json.loads(path.with_suffix(".json").read_text())
        return unflatten(skeleton, load(path.read_bytes()))
    except (OSError, ValueError, KeyError, SafetensorError) as err:
        raise FastsegError(f"Checkpoint {path} could not be read ({type(err).__name__}); it may be "
                           "incomplete, so resume from a run whose checkpoint files are intact.") from None
