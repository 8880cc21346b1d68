"""Model weights on disk: `<name>.safetensors` plus a `<name>.json` sidecar. Never unpickles."""

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save
from torch import nn

from fastseg import __version__
from fastseg.classes import ClassSet
from fastseg.constants import IMAGENET_MEAN, IMAGENET_STD
from fastseg.errors import FastsegError, absent
from fastseg.io.atomic import atomic_write

EXPORT_WEIGHTS, EXPORT_CONFIG = "model.safetensors", "config.json"
"""An exported model folder (`fastseg export RUN --format folder`), named as the Hugging Face Hub's
PyTorch mixin names them: the weights and, as their sidecar, config.json."""


def sidecar_path(weights: Path) -> Path:
    """The JSON file beside a .safetensors file: `<name>.json`, or config.json for an export folder's
    model.safetensors."""
    return weights.with_name(EXPORT_CONFIG) if weights.name == EXPORT_WEIGHTS else weights.with_suffix(".json")


def weights_file(source: str | Path, run_best: str = "best.safetensors") -> Path:
    """The weights a user names: a .safetensors file itself, an export folder's model.safetensors, or
    a run folder's best model."""
    source = Path(source)
    if not source.is_dir():
        return source
    return source / EXPORT_WEIGHTS if (source / EXPORT_WEIGHTS).is_file() else source / run_best


def model_metadata(arch: str, classes: ClassSet, width: float, dropout: float = 0.0, **extra) -> dict:
    """The sidecar content: enough to rebuild the model, feed it correctly and name (and colour) its
    outputs, so `evaluate`, `predict` and `export` need nothing else. `dropout` (Bayesian SegNet's)
    is written only when used, so sidecars of models without it are unchanged."""
    return {"arch": arch, "num_classes": classes.num, "width": width, **({"dropout": dropout} if dropout else {}),
            **classes.meta(), "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), "fastseg_version": __version__,
            **extra}


def model_classes(meta: dict) -> ClassSet:
    """The classes a sidecar names (VOC's for sidecars written before classes were saved)."""
    return ClassSet.from_meta(meta)


def save_model(model: nn.Module, path: str | Path, meta: dict) -> Path:
    """Write `model`'s state dict to `path` (.safetensors) and `meta` to its JSON sidecar, each
    atomically. Returns the weights path."""
    path = Path(path).with_suffix(".safetensors")
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    atomic_write(path, lambda tmp: tmp.write_bytes(save(state, metadata={"arch": meta["arch"]})))
    atomic_write(sidecar_path(path), lambda tmp: tmp.write_text(json.dumps(meta, indent=2)))
    return path


def require_weights(path: str | Path) -> Path:
    """`path` as a Path; raises FastsegError (one sentence) when no such file exists."""
    path = Path(path)
    if not path.is_file():
        raise FastsegError(f"Weights file {path} {absent(path)}; pass a .safetensors file written by fastseg.")
    return path


def read_metadata(path: str | Path) -> dict:
    """The JSON sidecar of a weights file.

    Raises:
        FastsegError: the sidecar is missing or not valid JSON with arch/num_classes/width.
    """
    side = sidecar_path(Path(path))
    try:
        meta = json.loads(side.read_text())
        meta["arch"], meta["num_classes"], meta["width"]  # noqa: B018 - presence check
    except FileNotFoundError:
        raise FastsegError(f"Weights file {path} has no metadata file {side}; keep the .json that "
                           "fastseg wrote beside it.") from None
    except (ValueError, KeyError, TypeError):
        raise FastsegError(f"Metadata file {side} is not fastseg model metadata (arch, num_classes, "
                           "width); restore the .json that fastseg wrote.") from None
    return meta


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild a model from `path` (.safetensors + JSON sidecar). Returns (model in eval mode, meta).

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
        raise FastsegError(f"Metadata file {sidecar_path(path)} names a model fastseg cannot build ({err}); "
                           "restore the .json that fastseg wrote beside the weights.") from None
    try:
        model.load_state_dict(state)
    except RuntimeError:
        raise FastsegError(f"Weights file {path} does not match its metadata ({meta['arch']}, width "
                           f"{meta['width']}); keep each .safetensors with its own .json.") from None
    return model.to(device).eval(), meta


def set_temperature(path: str | Path, temperature: float) -> Path:
    """Record a fitted softmax temperature (logits / T) in the sidecar of weights file `path`, written
    atomically; predict's probabilities and the export use it. Returns the sidecar's path."""
    side = sidecar_path(Path(path))
    meta = read_metadata(path) | {"temperature": temperature}
    atomic_write(side, lambda tmp: tmp.write_text(json.dumps(meta, indent=2)))
    return side
