"""Scoring a model on a named split at native resolution, with the metric code `fit` uses.

Images go through the same fastai validation pipeline as in `fit`: batches of images of one padded
size, each image padded only to its own next multiple of 32 (void 255 in the padding), so padded
pixels are never scored and the numbers equal the ones `fit` reported for the same weights and split,
whatever the batch size.
"""

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from fastseg.classes import VOC, ClassSet
from fastseg.console import tracked
from fastseg.constants import DEFAULT_CROP, IGNORE_INDEX, MIN_SIZE, padded_size
from fastseg.data.dataloaders import SizeGroupedDL, header_size, segmentation_block, sharded_batches
from fastseg.data.samples import Sample
from fastseg.data.transforms import pad_batch
from fastseg.devices.collectives import all_gather_object, all_reduce_sum, rank, world_size
from fastseg.devices.distributed import is_main
from fastseg.errors import FastsegError
from fastseg.evaluate.metrics import SCORE_KEYS, class_iou, confusion_matrix, scores, truth_shares
from fastseg.evaluate.tta import predict_classes, tta_probabilities, uses_tta
from fastseg.evaluate.uncertainty import (
    TEMPERATURE_PIXELS,
    CalibrationStats,
    MonteCarlo,
    entropy,
    fit_temperature,
    sample_pixels,
)

BOOTSTRAP_SAMPLES = 1000
BOUNDARY_BAND = 5  # pixels either side of a true boundary, VOC's void band width
GALLERY = 5        # images in each of the random / best / worst grids


def eval_dataloader(samples: list[Sample], bs: int, device, num_workers: int):
    """fastai loader over `samples` in order: fit's DataBlock with every sample in validation
    (no augmentation, batched by padded size like fit's validation; the validation batch size is `bs`)."""
    block = segmentation_block(DEFAULT_CROP, "none", _all_for_validation)
    dls = block.dataloaders(samples, bs=bs, before_batch=pad_batch, device=device, num_workers=num_workers,
                            dl_type=SizeGroupedDL)
    return dls.valid


def _all_for_validation(items) -> tuple[list[int], list[int]]:
    """fastai needs a non-empty training split: it gets the first item and is never iterated."""
    return [0], list(range(len(items)))


def boundary_band(target: torch.Tensor, width: int = BOUNDARY_BAND, sizes: list | None = None) -> torch.Tensor:
    """N×H×W bool: pixels within `width` px of a change of true label (void edges included). With
    `sizes`, the (h, w) of each image before its batch was padded, the padding continues the image's
    last row and column, so an image's edge is no change of label."""
    t = target.float().unsqueeze(1)
    for i, (h, w) in enumerate(sizes or []):
        t[i, :, h:, :w] = t[i, :, h - 1:h, :w]
        t[i, :, :, w:] = t[i, :, :, w - 1:w]
    edge = torch.zeros_like(t, dtype=torch.bool)
    edge[..., 1:, :] = t[..., 1:, :] != t[..., :-1, :]
    edge[..., :, 1:] |= t[..., :, 1:] != t[..., :, :-1]
    band = F.max_pool2d(edge.float(), 2 * width + 1, stride=1, padding=width) > 0
    return band.squeeze(1)


def miou_rows(cms: torch.Tensor) -> torch.Tensor:
    """mIoU of each C×C matrix in a B×C×C stack (classes absent from both left out)."""
    return torch.nanmean(class_iou(cms), dim=1)


def resample_counts(n: int, samples: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> torch.Tensor:
    """samples×n float64: how often each of n images is drawn in each bootstrap resample (n draws
    with replacement), from a seeded generator, so every run scored on them sees the same resamples."""
    gen = torch.Generator().manual_seed(seed)
    picks = torch.randint(0, n, (samples, n), generator=gen)
    ones = torch.ones(samples, n, dtype=torch.float64)
    return torch.zeros(samples, n, dtype=torch.float64).scatter_add_(1, picks, ones)


def resampled_mious(per_image: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """mIoU of each resample (length samples): per_image is N×C×C, counts samples×N (`resample_counts`)."""
    n, c, _ = per_image.shape
    return miou_rows((counts @ per_image.reshape(n, c * c).double()).view(-1, c, c))


def bootstrap_miou(per_image: torch.Tensor, samples: int = BOOTSTRAP_SAMPLES, seed: int = 0):
    """95 % interval of mIoU when images are resampled with replacement: (low, high)."""
    values = resampled_mious(per_image, resample_counts(per_image.shape[0], samples, seed))
    return float(values.quantile(0.025)), float(values.quantile(0.975))


def confused_pairs(cm: torch.Tensor, names: tuple[str, ...], top: int = 10) -> list[dict]:
    """The largest off-diagonal shares of the confusion matrix: truth → predicted (class `names`), as
    the fraction of the true class's pixels."""
    rows = truth_shares(cm)
    rows.fill_diagonal_(0)
    values, flat = rows.flatten().topk(min(top, rows.numel()))
    c = cm.shape[0]
    return [{"truth": names[i // c], "predicted": names[i % c], "fraction": float(v)}
            for v, i in zip(values.tolist(), flat.tolist(), strict=True) if v > 0]


@dataclass
class Gallery:
    """Keeps (image, truth, prediction) for the best, worst, most uncertain (highest mean entropy of
    the prediction) and a seeded random set of images."""

    random_ids: set
    k: int = GALLERY
    best: list = field(default_factory=list)
    worst: list = field(default_factory=list)
    random: list = field(default_factory=list)
    uncertain: list = field(default_factory=list)  # (mean entropy, index, item), highest first

    def wants(self, index: int, score: float, entropy: float = 0.0) -> bool:
        """Whether `offer` would keep this image (so its pixels are only copied when needed)."""
        if index in self.random_ids or len(self.uncertain) < self.k or entropy > self.uncertain[-1][0]:
            return True
        if np.isnan(score):
            return False
        return len(self.best) < self.k or score > self.best[-1][0] or score < self.worst[-1][0]

    def offer(self, index: int, score: float, item: tuple, entropy: float = 0.0):
        entry = (score, index, item)
        if index in self.random_ids:
            self.random.append(entry)
        self.uncertain = sorted(self.uncertain + [(entropy, index, item)], key=lambda e: -e[0])[: self.k]
        if not np.isnan(score):
            self.best = sorted(self.best + [entry], key=lambda e: -e[0])[: self.k]
            self.worst = sorted(self.worst + [entry], key=lambda e: e[0])[: self.k]


@dataclass
class EvalResult:
    classes: ClassSet
    ids: list[str]
    cm: torch.Tensor               # C×C int64
    per_image: torch.Tensor        # N×C×C int64
    scores: dict
    ci: tuple[float, float]
    band_scores: dict
    interior_scores: dict
    plain_scores: dict | None      # of the baseline pass: without TTA (TTA alone), or without MC (with --mc)
    gallery: Gallery
    plain_per_image: torch.Tensor | None = None  # N×C×C of that baseline pass
    mc: int = 0                    # Monte Carlo dropout samples (0: one deterministic pass)
    calibration: dict | None = None  # uncertainty.CalibrationStats.summary()
    temperature: float = 1.0       # the logits' divisor the calibration was measured with
    pixels: list = field(default_factory=list)  # (logits P×C, targets P) kept for fit_temperature


def gather_rows(indices: list[int], rows: torch.Tensor, n: int) -> torch.Tensor:
    """Every process's rows (one per sample index) assembled in sample order, in every process."""
    parts = all_gather_object((indices, rows))
    out = torch.zeros((n, *rows.shape[1:]), dtype=rows.dtype)
    for part_indices, part_rows in parts:
        if part_indices:
            out[torch.tensor(part_indices)] = part_rows
    return out


def evaluate_samples(model, samples: list[Sample], device, bs: int, flip: bool = False,
                     scales: tuple[float, ...] = (1.0,), num_workers: int = 0, seed: int = 0,
                     classes: ClassSet = VOC, mc: int = 0, temperature: float = 1.0,
                     calibration_pixels: int = 0) -> EvalResult:
    """Score `model` (one output per class of `classes`) on every sample at native resolution (shared
    out by batch under DDP). With `mc`, the prediction averages that many Monte Carlo dropout passes
    (`uncertainty.MonteCarlo`); calibration statistics use softmax(logits / `temperature`); with
    `calibration_pixels`, that many random non-void pixels' logits are kept for `fit_temperature`."""
    c = classes.num
    model = model.to(device).eval()
    scorer = MonteCarlo(model, mc, seed) if mc else model
    baseline = model if mc or uses_tta(flip, scales) else None  # the pass the gain is measured against
    sizes = [header_size(s.image) for s in samples]
    check_scales(sizes, scales)
    indices = [i for batch in sharded_batches(sizes, bs, rank(), world_size()) for i in batch]
    local = [samples[i] for i in indices]
    rng = np.random.default_rng(seed)
    gallery = Gallery(set(rng.choice(len(samples), size=min(GALLERY, len(samples)), replace=False).tolist()))
    rows = {"per_image": [torch.zeros(0, c, c, dtype=torch.long)], "plain": [torch.zeros(0, c, c, dtype=torch.long)]}
    band_cm, interior_cm = torch.zeros(c, c, dtype=torch.long), torch.zeros(c, c, dtype=torch.long)
    calibration, pixels, gen = CalibrationStats(c), [], torch.Generator().manual_seed(seed)
    dl = eval_dataloader(local, bs, device, num_workers) if local else []
    start = 0
    with torch.no_grad():
        for x, y in tracked(dl, "evaluate"):
            x, y = torch.Tensor(x).as_subclass(torch.Tensor), y.as_subclass(torch.Tensor)
            pred, logits = predict_outputs(scorer, x, flip, scales)
            probs = (logits.float() / temperature).softmax(1)
            calibration.update(probs, y)
            if calibration_pixels:
                pixels.append(sample_pixels(logits, y, max(1, calibration_pixels * len(x) // len(samples)), gen))
            cms = confusion_matrix(pred, y, c, per_sample=True)
            rows["per_image"].append(cms.cpu())
            band = boundary_band(y, sizes=[sizes[i] for i in indices[start:start + len(x)]])
            band_cm += confusion_matrix(pred, torch.where(band, y, IGNORE_INDEX), c).cpu()
            interior_cm += confusion_matrix(pred, torch.where(band, IGNORE_INDEX, y), c).cpu()
            if baseline is not None:
                plain = predict_classes(baseline, x, flip, scales) if mc else predict_classes(baseline, x)
                rows["plain"].append(confusion_matrix(plain, y, c, per_sample=True).cpu())
            _offer(gallery, indices[start:start + len(x)], sizes, (x, y, pred), miou_rows(cms).cpu(),
                   mean_entropy(probs, y).cpu())
            start += len(x)
    per_image = gather_rows(indices, torch.cat(rows["per_image"]), len(samples))
    plain = gather_rows(indices, torch.cat(rows["plain"]), len(samples)) if baseline is not None else None
    band_cm, interior_cm = (all_reduce_sum(m) for m in (band_cm, interior_cm))
    calibration.reduce(all_reduce_sum)
    cm, bg = per_image.sum(0), classes.background
    return EvalResult(classes, [s.id for s in samples], cm, per_image, scores(cm, bg),
                      bootstrap_miou(per_image, seed=seed), scores(band_cm, bg), scores(interior_cm, bg),
                      scores(plain.sum(0), bg) if plain is not None else None, gallery, plain, mc,
                      calibration.summary(), temperature, pixels)


def predict_outputs(scorer, x: torch.Tensor, flip: bool, scales: tuple[float, ...]) -> tuple:
    """(class ids N×H×W, logits N×C×H×W) of `scorer` on N×3×H×W images; with TTA the logits are the
    log of the averaged probabilities and the classes their argmax, as `predict_classes` gives."""
    if not uses_tta(flip, scales):
        logits = scorer(x)
        return logits.argmax(1), logits
    probs = tta_probabilities(scorer, x, flip, scales)
    return probs.argmax(1), probs.clamp_min(1e-30).log()


def paired_gain(per_image: torch.Tensor, baseline: torch.Tensor, seed: int = 0) -> dict:
    """mIoU of `per_image` minus `baseline`'s (N×C×C each, same images), with the 95 % interval of
    that difference over the paired resamples `compare` uses."""
    counts = resample_counts(per_image.shape[0], BOOTSTRAP_SAMPLES, seed)
    diffs = resampled_mious(per_image, counts) - resampled_mious(baseline, counts)
    gain = float(miou_rows(per_image.sum(0, keepdim=True))[0] - miou_rows(baseline.sum(0, keepdim=True))[0])
    return {"gain": gain, "gain_ci95": [float(diffs.quantile(0.025)), float(diffs.quantile(0.975))]}


def check_scales(sizes: list[tuple[int, int]], scales: tuple[float, ...]) -> None:
    """Raises FastsegError for a TTA scale that would shrink a (padded) image below MIN_SIZE pixels."""
    smallest = min((min(padded_size([hw])) for hw in sizes), default=MIN_SIZE)
    lowest = MIN_SIZE / smallest
    if min(scales) < lowest:
        raise FastsegError(f"--tta-scales {min(scales):g} would shrink the smallest image ({smallest} px once "
                           f"padded) below {MIN_SIZE} pixels; use scales of at least {lowest:.2f}.")


def _offer(gallery: Gallery, batch_indices: list[int], sizes: list, batch: tuple, image_mious, entropies):
    """Offer each image of `batch` (images, truths, predictions) with its mIoU and mean entropy."""
    from fastseg.evaluate.figures import denormalize
    x, y, pred = batch
    for i, (score, ent) in enumerate(zip(image_mious.tolist(), entropies.tolist(), strict=True)):
        index = batch_indices[i]
        if gallery.wants(index, score, ent):
            h, w = sizes[index]
            item = (denormalize(x[i:i + 1, :, :h, :w])[0], y[i, :h, :w].cpu().numpy(), pred[i, :h, :w].cpu().numpy())
            gallery.offer(index, score, item, ent)


def mean_entropy(probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per image, the mean entropy (nats) of N×C×H×W `probs` over its non-void pixels: N values."""
    valid = (target != IGNORE_INDEX).float()
    return (entropy(probs) * valid).sum((1, 2)) / valid.sum((1, 2)).clamp_min(1)


def result_json(result: EvalResult, split: str, weights: str, tta: dict) -> dict:
    """The metrics.json content: headline numbers, interval, per-class table, error analysis."""
    s, names = result.scores, result.classes.names
    out = {"split": split, "weights": weights, "images": len(result.ids), "tta": tta,
           **{k: s[k] for k in SCORE_KEYS}, "fg_miou_note": fg_miou_note(result.classes),
           "miou_ci95": list(result.ci), "bootstrap_samples": BOOTSTRAP_SAMPLES,
           "per_class": {name: {"iou": s["iou"][i], "acc": s["acc"][i]} for i, name in enumerate(names)},
           "confused_pairs": confused_pairs(result.cm, names),
           "boundary_band_px": BOUNDARY_BAND, "boundary_miou": result.band_scores["miou"],
           "interior_miou": result.interior_scores["miou"]}
    if result.plain_scores is not None and not result.mc:
        out["miou_without_tta"] = result.plain_scores["miou"]
        out["tta_gain"] = s["miou"] - result.plain_scores["miou"]
        out["tta_gain_ci95"] = paired_gain(result.per_image, result.plain_per_image)["gain_ci95"]
    if result.mc:
        out["mc"] = {"samples": result.mc, "miou_deterministic": result.plain_scores["miou"],
                     **paired_gain(result.per_image, result.plain_per_image)}
    if result.calibration is not None:
        out["calibration"] = {"temperature": result.temperature, **result.calibration}
    return out


def fg_miou_note(classes: ClassSet) -> str:
    """What foreground mIoU averages over, in words (it leaves class 0 out only when it is background)."""
    if classes.background:
        return f"classes 1..{classes.num - 1}: without {classes.names[0]}"
    return f"every class: class 0 is '{classes.names[0]}', not background, so foreground mIoU equals mIoU"


def save_per_image(result: EvalResult, split: str, path: Path) -> Path:
    """The per-image confusion matrices (N×C×C int64, tensor "cm") with the split and the image ids
    (JSON) in the safetensors metadata: what `fastseg compare` resamples."""
    import json

    from safetensors.torch import save

    from fastseg.io.atomic import atomic_write
    payload = save({"cm": result.per_image.contiguous()}, {"split": split, "ids": json.dumps(result.ids)})
    return atomic_write(path, lambda tmp: tmp.write_bytes(payload))


def load_per_image(path: Path) -> tuple[str, list[str], torch.Tensor]:
    """(split, image ids, N×C×C int64) as `save_per_image` wrote them."""
    import json

    from safetensors import safe_open
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        return meta["split"], json.loads(meta["ids"]), f.get_tensor("cm")


def write_figures(result: EvalResult, folder: Path) -> list[Path]:
    """confusion_matrix.png, reliability.png and predictions_{random,best,worst,uncertain}.png in `folder`."""
    from fastseg.evaluate.figures import plot_confusion, plot_gallery, plot_reliability
    g, classes = result.gallery, result.classes
    uncertain = [(ent, index, item) for ent, index, item in g.uncertain]
    return [plot_confusion(result.cm, folder / "confusion_matrix.png", classes.names),
            plot_reliability(result.calibration | {"temperature": result.temperature}, folder / "reliability.png"),
            plot_gallery(uncertain, folder / "predictions_uncertain.png", "Most uncertain images", classes.palette(),
                         "entropy"),
            plot_gallery(sorted(g.random, key=lambda e: e[1]), folder / "predictions_random.png", "Random images",
                         classes.palette()),
            plot_gallery(g.best, folder / "predictions_best.png", "Best images by mIoU", classes.palette()),
            plot_gallery(g.worst, folder / "predictions_worst.png", "Worst images by mIoU", classes.palette())]


def evaluate_run(source: Path, split: str | None = None, device=None, bs: int | None = None,
                 flip: bool = False, scales: tuple[float, ...] = (1.0,), roots=None,
                 skip_bad: bool = False, mc: int = 0, calibrate: bool = False) -> tuple[Path, dict]:
    """Evaluate a run folder (its best.safetensors) or a weights file on a split, after the preflight
    of its files; writes metrics.json and the figures beside the weights. Returns (metrics.json path,
    its content). `mc`: Monte Carlo dropout samples; calibration is measured with the temperature in
    the weights' sidecar (1 without one), and `calibrate` fits a new one on this split, stores it in
    the sidecar and scores again with it (metrics.json keeps the calibration before, too)."""
    import json

    from fastseg.console import log
    from fastseg.data.checks import preflight
    from fastseg.data.splits import build_split
    from fastseg.devices.select import run_device
    from fastseg.io.atomic import atomic_write
    from fastseg.io.runs import CONFIG, PER_IMAGE, load_config
    from fastseg.models.weights import (
        EXPORT_WEIGHTS,
        load_model,
        model_classes,
        read_metadata,
        require_weights,
        set_temperature,
        weights_file,
    )
    weights = weights_file(source)
    folder = weights.parent
    run = (folder / CONFIG).is_file() and weights.name != EXPORT_WEIGHTS  # an export's config.json is the model's
    cfg = load_config(folder / CONFIG) if run else None
    if cfg is None and (roots is None or (roots.voc is None and roots.folder is None)):
        raise FastsegError(f"{weights} has no run config beside it; pass --voc (and --sbd) or --data to say "
                           "where the data is.")
    roots = data_roots(cfg, roots)
    classes = matching_classes(model_classes(read_metadata(require_weights(weights))), roots, weights)
    card = cfg is not None and (roots.folder is None) == (cfg.data.roots.folder is None)  # the run's own kind of data
    if card:  # the run card counts the run's splits: fail on unresolved data before scoring
        build_split(cfg.data.train_split, roots)
    split = split or (cfg.data.valid_split if card else "val" if roots.folder is not None else "voc12-val")
    if bs is not None and bs < 1:
        raise FastsegError(f"--bs {bs} must be at least 1.")
    bs = bs or (cfg.data.val_bs or cfg.data.bs if cfg else 8)
    device = run_device(device)
    samples = preflight({split: build_split(split, roots)}, roots, skip_bad, log)[split]
    model, meta = load_model(weights, device)
    options = dict(bs=bs, flip=flip, scales=scales, classes=classes, mc=mc)
    result = evaluate_samples(model, samples, device, temperature=meta.get("temperature", 1.0),
                              calibration_pixels=TEMPERATURE_PIXELS if calibrate else 0, **options)
    content = result_json(result, split, str(weights), {"flip": flip, "scales": list(scales)})
    if calibrate:
        temperature = fit_temperature(*gathered_pixels(result.pixels))
        before = content["calibration"]
        result = evaluate_samples(model, samples, device, temperature=temperature, **options)
        content = result_json(result, split, str(weights), {"flip": flip, "scales": list(scales)})
        content["calibration_before"] = before
        if is_main():
            set_temperature(weights, temperature)
            log(f"Temperature {temperature:.3f} fitted on {split}: NLL {before['nll']:.4f} → "
                f"{content['calibration']['nll']:.4f}, ECE {before['ece']:.4f} → {content['calibration']['ece']:.4f}; "
                f"saved in {weights}.")
    path = folder / "metrics.json"
    if not is_main():
        return path, content
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(content, indent=2)))
    save_per_image(result, split, folder / PER_IMAGE)
    write_figures(result, folder)
    if card:  # a run folder scored on its own kind of data: fit already drew curves.png; add the run card
        from fastseg.evaluate.report import write_report
        write_report(folder, roots)
    return path, content


def gathered_pixels(pixels: list) -> tuple[torch.Tensor, torch.Tensor]:
    """Every process's kept (logits P×C, targets P) pairs, concatenated: the temperature's sample."""
    parts = all_gather_object(pixels)
    pairs = [pair for part in parts for pair in part]
    return torch.cat([p[0] for p in pairs]), torch.cat([p[1] for p in pairs])


def matching_classes(model: ClassSet, roots, weights: Path) -> ClassSet:
    """The model's classes, checked against the dataset's: scoring needs one class per output.

    Raises:
        FastsegError: the dataset has another number of classes than the model.
    """
    from fastseg.console import log
    from fastseg.data.splits import dataset_classes
    data = dataset_classes(roots)
    if data.num != model.num:
        raise FastsegError(f"{weights} predicts {model.num} classes but the dataset has {data.num}; evaluate it on "
                           "the dataset it was trained for (or pass that dataset's classes file).")
    if data.names != model.names:
        log(f"Note: the dataset names its classes {', '.join(data.names)}; the scores use the model's names "
            f"({', '.join(model.names)}).")
    return model


def data_roots(cfg, given=None):
    """The data roots to use: each root given (--voc, --sbd, --voc11, --classes) where given, else the
    run's; a given folder dataset (--data) replaces the run's data whole, and --voc replaces its folder."""
    from fastseg.data.splits import DataRoots
    if cfg is None:
        return given
    saved = cfg.data.roots
    if given is None:
        return saved
    if given.folder is not None:
        return given
    return DataRoots(given.voc or saved.voc, given.sbd or saved.sbd, given.voc11 or saved.voc11,
                     None if given.voc else saved.folder, given.classes or saved.classes)
