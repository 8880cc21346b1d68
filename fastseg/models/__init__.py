"""The models wing: SegNet (segnet), the VGG16-BN skip model (vgg_unet), their shared encoder and
blocks, the demo's colour-only control (colour_control), ImageNet encoder weights (pretrained) and
weights files as safetensors + JSON (weights). `create_model(arch, ...)` is the only way the rest
of fastseg builds a model.

May import: fastseg's base modules (config, console, constants, errors) and fastseg.io.
"""

from pathlib import Path

from torch import nn

from fastseg.config import Arch
from fastseg.constants import NUM_CLASSES
from fastseg.models.blocks import he_init
from fastseg.models.colour_control import ColourControl
from fastseg.models.pretrained import is_fastseg_weights, load_encoder_weights, load_fastseg_weights
from fastseg.models.segnet import SegNet
from fastseg.models.vgg_unet import VGGUNet

MODELS: dict[str, type[nn.Module]] = {Arch.SEGNET: SegNet, Arch.SKIP: VGGUNet}
"""CLI name → model class; the CLI's --arch choices come from here."""

BASELINES: dict[str, type[nn.Module]] = {Arch.COLOUR_CONTROL: ColourControl}
"""Reference models for experiments (the demo's colour-only control); not offered by the CLI."""


def create_model(arch: str, num_classes: int = NUM_CLASSES, pretrained: str | Path | None = None,
                 width: float = 1.0, dropout: float = 0.0) -> nn.Module:
    """Build a registered model.

    Args:
        arch: a key of MODELS.
        pretrained: None or "none" (from scratch), "imagenet" (torchvision's VGG16_BN IMAGENET1K_V1
            through its weight cache), a path to a .pth / .safetensors VGG16-BN state dict (the
            encoder), or a fastseg weights file with its sidecar (the whole model, fine-tuned; the
            head is re-initialised when its class count differs).
        width: channel multiplier; 1.0 is the faithful model and the only one taking ImageNet weights.
        dropout: Bayesian SegNet's central dropout probability (models.dropout); 0 builds no dropout.

    Raises:
        ValueError: unknown arch (the message lists the valid ones).
    """
    known = MODELS | BASELINES
    if arch not in known:
        raise ValueError(f"Unknown arch '{arch}'; choose one of: {', '.join(MODELS)}.")
    if width <= 0:
        raise ValueError(f"width must be positive, got {width}.")
    kwargs = {"dropout": dropout} if dropout else {}  # the colour control has no dropout
    model = he_init(known[arch](num_classes=num_classes, width=width, **kwargs))
    if pretrained not in (None, "none", "imagenet") and Path(pretrained).is_dir():  # a run or export folder
        from fastseg.models.weights import weights_file
        pretrained = weights_file(pretrained)
    if pretrained not in (None, "none") and is_fastseg_weights(pretrained):
        load_fastseg_weights(model, pretrained, arch, width)
    elif pretrained not in (None, "none"):
        load_encoder_weights(model.encoder, pretrained, width)
    return model


def load_pretrained(folder: str | Path, device="cpu") -> tuple[nn.Module, dict]:
    """A model exported by `fastseg export RUN --format folder` (model.safetensors + config.json), in
    eval mode, with its config: nothing of fastseg's run layout is needed. For example:

        model, config = load_pretrained("exports/segnet-voc")
        logits = model(images)  # N×3×H×W RGB in [0, 1] normalised by config["mean"] and config["std"]
    """
    from fastseg.models.weights import EXPORT_WEIGHTS, load_model
    return load_model(Path(folder) / EXPORT_WEIGHTS, device)
