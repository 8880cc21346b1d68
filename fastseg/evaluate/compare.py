"""`fastseg compare`: runs evaluated on the same split side by side, and a paired bootstrap over the
validation images that says whether each run's difference to the first is beyond noise.

Paired: every resample draws one multiset of image ids and scores every run on it, so what varies
between the runs is the model, not the images. Each run's mIoU on a resample comes from the sum of
its per-image confusion matrices (saved by `fastseg evaluate`), the way the headline mIoU is
computed; classes absent from both truth and prediction in a resample are left out of its mean.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from fastseg.classes import VOC, ClassSet
from fastseg.errors import FastsegError
from fastseg.evaluate.metrics import scores
from fastseg.evaluate.report import format_score
from fastseg.evaluate.scoring import BOOTSTRAP_SAMPLES, load_per_image, resample_counts, resampled_mious
from fastseg.io.atomic import atomic_write
from fastseg.io.runs import EVALUATION, METRICS, PER_IMAGE, read_metrics_csv

HEADLINE = ("miou", "fg_miou", "pixel_acc")  # compared first, then every class's IoU


@dataclass
class Evaluated:
    """A run's last evaluation: its split, image ids and N×C×C per-image confusion matrices."""

    name: str
    folder: Path
    split: str
    ids: list[str]
    per_image: torch.Tensor
    curve: list[float]  # validation mIoU per epoch from metrics.csv ([] for a bare weights folder)


def load_evaluated(run: Path) -> Evaluated:
    """The evaluation of a run folder (or of the folder holding a weights file).

    Raises:
        FastsegError: the folder does not exist, or was never evaluated with per-image matrices.
    """
    if not run.exists():
        raise FastsegError(f"{run} does not exist; pass run folders written by `fastseg fit`.")
    if not run.is_dir():
        raise FastsegError(f"{run} is a file; pass the run folder, whose last `fastseg evaluate` is compared.")
    folder = run
    if not (folder / EVALUATION).is_file() or not (folder / PER_IMAGE).is_file():
        raise FastsegError(f"Run {folder} has no evaluation to compare (no {PER_IMAGE}); run "
                           f"`fastseg evaluate {folder}` first.")
    split, ids, per_image = load_per_image(folder / PER_IMAGE)
    curve = [r["miou"] for r in read_metrics_csv(folder / METRICS)]
    return Evaluated(folder.name, folder, split, ids, per_image, curve)


def display_names(folders: list[Path]) -> list[str]:
    """One name per run: the last path part where the folders differ (seed-0, seed-1 for
    demo-sweep/seed-N/runs/segnet-1), else the folder's own name."""
    parts = [f.resolve().parts for f in folders]
    for k in range(1, min(len(p) for p in parts) + 1):
        names = [p[-k] for p in parts]
        if len(set(names)) == len(names):
            return names
    return [f.name for f in folders]


def aligned(runs: list[Evaluated]) -> list[torch.Tensor]:
    """Each run's per-image matrices in the first run's image order.

    Raises:
        FastsegError: the runs were evaluated on different splits or different images.
    """
    first = runs[0]
    out = [first.per_image]
    for run in runs[1:]:
        if run.split != first.split:
            raise FastsegError(f"{run.name} was evaluated on {run.split} and {first.name} on {first.split}; evaluate "
                               f"both on one split, e.g. `fastseg evaluate {run.folder} --split {first.split}`.")
        if sorted(run.ids) != sorted(first.ids):
            raise FastsegError(f"{run.name} and {first.name} were evaluated on different images of {first.split} "
                               f"({len(run.ids)} and {len(first.ids)}); evaluate both on the same data.")
        row = {image: i for i, image in enumerate(run.ids)}
        out.append(run.per_image[[row[image] for image in first.ids]])
    return out


def paired_bootstrap(per_images: list[torch.Tensor], samples: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> list[dict]:
    """For each run after the first: its mIoU difference to the first run on all images, the 95 %
    percentile interval of that difference over `samples` paired resamples, and the share of
    resamples in which it scores higher. per_images: N×C×C each, rows in one image order."""
    counts = resample_counts(per_images[0].shape[0], samples, seed)
    base = resampled_mious(per_images[0], counts)
    base_miou = scores(per_images[0].sum(0))["miou"]
    out = []
    for per_image in per_images[1:]:
        diffs = resampled_mious(per_image, counts) - base
        out.append({"difference": scores(per_image.sum(0))["miou"] - base_miou,
                    "ci95": [float(diffs.quantile(0.025)), float(diffs.quantile(0.975))],
                    "share_better": float((diffs > 0).double().mean()), "samples": samples})
    return out


def verdict(name: str, first: str, test: dict) -> str:
    """One sentence: is `name`'s mIoU difference to `first` beyond noise (its 95 % interval excludes 0)?"""
    lo, hi = test["ci95"]
    if test["difference"] == 0 and lo == hi == 0:
        return f"{name} and {first} score the same on every resample: no difference."
    d = test["difference"]
    numbers = (f"mIoU (difference {d:+.4f}, 95 % interval {lo:+.4f} to {hi:+.4f}; higher in "
               f"{test['share_better']:.0%} of {test['samples']} paired resamples)")
    if lo > 0:
        return f"{name} beats {first} by {d:.4f} {numbers}: beyond noise."
    if hi < 0:
        return f"{name} trails {first} by {-d:.4f} {numbers}: beyond noise."
    return f"{name} and {first} differ by {abs(d):.4f} {numbers}: within noise, no difference shown."


def score_table(per_images: list[torch.Tensor], classes: ClassSet = VOC) -> list[tuple[str, list[float]]]:
    """(metric, one value per run): the headline metrics, then every class's IoU."""
    all_scores = [scores(p.sum(0), classes.background) for p in per_images]
    rows = [(key, [s[key] for s in all_scores]) for key in HEADLINE]
    return rows + [(f"IoU {name}", [s["iou"][i] for s in all_scores]) for i, name in enumerate(classes.names)]


def run_classes(runs: list[Evaluated]) -> ClassSet:
    """The classes the runs were scored with (their metrics.json per-class names), the same for all.

    Raises:
        FastsegError: two runs name different classes.
    """
    named = [tuple(json.loads((r.folder / EVALUATION).read_text())["per_class"]) for r in runs]
    for run, names in zip(runs[1:], named[1:], strict=True):
        if names != named[0]:
            raise FastsegError(f"{run.name} was scored on the classes {', '.join(names)} and {runs[0].name} on "
                               f"{', '.join(named[0])}; compare runs of one dataset.")
    return ClassSet(named[0])


def compare_runs(paths: list[Path], out: Path, samples: int = BOOTSTRAP_SAMPLES) -> dict:
    """Compare the evaluations of `paths` (at least two) and write compare.json, compare.md and
    compare.png into `out`. Returns the compare.json content."""
    if len(paths) < 2:
        raise FastsegError("compare needs at least two run folders, e.g. `fastseg compare runs/a runs/b`.")
    runs = [load_evaluated(p) for p in paths]
    for run, name in zip(runs, display_names([r.folder for r in runs]), strict=True):
        run.name = name
    classes = run_classes(runs)
    per_images = aligned(runs)
    tests = paired_bootstrap(per_images, samples)
    names = [r.name for r in runs]
    result = {"split": runs[0].split, "images": len(runs[0].ids), "runs": [str(r.folder) for r in runs],
              "names": names,
              "table": [{"metric": m, "values": v} for m, v in score_table(per_images, classes)],
              "tests": [{"run": n, **t, "verdict": verdict(n, names[0], t)}
                        for n, t in zip(names[1:], tests, strict=True)]}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "compare.json", lambda tmp: tmp.write_text(json.dumps(result, indent=2)))
    atomic_write(out / "compare.md", lambda tmp: tmp.write_text(markdown(result, names)))
    from fastseg.evaluate.figures import plot_compare
    plot_compare([r.curve for r in runs], names, result["table"], out / "compare.png")
    return result


def markdown(result: dict, names: list[str]) -> str:
    """compare.md: the side-by-side table (differences to the first run) and one verdict per run."""
    head = "| metric | " + " | ".join(names) + " |\n|---|" + "---|" * len(names) + "\n"
    lines = []
    for row in result["table"]:
        first, *rest = row["values"]
        cells = [format_score(first)] + [f"{format_score(v)} ({_delta(v, first)})" for v in rest]
        lines.append(f"| {row['metric']} | " + " | ".join(cells) + " |")
    verdicts = "\n".join(f"- {t['verdict']}" for t in result["tests"])
    return (f"# Comparing runs on {result['split']} ({result['images']} images)\n\n{head}" + "\n".join(lines)
            + f"\n\nPaired bootstrap of the mIoU difference to {names[0]}:\n\n{verdicts}\n")



def _delta(v: float, first: float) -> str:
    return "n/a" if v != v or first != first else f"{v - first:+.4f}"
