"""ImageNet VGG16-BN weights for the encoder, from torchvision's cache or a local file."""

from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from fastseg.console import log
from fastseg.errors import FastsegError
from fastseg.io.runs import LAST

IMAGENET_FILE = "vgg16_bn-6c64b313.pth"  # torchvision's VGG16_BN_Weights.IMAGENET1K_V1 file name


def imagenet_cache_path() -> Path:
    """Where torchvision caches the ImageNet file: $TORCH_HOME/hub/checkpoints/."""
    return Path(torch.hub.get_dir()) / "checkpoints" / IMAGENET_FILE


def imagenet_state_dict() -> dict[str, torch.Tensor]:
    """torchvision's VGG16_BN IMAGENET1K_V1 state dict through its weight API (cached download)."""
    from torchvision.models import VGG16_BN_Weights

    try:
        return VGG16_BN_Weights.IMAGENET1K_V1.get_state_dict(progress=True, weights_only=True)
    except OSError as err:  # URLError and friends: offline, proxy, DNS
        raise FastsegError(
            f"Could not download the ImageNet VGG16-BN weights ({err}); put {IMAGENET_FILE} in "
            f"{imagenet_cache_path().parent} or pass --pretrained none."
        ) from None


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from a .safetensors file or a .pth file (loaded with weights_only=True)."""
    if not path.is_file():
        raise FastsegError(f"Pretrained weights file {path} does not exist; pass a .pth or "
                           ".safetensors VGG16-BN state dict, 'imagenet' or 'none'.")
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path))
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # any parse failure means the file is not what it claims
        raise FastsegError(f"Pretrained weights file {path} could not be read as a state dict "
                           f"({type(err).__name__}); pass a torchvision VGG16-BN state dict.") from None


def load_encoder_weights(encoder: nn.Module, source: str | Path, width: float) -> None:
    """Copy VGG16-BN `features.*` weights into `encoder` (torchvision key names); the decoder is
    not touched. Classifier keys in the file are ignored.

    Raises:
        FastsegError: width is not 1.0, the file is unreadable, or a feature key is missing or
            has the wrong shape.
    """
    if width != 1.0:
        raise FastsegError(f"Pretrained weights need --width 1.0 (got {width}); pass --pretrained none "
                           "for a reduced-width model.")
    state = imagenet_state_dict() if source == "imagenet" else read_state_dict(Path(source))
    features = {k: v for k, v in state.items() if k.startswith("features.")}
    try:
        encoder.load_state_dict(features, strict=True)
    except RuntimeError as err:
        first = str(err).splitlines()[1].strip() if "\n" in str(err) else str(err)
        raise FastsegError(f"Pretrained weights {source} do not fit the VGG16-BN encoder "
                           f"({first}); pass a torchvision vgg16_bn state dict.") from None


def is_fastseg_weights(source: str | Path) -> bool:
    """Whether `source` is a model fastseg wrote (a .safetensors with fastseg's model metadata: a run's
    best.safetensors or an export's model.safetensors), which `fit --pretrained` fine-tunes whole
    rather than as an encoder.

    Raises:
        FastsegError: `source` is a run's training checkpoint (last.safetensors), not a model.
    """
    from fastseg.io.serialize import read_meta
    path = Path(source)
    if not (path.suffix == ".safetensors" and path.is_file()):
        return False
    try:
        meta = read_meta(path)
        meta["arch"]  # noqa: B018 - model metadata, not a checkpoint's
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        if path.name == LAST:  # a run's resumable checkpoint
            raise FastsegError(f"{path} is a training checkpoint, not a model; fine-tune from the run's "
                               f"{path.with_name('best.safetensors')} (or pass the run folder).") from None
        return False  # a state dict, perhaps with some other .json beside it
    return True


def load_fastseg_weights(model: nn.Module, source: str | Path, arch: str, width: float) -> None:
    """Load a fastseg weights file into `model` (encoder, decoder and head). When the file's class
    count differs from the model's, the head keeps its fresh initialisation, and that is logged.

    Raises:
        FastsegError: the file's arch or width is not the model's, or its weights do not fit.
    """
    from fastseg.models.weights import read_metadata
    path = Path(source)
    meta = read_metadata(path)
    if meta["arch"] != arch or float(meta["width"]) != float(width):
        raise FastsegError(f"Pretrained weights {path} are a {meta['arch']} of width {meta['width']}; fine-tune them "
                           f"with --arch {meta['arch']} --width {meta['width']}.")
    state = read_state_dict(path)
    head_shape = tuple(model.head.weight.shape)
    keep_head = tuple(state.get("head.weight", torch.empty(0)).shape) == head_shape
    if not keep_head:
        state = {k: v for k, v in state.items() if not k.startswith("head.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or [k for k in missing if not k.startswith("head.")]:
        first = (unexpected or missing)[0]
        raise FastsegError(f"Pretrained weights {path} do not fit the {arch} model (first mismatch: {first}); pass "
                           "weights written by fastseg for the same --arch and --width.")
    if not keep_head:
        log(f"Fine-tuning {path}: encoder and decoder loaded; the head is re-initialised for "
            f"{head_shape[0]} classes (the weights have {meta['num_classes']}).")
