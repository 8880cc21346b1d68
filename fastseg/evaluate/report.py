"""The run card: `report.md` and a self-contained `report.html` (PNGs embedded) in a run folder.

Both are rendered from one list of blocks, so the two files always say the same thing.
"""

import base64
import html
import json
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch

from fastseg import __version__
from fastseg.classes import VOC, ClassSet
from fastseg.data.splits import build_split, check_leakage
from fastseg.errors import FastsegError
from fastseg.io.atomic import atomic_write
from fastseg.io.runs import BEST, CONFIG, EVALUATION, LR_FIND, load_config
from fastseg.io.serialize import read_meta

REFERENCES = [  # the seeds' published numbers (docs/results.md)
    ("SegNet seed", "train-aug / seg11valid", "60.3 mIoU, 89.9 % pixel accuracy"),
    ("VGG16-BN skip seed", "voc12-train / voc12-val-b (half of VOC12 val)", "87.95 % pixel accuracy"),
]
LR_SUGGESTIONS = ("valley", "slide", "steep", "minimum")  # the numbers of lr_find.json (beside arch, width)
FIGURES = [("Training curves", "curves.png"), ("lr_find", "lr_find.png"),
           ("Confusion matrix", "confusion_matrix.png"), ("Random images", "predictions_random.png"),
           ("Best images", "predictions_best.png"), ("Worst images", "predictions_worst.png"),
           ("Reliability diagram", "reliability.png"), ("Most uncertain images", "predictions_uncertain.png")]


def environment() -> list[tuple[str, str]]:
    """(name, version) of Python, the device and the packages behind a report; fastseg's own version
    from the package, so that a source checkout on PYTHONPATH (not pip-installed) reports it too."""
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({platform.machine()})"
    packages = [(name, installed_version(name)) for name in ("torch", "torchvision", "fastai", "albumentations")]
    return [("python", platform.python_version()), ("device", device), ("fastseg", __version__), *packages]


def installed_version(name: str) -> str:
    """The installed distribution's version, or "not installed" (a package imported from a folder)."""
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def split_rows(cfg, roots=None) -> list[tuple[str, str]]:
    """Sizes of the run's splits and their leakage check, on `roots` (default: the run's saved roots)."""
    roots = roots or cfg.data.roots
    train = build_split(cfg.data.train_split, roots)
    valid = build_split(cfg.data.valid_split, roots)
    report = check_leakage(train, valid, cfg.data.train_split, cfg.data.valid_split)
    return [(cfg.data.train_split, str(len(train))), (cfg.data.valid_split, str(len(valid))),
            ("leakage check", report.summary())]


def blocks(run: Path, metrics: dict, roots=None) -> list[tuple]:
    """(kind, payload) blocks: ("h", text), ("p", text), ("table", (header, rows)), ("img", (title, file))."""
    cfg = load_config(run / CONFIG)
    lo, hi = metrics["miou_ci95"]
    out = [("h", f"Run card: {run.name}"),
           ("p", f"{cfg.arch} (width {cfg.width}, encoder {cfg.pretrained}) evaluated on {metrics['split']} "
                 f"({metrics['images']} images): mIoU {metrics['miou']:.4f} (95 % CI {lo:.4f}-{hi:.4f}, "
                 f"bootstrap over images), foreground mIoU {metrics['fg_miou']:.4f}, pixel accuracy "
                 f"{metrics['pixel_acc']:.4f}, mean accuracy {metrics['mean_acc']:.4f}."),
           *_beside_the_seeds(metrics, ("this run", f"{cfg.data.train_split} / {metrics['split']}",
                                        f"{100 * metrics['miou']:.1f} mIoU, {100 * metrics['pixel_acc']:.2f} % "
                                        "pixel accuracy"))]
    out += [("img", (title, name)) for title, name in FIGURES if (run / name).is_file()]
    out += [("h2", "Per-class results"), per_class_table(metrics)]
    band = (f"mIoU within {metrics['boundary_band_px']} px of true boundaries: {metrics['boundary_miou']:.4f}; "
            f"interior: {metrics['interior_miou']:.4f}.")
    out += [("h2", "Error analysis"), ("p", band),
            ("table", (("truth", "predicted as", "share of truth pixels"), [
                (p["truth"], p["predicted"], f"{p['fraction']:.3f}") for p in metrics["confused_pairs"]]))]
    if "tta_gain" in metrics:
        gain = f"{metrics['tta_gain']:+.4f} mIoU over {metrics['miou_without_tta']:.4f} without it"
        out.append(("p", f"TTA {metrics['tta']}: {gain}."))
    out += uncertainty_blocks(metrics)
    out += [("h2", "Learning rate"), ("p", _lr_text(run, cfg)),
            ("h2", "Data"), ("table", (("split", "images"), split_rows(cfg, roots))),
            ("h2", "Configuration"), ("table", (("option", "value"), _config_rows(cfg))),
            ("h2", "Environment"), ("table", (("what", "version"), environment()))]
    return out


def uncertainty_blocks(metrics: dict) -> list[tuple]:
    """The card's uncertainty section: the MC dropout gain with its interval, calibration (ECE, NLL,
    before and after a fitted temperature) and how well entropy flags wrong pixels."""
    cal = metrics.get("calibration")
    if cal is None:
        return []
    out = [("h2", "Uncertainty")]
    if "mc" in metrics:
        mc = metrics["mc"]
        lo, hi = mc["gain_ci95"]
        out.append(("p", f"Monte Carlo dropout, {mc['samples']} samples: {mc['gain']:+.4f} mIoU over the "
                         f"deterministic pass ({mc['miou_deterministic']:.4f}); 95 % CI of the gain {lo:+.4f} to "
                         f"{hi:+.4f} (paired bootstrap over images)."))
    rows = [(f"temperature {c['temperature']:.3f}", f"{c['ece']:.4f}", f"{c['nll']:.4f}")
            for c in (metrics.get("calibration_before"), cal) if c is not None]
    out.append(("table", (("probabilities", "ECE (15 bins)", "NLL per pixel"), rows)))
    out.append(("p", f"Entropy flags wrong pixels with AUROC {cal['entropy_auroc']:.3f} (0.5: no better than "
                     f"chance) over {cal['pixels']} pixels."))
    return out


def _beside_the_seeds(metrics: dict, row: tuple) -> list[tuple]:
    """The seeds' published numbers with this model's `row` when it scored VOC's classes (only then do
    they compare); for a dataset of its own, the classes scored instead."""
    if tuple(metrics["per_class"]) == VOC.names:
        return [("h2", "Beside the seeds"), ("table", (("model", "splits", "result"), REFERENCES + [row]))]
    return [("p", f"Classes ({len(metrics['per_class'])}, the dataset's own): {', '.join(metrics['per_class'])}; "
                  f"foreground mIoU averages {metrics.get('fg_miou_note', 'classes 1..')}.")]


def per_class_table(metrics: dict) -> tuple:
    """("table", (header, rows)): each class's IoU and accuracy from a metrics.json."""
    return ("table", (("class", "IoU", "accuracy"), [
        (name, format_score(row["iou"]), format_score(row["acc"])) for name, row in metrics["per_class"].items()]))


def format_score(value) -> str:
    """A score to 4 decimals, "n/a" for NaN (a class with no IoU)."""
    return "n/a" if value != value else f"{value:.4f}"


def _config_rows(cfg) -> list[tuple[str, str]]:
    flat = {k: v for k, v in vars(cfg).items() if k != "data"} | vars(cfg.data)
    return [(k, str(v)) for k, v in flat.items()]


def _lr_text(run: Path, cfg) -> str:
    found = run / LR_FIND
    suggestions = json.loads(found.read_text()) if found.is_file() else {}
    shown = ", ".join(f"{k} {v:.2e}" for k, v in suggestions.items()
                      if k in LR_SUGGESTIONS and v is not None) or "lr_find was not run here"
    return f"Chosen learning rate {float(cfg.lr):.2e} ({cfg.opt}, {cfg.sched}). lr_find: {shown}."


def render_markdown(items: list[tuple]) -> str:
    lines = []
    for kind, payload in items:
        if kind in ("h", "h2"):
            lines += [("# " if kind == "h" else "## ") + payload, ""]
        elif kind == "p":
            lines += [payload, ""]
        elif kind == "table":
            header, rows = payload
            lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows] + [""]
        else:
            title, name = payload
            lines += [f"### {title}", "", f"![{title}]({name})", ""]
    return "\n".join(lines)


def render_html(items: list[tuple], run: Path) -> str:
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>fastseg run card</title><style>"
             "body{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}"
             "img{max-width:100%;border:1px solid #eee}</style></head><body>"]
    for kind, payload in items:
        if kind in ("h", "h2"):
            tag = "h1" if kind == "h" else "h2"
            parts.append(f"<{tag}>{html.escape(payload)}</{tag}>")
        elif kind == "p":
            parts.append(f"<p>{html.escape(payload)}</p>")
        elif kind == "table":
            header, rows = payload
            parts.append("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>")
            parts += ["<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows]
            parts.append("</table>")
        else:
            title, name = payload
            data = base64.b64encode((run / name).read_bytes()).decode()
            name = html.escape(title)
            parts.append(f"<h3>{name}</h3><img alt='{name}' src='data:image/png;base64,{data}'>")
    return "\n".join(parts + ["</body></html>"])


def write_report(run: Path, roots=None) -> tuple[Path, Path]:
    """Write report.md and report.html from the run's files (metrics.json must exist); the split
    sizes are counted on `roots` (DataRoots; default: the run's saved data paths)."""
    metrics_path = run / "metrics.json"
    if not metrics_path.is_file() or not (run / CONFIG).is_file():
        raise FastsegError(f"Run folder {run} has no metrics.json or config.json; run `fastseg evaluate {run}` first.")
    items = blocks(run, json.loads(metrics_path.read_text()), roots)
    md, page = run / "report.md", run / "report.html"
    atomic_write(md, lambda tmp: tmp.write_text(render_markdown(items)))
    atomic_write(page, lambda tmp: tmp.write_text(render_html(items, run)))
    return md, page


PROTOCOL = ("Evaluation protocol: every image at its native resolution, padded (bottom and right) only to its own "
            "next multiple of 32 with the padding void; void pixels (label 255: object outlines, difficult "
            "regions) are not scored; per-class IoU comes from the confusion matrix summed over the split, and a "
            "class absent from both the truth and the predictions of the split is left out of the mean (mIoU); the "
            "95 % interval is a bootstrap over images (1,000 resamples).")


def model_card(run: Path, config: dict, parity: dict | None = None) -> str:
    """The README.md of an export folder: where the model came from (data, splits, recipe), its
    numbers beside the seeds', the evaluation protocol, per-class IoU and how to load it."""
    cfg = load_config(run / CONFIG)
    evaluated = json.loads((run / EVALUATION).read_text()) if (run / EVALUATION).is_file() else None
    if evaluated and Path(evaluated["weights"]).name != BEST:  # the last evaluation was of other weights
        evaluated = None
    best = read_meta(run / BEST)
    items = [("h", f"fastseg {cfg.arch} (width {cfg.width}) from run {run.name}"),
             ("p", f"A {cfg.arch} model ({arch_phrase(cfg.arch)}; {cfg.pretrained} initialisation) for "
                   f"{_classes_text(config)}, trained by fastseg {config['fastseg_version']} on "
                   f"{cfg.data.train_split} and validated on {cfg.data.valid_split}; these weights are epoch "
                   f"{best['epoch']} of {cfg.epochs}, the best by {config['monitor']}.")]
    items += _card_results(cfg, evaluated, best["metrics"], ClassSet.from_meta(config).names == VOC.names)
    items += [("h2", "How to load"), ("p", "Python: `from fastseg.models import load_pretrained; model, config = "
                                          "load_pretrained('THIS_FOLDER')`, then feed N×3×H×W RGB in [0, 1] normalised "
                                          "by config['mean'] and config['std']. Command line: `fastseg predict IMAGES "
                                          "--weights THIS_FOLDER`, `fastseg evaluate THIS_FOLDER --voc DIR`.")]
    if parity:
        agreement, worst = 100 * parity["pixel_agreement"], parity["max_abs_logit_difference"]
        items += [("h2", "ONNX"), ("p", f"model.onnx takes RGB in [0, 1] (the normalisation is inside the graph). On "
                                        f"{parity['split']} ({parity['images']} images) ONNX Runtime "
                                        f"{parity['onnxruntime']} and PyTorch agree on {agreement:.3f} % of pixels "
                                        f"(largest logit difference {worst:.2e}); mIoU differs by "
                                        f"{parity['miou_difference']:+.5f} (parity.json).")]
    items += [("h2", "Recipe"), ("table", (("option", "value"), _config_rows(cfg)))]
    return render_markdown(items)


def arch_phrase(arch: str) -> str:
    """The registry's phrase for `arch` (fastseg.models.ARCHS), or the bare name for an architecture this
    fastseg does not register (a run of a plug-in)."""
    from fastseg.models import ARCHS
    return ARCHS[arch].help if arch in ARCHS else arch


def _classes_text(config: dict) -> str:
    """"21 PASCAL VOC classes", or "5 classes (background, road, ...)" for a dataset of its own."""
    names = ClassSet.from_meta(config).names
    if names == VOC.names:
        return f"{len(names)} PASCAL VOC classes"
    return f"{len(names)} classes ({', '.join(names)})"


def _card_results(cfg, evaluated: dict | None, validation: dict, voc: bool) -> list[tuple]:
    """The card's numbers: the last `fastseg evaluate` (with its interval, protocol and per-class IoU),
    else the validation metrics recorded during training (beside the seeds' when `voc`: VOC's classes)."""
    if evaluated is None:
        return [("h2", "Results"), ("p", f"Validation during training on {cfg.data.valid_split}: mIoU "
                                         f"{validation['miou']:.4f}, pixel accuracy {validation['pixel_acc']:.4f} "
                                         "(no `fastseg evaluate` run yet: no interval)."),
                *([("table", (("model", "splits", "result"), REFERENCES))] if voc else [])]
    lo, hi = evaluated["miou_ci95"]
    tta = evaluated["tta"]
    used = "none" if not tta["flip"] and tta["scales"] == [1.0] else f"flip {tta['flip']}, scales {tta['scales']}"
    return [("h2", "Results"),
            ("p", f"On {evaluated['split']} ({evaluated['images']} images): mIoU {evaluated['miou']:.4f} (95 % "
                  f"interval {lo:.4f}-{hi:.4f}), foreground mIoU {evaluated['fg_miou']:.4f}, pixel accuracy "
                  f"{evaluated['pixel_acc']:.4f}; test-time augmentation: {used}."),
            *_beside_the_seeds(evaluated, ("this model", f"{cfg.data.train_split} / {evaluated['split']}",
                                           f"{100 * evaluated['miou']:.1f} mIoU, {100 * evaluated['pixel_acc']:.2f} "
                                           "% pixel accuracy")),
            ("p", PROTOCOL),
            ("h2", "Per-class IoU"), per_class_table(evaluated)]
