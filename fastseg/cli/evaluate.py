"""`fastseg export`, `evaluate` and `predict`: using a trained model."""

import functools
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from fastseg.cli import app
from fastseg.cli.common import (
    RUNS,
    ClassesOpt,
    DeviceOpt,
    EndpointOpt,
    McOpt,
    NnodesOpt,
    NprocOpt,
    RunsOpt,
    SbdOpt,
    SkipBadOpt,
    Voc11Opt,
    friendly,
    given_roots,
    run_processes,
)
from fastseg.config import (
    EVAL_SPLITS,
    FOLDER_SPLITS,
    TRAIN_SPLITS,
)
from fastseg.console import console, log
from fastseg.constants import DEFAULT_OVERLAP, DEFAULT_TILE, MIN_OPSET, MIN_SIZE, ONNX_OPSET
from fastseg.errors import FastsegError


@app.command(epilog="Example: fastseg export runs/segnet-voc --format folder --out exports/segnet-voc --onnx")
@friendly
def export(weights: Annotated[Path, typer.Argument(help="A .safetensors file written by fastseg (onnx), or a "
                                                       "run folder (folder).")],
           format: Annotated[str, typer.Option("--format", help="onnx (one file) or folder (model.safetensors, "
                                               "config.json and a README.md model card).")] = "onnx",
           out: Annotated[Path | None, typer.Option(help="Output file or folder (default: beside the weights; "
                                                         "required for folder).")] = None,
           onnx: Annotated[bool, typer.Option("--onnx", help="With --format folder: also model.onnx (normalisation "
                                              "inside) and parity.json against PyTorch.")] = False,
           opset: Annotated[int, typer.Option(help=f"ONNX opset (at least {MIN_OPSET}).")] = ONNX_OPSET,
           probs: Annotated[bool, typer.Option("--probs", help="A second ONNX output, \"probabilities\": softmax of "
                                               "the logits at the calibrated temperature (evaluate --calibrate).")]
           = False):
    """Export weights to ONNX with dynamic batch, height and width, or a run as a self-describing model folder."""
    from fastseg.evaluate.export import export_folder, export_onnx
    if format == "folder":
        if out is None:
            raise FastsegError("--format folder needs --out DIR, the folder to write the model into.")
        log(f"Wrote {export_folder(weights, out, onnx, opset, probs)}")
        return
    if format != "onnx":
        raise FastsegError(f"--format {format} is not supported; use onnx or folder.")
    path = export_onnx(weights, out or weights.with_suffix(".onnx"), opset=opset, probabilities=probs)
    log(f"Wrote {path}")


@app.command(epilog="Example: fastseg evaluate runs/segnet-voc --split seg11valid --tta flip")
@friendly
def evaluate(source: Annotated[Path | None, typer.Argument(help="Run folder or .safetensors (or latest).")] = None,
             split: Annotated[str | None, typer.Option("--split", help="Split (default: the run's): "
                                                       f"{', '.join(EVAL_SPLITS + TRAIN_SPLITS)}, or "
                                                       f"{'/'.join(FOLDER_SPLITS)} of a --data folder.")] = None,
             tta: Annotated[str, typer.Option(help="Test-time augmentation: none or flip.")] = "none",
             tta_scales: Annotated[str, typer.Option(help="Comma-separated scales, e.g. 0.75,1,1.25.")] = "1",
             voc: Annotated[Path | None, typer.Option("--voc", help="VOC2012 folder (default: the run's).")] = None,
             sbd: SbdOpt = None, voc11: Voc11Opt = None,
             data: Annotated[Path | None, typer.Option("--data", help="A folder dataset (default: the run's).")] = None,
             classes: ClassesOpt = None,
             bs: Annotated[int | None, typer.Option("--bs", help="Batch size (default: the run's).")] = None,
             runs_dir: RunsOpt = RUNS, device: DeviceOpt = None, skip_bad: SkipBadOpt = False,
             mc: McOpt = 0,
             calibrate: Annotated[bool, typer.Option("--calibrate", help="Fit a softmax temperature on this split, "
                                                     "save it in the weights' metadata (predict --probs and export "
                                                     "use it) and report NLL and ECE before and after.")] = False,
             nproc: NprocOpt = 1, nnodes: NnodesOpt = 1, rdzv_endpoint: EndpointOpt = None):
    """Score at native resolution: per-class table, mIoU with a bootstrap 95 % interval, calibration (ECE, NLL,
    entropy AUROC), metrics.json, figures."""
    from fastseg.evaluate.scoring import evaluate_run
    from fastseg.io.runs import latest_run
    if tta not in ("none", "flip"):
        raise FastsegError(f"--tta {tta} is not known; use none or flip.")
    scales = _scales(tta_scales)
    source = source or latest_run(runs_dir)
    if not source.exists():
        raise FastsegError(f"{source} does not exist; pass a run folder or a .safetensors file written by fastseg.")
    roots = given_roots(voc, sbd, voc11, data, classes)
    func = functools.partial(evaluate_run, source, split, device, bs, tta == "flip", scales, roots, skip_bad, mc,
                             calibrate)
    path, metrics = run_processes(func, nproc, nnodes, rdzv_endpoint, device)
    _print_metrics(metrics)  # rank 0 only under torchrun
    log(f"Wrote {path} and figures beside it.")



def _scales(text: str) -> tuple[float, ...]:
    try:
        scales = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise FastsegError(f"--tta-scales {text} is not a comma-separated list of numbers, e.g. 0.75,1,1.25.") from None
    if any(s <= 0 for s in scales):
        raise FastsegError(f"--tta-scales {text} must be positive numbers.")
    return scales


def _print_metrics(m: dict) -> None:
    from fastseg.devices.distributed import is_main
    if not is_main():
        return
    table = Table(title=f"{m['split']} ({m['images']} images)")
    for column in ("class", "IoU", "accuracy"):
        table.add_column(column, justify="left" if column == "class" else "right")
    for name, row in m["per_class"].items():
        table.add_row(name, *(f"{row[k]:.4f}" if row[k] == row[k] else "n/a" for k in ("iou", "acc")))
    console.print(table)
    lo, hi = m["miou_ci95"]
    log(f"mIoU {m['miou']:.4f} (95% CI {lo:.4f}-{hi:.4f}), foreground mIoU {m['fg_miou']:.4f} "
        f"({m['fg_miou_note']}), pixel acc {m['pixel_acc']:.4f}, mean acc {m['mean_acc']:.4f}")
    if "tta_gain" in m:
        log(f"TTA gain: {m['tta_gain']:+.4f} mIoU over {m['miou_without_tta']:.4f} without TTA")


@app.command(epilog="Example: fastseg predict photos/ --weights runs/segnet-voc --out masks")
@friendly
def predict(inputs: Annotated[list[Path], typer.Argument(help="Image files or folders.")],
            weights: Annotated[Path, typer.Option(help="A .safetensors file (or run folder) written by fastseg.")],
            out: Annotated[Path, typer.Option(help="Folder for masks and overlays.")] = Path("predictions"),
            tile: Annotated[int, typer.Option(help="Images with a longer side above this are tiled.")] = DEFAULT_TILE,
            overlap: Annotated[int, typer.Option(help="Overlap between tiles in pixels.")] = DEFAULT_OVERLAP,
            mc: McOpt = 0,
            probs: Annotated[bool, typer.Option("--probs", help="Also per image: NAME_uncertainty.safetensors "
                                                "(confidence, entropy, and with --mc the sampled variance) and "
                                                "NAME_uncertainty.png to look at.")] = False,
            device: DeviceOpt = None):
    """Palette PNG masks (the model's class colours) at each image's size, plus overlays; large images by
    sliding window; with --probs, confidence and entropy maps."""
    from fastseg.devices.select import pick_device
    from fastseg.evaluate.predict import Uncertainty, predict_files
    from fastseg.models.weights import load_model, model_classes, weights_file
    if tile < MIN_SIZE or not 0 <= overlap < tile:
        raise FastsegError(f"--tile {tile} must be at least {MIN_SIZE} and --overlap {overlap} between 0 and "
                           "the tile size.")
    device = pick_device(device)
    model, meta = load_model(weights_file(weights), device)
    report = predict_files(model, inputs, out, device, tile, overlap, model_classes(meta).palette(),
                           Uncertainty(mc, probs, meta.get("temperature", 1.0)))
    log(f"Wrote {len(report.written)} mask(s) and overlay(s) to {out}.")
    for path, reason in report.failed:
        log(f"Could not read {path} ({reason}); skipped.")
    if report.failed:
        raise typer.Exit(1)


