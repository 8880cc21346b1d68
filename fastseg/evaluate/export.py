"""`fastseg export`: ONNX with dynamic batch, height and width, and a self-describing model folder.

SegNet's MaxUnpool is exported as a ScatterElements into a zero tensor of the encoder's pre-pool
size (see models.blocks.Unpool), since the exporter's MaxUnpool takes no runtime output size.

The folder (`--format folder`) holds model.safetensors, config.json (everything needed to build
and feed the model) and a README.md model card, named as the Hugging Face Hub's PyTorch mixin
names them; `fastseg.models.load_pretrained(DIR)`, `predict --weights DIR` and `evaluate DIR` load
it. With `--onnx` it also holds model.onnx, which takes RGB in [0, 1] (the normalisation is inside
the graph), and parity.json: ONNX Runtime against PyTorch on the run's validation split.
"""

import json
import warnings
from pathlib import Path

import torch
from torch import nn

from fastseg import __version__
from fastseg.constants import IMAGENET_MEAN, IMAGENET_STD, MIN_OPSET, MIN_SIZE, ONNX_OPSET
from fastseg.errors import FastsegError
from fastseg.io.atomic import atomic_write
from fastseg.io.runs import BEST, CONFIG
from fastseg.io.serialize import EXPORT_CONFIG, EXPORT_WEIGHTS
from fastseg.models.weights import load_model, model_classes, save_model


def export_onnx(weights: str | Path, out: str | Path, opset: int = ONNX_OPSET, sample_size: int = 64,
                normalise: bool = False, probabilities: bool = False) -> Path:
    """Write `out` (.onnx): input "image" N×3×H×W float32 (normalised, or with `normalise` RGB in
    [0, 1] and the normalisation in the graph), output "logits" N×C×H×W and, with `probabilities`,
    "probabilities" N×C×H×W: softmax(logits / T) at the sidecar's temperature T (1 if none). A missing
    parent folder is created, as the folder export creates its --out."""
    if opset < MIN_OPSET:
        raise FastsegError(f"--opset {opset} is too old; use {MIN_OPSET} or newer.")
    model, meta = load_model(weights)
    if normalise:
        model = Normalised(model, meta["mean"], meta["std"]).eval()
    outputs = ["logits"]
    if probabilities:
        model, outputs = WithProbabilities(model, meta.get("temperature", 1.0)).eval(), ["logits", "probabilities"]
    example = torch.randn(1, 3, sample_size, sample_size)
    axes = {0: "batch", 2: "height", 3: "width"}
    def write(tmp: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (example,), str(tmp), dynamo=False, opset_version=opset, input_names=["image"],
                              output_names=outputs, dynamic_axes={name: axes for name in ["image", *outputs]})
        add_onnx_metadata(tmp, meta, normalise)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write(Path(out), write)
    return Path(out)


def add_onnx_metadata(path: Path, meta: dict, normalised: bool) -> None:
    """Record in the ONNX file's metadata_props what a consumer needs: the classes (JSON list of
    {id, name, color}), the void label, arch, width and the input normalisation."""
    import onnx
    model = onnx.load(str(path))
    props = {"fastseg_classes": json.dumps(class_table(meta)), "void_label": "255", "arch": meta["arch"],
             "width": str(meta["width"]), "mean": json.dumps(meta["mean"]), "std": json.dumps(meta["std"]),
             "input": "RGB in [0, 1]" if normalised else "RGB in [0, 1], normalised by mean and std",
             "fastseg_version": __version__}
    onnx.helper.set_model_props(model, props)
    onnx.save(model, str(path))


EXPORT_FORMAT = "fastseg-model/1"  # config.json's "format": what load_pretrained reads
CARD, ONNX, PARITY = "README.md", "model.onnx", "parity.json"


class Normalised(nn.Module):
    """The model behind its input normalisation: N×3×H×W RGB in [0, 1] → logits N×C×H×W."""

    def __init__(self, model: nn.Module, mean=IMAGENET_MEAN, std=IMAGENET_STD):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x - self.mean) / self.std)


class WithProbabilities(nn.Module):
    """`model` with a second output: N×3×H×W → (logits, softmax(logits / temperature)), N×C×H×W each."""

    def __init__(self, model: nn.Module, temperature: float = 1.0):
        super().__init__()
        self.model, self.temperature = model, temperature

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.model(x)
        return logits, (logits / self.temperature).softmax(1)


def class_table(meta: dict) -> list[dict]:
    """[{id, name, color}] of a sidecar's classes: their colours, else the VOC colour map's."""
    classes = model_classes(meta)
    palette = classes.palette()
    return [{"id": i, "name": n, "color": palette[3 * i:3 * i + 3]} for i, n in enumerate(classes.names)]


def export_config(meta: dict) -> dict:
    """config.json of an export folder: the model (arch, width, classes with names and colours), the
    input contract, and where it came from."""
    classes = model_classes(meta)
    return {"format": EXPORT_FORMAT, "arch": meta["arch"], "num_classes": meta["num_classes"], "width": meta["width"],
            **{k: meta[k] for k in ("dropout", "temperature") if k in meta},
            "classes": class_table(meta), **{k: v for k, v in classes.meta().items() if k != "classes"},
            "void_label": 255, "mean": meta["mean"], "std": meta["std"],
            "input": {"layout": "N×3×H×W", "dtype": "float32", "colour": "RGB",
                      "values": "[0, 1], then (x - mean) / std", "min_side": MIN_SIZE, "any_size": True},
            "output": "logits N×num_classes×H×W", "epoch": meta.get("epoch"), "monitor": meta.get("monitor", "miou"),
            "fastseg_version": __version__}


def check_export_out(out: Path) -> None:
    """Refuse an --out that holds anything but an earlier export (nothing the user had is overwritten)."""
    if not out.exists():
        return
    mine = {EXPORT_WEIGHTS, EXPORT_CONFIG, CARD, ONNX, PARITY}
    foreign = sorted(p.name for p in out.iterdir() if p.name not in mine)
    try:
        config = out / EXPORT_CONFIG
        ours = not config.is_file() or json.loads(config.read_text()).get("format") == EXPORT_FORMAT
    except (OSError, ValueError, AttributeError):
        ours = False
    if foreign or not ours:
        raise FastsegError(f"--out {out} already holds other files ({', '.join(foreign) or EXPORT_CONFIG}); "
                           "export into a new or empty folder.")


def export_folder(run: Path, out: Path, onnx: bool = False, opset: int = ONNX_OPSET,
                  probabilities: bool = False) -> Path:
    """Write the model folder of a run's best.safetensors into `out` (see the module docstring)."""
    if not (run / BEST).is_file() or not (run / CONFIG).is_file():
        raise FastsegError(f"{run} is not a run folder with {BEST}; pass a folder written by `fastseg fit`.")
    check_export_out(out)
    model, meta = load_model(run / BEST)
    out.mkdir(parents=True, exist_ok=True)
    config = export_config(meta)
    save_model(model, out / EXPORT_WEIGHTS, config)  # and config.json, a copy of its header's metadata
    for stale in (ONNX, PARITY, CARD):  # an earlier export's files, which may be of another model
        (out / stale).unlink(missing_ok=True)
    parity = None
    if onnx:
        export_onnx(out / EXPORT_WEIGHTS, out / ONNX, opset=opset, normalise=True, probabilities=probabilities)
        parity = onnx_parity(Normalised(model, meta["mean"], meta["std"]).eval(), out / ONNX, run,
                             temperature=meta.get("temperature", 1.0) if probabilities else None)
        atomic_write(out / PARITY, lambda tmp: tmp.write_text(json.dumps(parity, indent=2)))
    from fastseg.evaluate.report import model_card
    card = model_card(run, config, parity)
    atomic_write(out / CARD, lambda tmp: tmp.write_text(card))
    return out


def onnx_parity(wrapped: nn.Module, onnx_path: Path, run: Path, device=None, temperature: float | None = None) -> dict:
    """ONNX Runtime (on the CPU) against PyTorch on `device` (default: CUDA when present; `wrapped`:
    the model behind its normalisation, as the ONNX graph is) on the run's validation split at native
    size: the share of pixels whose class agrees, the largest logit difference, and both mIoUs
    against the masks. PyTorch computes in full fp32 (cuDNN's TF32 off), as ONNX Runtime does: TF32's
    10-bit mantissa alone flips 0.2 % of an under-trained model's pixels. With `temperature`, the
    graph's second output is checked too: the largest difference from softmax(logits / temperature)."""
    import onnxruntime as ort

    from fastseg.data.images import read_image
    from fastseg.data.samples import sample_mask_array
    from fastseg.data.splits import build_split
    from fastseg.devices.select import pick_device
    from fastseg.evaluate.metrics import confusion_matrix, scores
    from fastseg.io.runs import load_config
    cfg = load_config(run / CONFIG)
    samples = build_split(cfg.data.valid_split, cfg.data.roots)
    device = pick_device(device)
    wrapped = wrapped.to(device)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    agree = total = 0
    worst = worst_prob = 0.0
    cms = {"pytorch": 0, "onnxruntime": 0}
    for sample in samples:
        x = torch.from_numpy(read_image(sample.image).copy()).permute(2, 0, 1)[None].float() / 255
        with torch.no_grad(), torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
            ref = wrapped(x.to(device)).cpu()
        outputs = session.run(None, {"image": x.numpy()})
        got = torch.from_numpy(outputs[0])
        worst = max(worst, float((got - ref).abs().max()))
        if temperature is not None:
            expected = (ref / temperature).softmax(1)
            worst_prob = max(worst_prob, float((torch.from_numpy(outputs[1]) - expected).abs().max()))
        target = torch.from_numpy(sample_mask_array(sample)).long()[None]
        for name, logits in (("pytorch", ref), ("onnxruntime", got)):
            cms[name] = cms[name] + confusion_matrix(logits.argmax(1), target, ref.shape[1])
        agree += int((got.argmax(1) == ref.argmax(1)).sum())
        total += ref[0, 0].numel()
    mious = {name: scores(cm)["miou"] for name, cm in cms.items()}  # mIoU averages every class either way
    return {"split": cfg.data.valid_split, "images": len(samples), "pixel_agreement": agree / total,
            "max_abs_logit_difference": worst, "miou_pytorch": mious["pytorch"],
            "miou_onnxruntime": mious["onnxruntime"], "miou_difference": mious["onnxruntime"] - mious["pytorch"],
            "onnxruntime": ort.__version__, "torch": torch.__version__, "torch_device": str(device),
            **({"max_abs_probability_difference": worst_prob, "temperature": temperature}
               if temperature is not None else {})}
