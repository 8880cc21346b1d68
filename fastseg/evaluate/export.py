"""ONNX export with dynamic batch, height and width.

SegNet's MaxUnpool is exported as a ScatterElements into a zero tensor of the encoder's pre-pool
size (see models.blocks.Unpool), since the exporter's MaxUnpool takes no runtime output size.
"""

import warnings
from pathlib import Path

import torch

from fastseg.errors import FastsegError
from fastseg.io.atomic import atomic_write
from fastseg.models.weights import load_model

MIN_OPSET = 11  # ScatterElements and dynamic Resize


def export_onnx(weights: str | Path, out: str | Path, opset: int = 17, sample_size: int = 64) -> Path:
    """Write `out` (.onnx): input "image" N×3×H×W float32, output "logits" N×C×H×W."""
    if opset < MIN_OPSET:
        raise FastsegError(f"--opset {opset} is too old; use {MIN_OPSET} or newer.")
    model, _ = load_model(weights)
    example = torch.randn(1, 3, sample_size, sample_size)
    axes = {0: "batch", 2: "height", 3: "width"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        atomic_write(Path(out), lambda tmp: torch.onnx.export(
            model, (example,), str(tmp), dynamo=False, opset_version=opset, input_names=["image"],
            output_names=["logits"], dynamic_axes={"image": axes, "logits": axes}))
    return Path(out)
