"""The models wing: SegNet (segnet), the VGG16-BN skip model (vgg_unet), their shared encoder and
blocks, the demo's colour-only control (colour_control), ImageNet encoder weights (pretrained) and
weights files (weights). `create_model(arch, ...)` is the only way the rest of fastseg builds a model.

The registry: `ARCHS` maps each architecture's name to its `ArchSpec`. Adding an architecture is
one module plus one `register_arch` entry; `fit --arch` (its choices and help), the weights'
metadata, the export and the model card all read it. This module imports no torch (the command
line reads `ARCHS` before it needs a model); a model's module is imported when it is built.

May import: fastseg's base modules (config, console, constants, errors) and fastseg.io.
"""

from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path

from fastseg.constants import NUM_CLASSES


@dataclass(frozen=True)
class ArchSpec:
    """One architecture. Its model takes (num_classes, width[, dropout]) and returns logits N×C×H×W at
    the input's H×W for N×3×H×W input, and has `.encoder` and `.head` (fit trains them with separate
    learning rates; `--head-prior` initialises the head's biases).

    Attributes:
        name: the `--arch` word, and the name the weights' metadata records.
        builder: the model class (or any callable), or "module:attribute" imported when first built.
        help: one phrase for `fit --help` and the model card, e.g. "SegNet (VGG16-BN encoder, pooling indices)".
        cli: offered by `--arch` (False for reference models such as the demo's colour control).
    """

    name: str
    builder: Callable | str
    help: str
    cli: bool = True

    def model_class(self) -> Callable:
        """The builder, imported from its "module:attribute" on first use."""
        if not isinstance(self.builder, str):
            return self.builder
        module, _, attribute = self.builder.partition(":")
        return getattr(import_module(module), attribute)


ARCHS: dict[str, ArchSpec] = {}
"""Architecture name → ArchSpec, in registration order (the order `--arch` lists them)."""


def register_arch(spec: ArchSpec) -> ArchSpec:
    """Add `spec` to ARCHS (replacing one of the same name). Returns it."""
    ARCHS[spec.name] = spec
    return spec


def cli_archs() -> list[str]:
    """The names `--arch` offers."""
    return [name for name, spec in ARCHS.items() if spec.cli]


register_arch(ArchSpec("segnet", "fastseg.models.segnet:SegNet",
                       "SegNet: VGG16-BN encoder, decoder upsampling by the pooling indices"))
register_arch(ArchSpec("skip", "fastseg.models.vgg_unet:VGGUNet",
                       "VGG16-BN skip model: encoder features concatenated into the decoder"))
register_arch(ArchSpec("colour-control", "fastseg.models.colour_control:ColourControl",
                       "colour-only control: per-pixel 1×1 convolutions", cli=False))


def unknown_arch(arch: str) -> str:
    """The sentence refusing an architecture name, listing the ones `--arch` offers."""
    return f"Unknown arch '{arch}'; choose one of: {', '.join(cli_archs())}."


def create_model(arch: str, num_classes: int = NUM_CLASSES, pretrained: str | Path | None = None,
                 width: float = 1.0, dropout: float = 0.0):
    """Build a registered model (an nn.Module, He-initialised).

    Args:
        arch: a key of ARCHS.
        pretrained: None or "none" (from scratch), "imagenet" (torchvision's VGG16_BN IMAGENET1K_V1
            through its weight cache), a path to a .pth / .safetensors VGG16-BN state dict (the
            encoder), or a fastseg weights file (the whole model, fine-tuned; the head is
            re-initialised when its class count differs).
        width: channel multiplier; 1.0 is the faithful model and the only one taking ImageNet weights.
        dropout: Bayesian SegNet's central dropout probability (models.dropout); 0 builds no dropout.

    Raises:
        ValueError: unknown arch (the message lists the valid ones), or width not positive.
    """
    if arch not in ARCHS:
        raise ValueError(unknown_arch(arch))
    if width <= 0:
        raise ValueError(f"width must be positive, got {width}.")
    from fastseg.models.blocks import he_init
    from fastseg.models.pretrained import is_fastseg_weights, load_encoder_weights, load_fastseg_weights
    kwargs = {"dropout": dropout} if dropout else {}  # models without dropout need not take it
    model = he_init(ARCHS[arch].model_class()(num_classes=num_classes, width=width, **kwargs))
    if pretrained not in (None, "none", "imagenet") and Path(pretrained).is_dir():  # a run or export folder
        from fastseg.models.weights import weights_file
        pretrained = weights_file(pretrained)
    if pretrained not in (None, "none") and is_fastseg_weights(pretrained):
        load_fastseg_weights(model, pretrained, arch, width)
    elif pretrained not in (None, "none"):
        load_encoder_weights(model.encoder, pretrained, width)
    return model


def load_pretrained(folder: str | Path, device="cpu"):
    """A model exported by `fastseg export RUN --format folder` (model.safetensors, its metadata in the
    header, + config.json), in eval mode, with its config: nothing of fastseg's run layout is needed.
    For example:

        model, config = load_pretrained("exports/segnet-voc")
        logits = model(images)  # N×3×H×W RGB in [0, 1] normalised by config["mean"] and config["std"]
    """
    from fastseg.models.weights import EXPORT_WEIGHTS, load_model
    return load_model(Path(folder) / EXPORT_WEIGHTS, device)
