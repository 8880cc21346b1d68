"""Model weights on disk: one `<name>.safetensors` file whose header holds the model's metadata
(`fastseg.io.serialize`); files of older fastseg versions keep it in a `<name>.json` sidecar. Never
unpickles."""

from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from fastseg import __version__
from fastseg.classes import ClassSet
from fastseg.constants import IMAGENET_MEAN, IMAGENET_STD
from fastseg.errors import FastsegError, absent
from fastseg.io.serialize import EXPORT_WEIGHTS, legacy_sidecar, meta_file, read_meta, save_tensors


def weights_file(source: str | Path, run_best: str = "best.safetensors") -> Path:
    """The weights a user names: a .safetensors file itself, an export folder's model.safetensors, or
    a run folder's best model."""
    source = Path(source)
    if not source.is_dir():
        return source
    return source / EXPORT_WEIGHTS if (source / EXPORT_WEIGHTS).is_file() else source / run_best


def model_metadata(arch: str, classes: ClassSet, width: float, dropout: float = 0.0, **extra) -> dict:
    """The metadata of a weights file: enough to rebuild the model, feed it correctly and name (and colour) its
    outputs, so `evaluate`, `predict` and `export` need nothing else. `dropout` (Bayesian SegNet's)
    is written only when used, so the metadata of models without it is unchanged."""
    return {"arch": arch, "num_classes": classes.num, "width": width, **({"dropout": dropout} if dropout else {}),
            **classes.meta(), "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), "fastseg_version": __version__,
            **extra}


def model_classes(meta: dict) -> ClassSet:
    """The classes a weights file's metadata names (VOC's for files written before classes were saved)."""
    return ClassSet.from_meta(meta)


def save_model(model: nn.Module, path: str | Path, meta: dict) -> Path:
    """Write `model`'s state dict with `meta` in the header as one .safetensors file at `path`,
    atomically (a legacy sidecar beside it is removed). Returns the weights path."""
    path = Path(path).with_suffix(".safetensors")
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    return save_tensors(path, state, meta)


def require_weights(path: str | Path) -> Path:
    """`path` as a Path; raises FastsegError (one sentence) when no such file exists."""
    path = Path(path)
    if not path.is_file():
        raise FastsegError(f"Weights file {path} {absent(path)}; pass a .safetensors file written by fastseg.")
    return path


def read_metadata(path: str | Path) -> dict:
    """The metadata of a weights file: its header's, or a legacy file's JSON sidecar.

    Raises:
        FastsegError: there is none, or it is not fastseg model metadata (arch, num_classes, width).
    """
    path = Path(path)
    try:
        meta = read_meta(path)
    except (OSError, ValueError):
        if meta_file(path) == path:
            raise FastsegError(f"Weights file {path} is not a safetensors file; pass the .safetensors "
                               "file that fastseg wrote (fastseg never loads pickled files).") from None
        meta = {}  # a legacy sidecar that is not JSON: refused below, naming it
    if meta is None:
        raise FastsegError(f"Weights file {path} has no metadata file {legacy_sidecar(path)} and no metadata "
                           "inside; pass weights written by fastseg (keep a legacy .json beside its file).")
    try:
        meta["arch"], meta["num_classes"], meta["width"]  # noqa: B018 - presence check
    except (KeyError, TypeError, IndexError):
        raise FastsegError(f"Metadata file {meta_file(path)} is not fastseg model metadata (arch, "
                           "num_classes, width); pass weights written by fastseg.") from None
    return meta


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild a model from weights file `path` (`save_model`'s, or a legacy one with its sidecar).
    Returns (model in eval mode, meta).

    Raises:
        FastsegError: missing file, a file that is not safetensors, or weights not matching the metadata.
    """
    from fastseg.models import create_model

    path = require_weights(path)
    meta = read_metadata(path)
    try:
        state = load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError):
        raise FastsegError(f"Weights file {path} is not a safetensors file; pass the .safetensors "
                           "file that fastseg wrote (fastseg never loads pickled files).") from None
    try:
        model = create_model(meta["arch"], meta["num_classes"], width=meta["width"], dropout=meta.get("dropout", 0.0))
    except (ValueError, TypeError) as err:
        raise FastsegError(f"Metadata file {meta_file(path)} names a model fastseg cannot build ({err}); "
                           "pass weights written by fastseg.") from None
    try:
        model.load_state_dict(state)
    except RuntimeError:
        raise FastsegError(f"Weights file {path} does not match its metadata ({meta['arch']}, width "
                           f"{meta['width']}); pass the file fastseg wrote, unchanged.") from None
    return model.to(device).eval(), meta


def set_temperature(path: str | Path, temperature: float) -> Path:
    """Record a fitted softmax temperature (logits / T) in the metadata of weights file `path`, which
    is rewritten atomically (as one file, also when it had a legacy sidecar); predict's probabilities
    and the export use it. Returns the weights path."""
    model, meta = load_model(path)
    return save_model(model, path, meta | {"temperature": temperature})
