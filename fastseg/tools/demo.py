"""`make demo`: the whole product on the built-in synthetic dataset, on a CPU, in a few minutes.

Generates the dataset, runs find-lr, fits a reduced-width SegNet, evaluates it at native
resolution, and trains the colour-only control (per-pixel 1×1 convolutions) on the same data and
schedule, so the gap between the two shows what shape and texture add over colour.
"""

import json
import statistics
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from fastseg.config import DataConfig, FitConfig, SynthConfig
from fastseg.console import log
from fastseg.data.masks import read_mask
from fastseg.data.splits import DataRoots, build_split
from fastseg.data.synthetic import generate
from fastseg.evaluate.metrics import confusion_matrix, scores
from fastseg.evaluate.scoring import evaluate_run, evaluate_samples
from fastseg.io.atomic import atomic_write
from fastseg.io.runs import BEST
from fastseg.models import create_model
from fastseg.models.weights import load_model
from fastseg.train.fit import fit
from fastseg.train.lr_find import find_lr


@dataclass(frozen=True)
class DemoConfig:
    """Sizes for about 4 minutes past the install on 2 CPU cores (docs/demo.md has the timing)."""

    synth: SynthConfig = field(default_factory=lambda: SynthConfig(n_train=400, n_val=60, n_sbd_only=400, size=112))
    width: float = 0.25    # SegNet at 1/4 of its channels (1.85 M parameters): at 1/8 its last decoder
                           # stage fed the 21-class head with 8 channels, and one seed in two stalled
    crop: int = 64         # training crops; validation runs on whole images
    bs: int = 32           # the SegNet seed's batch; 16 learned the classes far more slowly
    epochs: int = 24       # 600 steps of 32; with 16, seed 0 still predicted background at epoch 9, and
                           # with 20 seed 1 stalled at 1 thread (0.327; BENCHMARKS.md)
    lr: float = 2e-2       # Adam peak of the one-cycle schedule; at 5e-2 one seed in four took off late (BENCHMARKS.md)
    lr_find_iters: int = 16  # lr_find's suggestions need 8; the demo shows them, it trains at `lr`
    channels_last: bool = True  # NHWC: an epoch took 7.5 s against 9 s NCHW on 2 Xeon cores (BENCHMARKS.md)
    dropout: float = 0.0   # Bayesian SegNet's central dropout; 0.5 is measured as a candidate in BENCHMARKS.md
    mc: int = 8            # Monte Carlo samples the evaluation averages when dropout is on
    seed: int = 0


def demo_fit_config(cfg: DemoConfig, data_root: Path, runs: Path, arch: str, name: str) -> FitConfig:
    roots = DataRoots.under(data_root)
    data = DataConfig(voc=str(roots.voc), sbd=str(roots.sbd), train_split="train-aug",
                      valid_split="voc12-val", crop=cfg.crop, bs=cfg.bs, augment="none", cache=True)
    # mom 0.95: Adam's beta1 cycles 0.95 -> 0.85 -> 0.95 over the one-cycle schedule, fastai's default
    return FitConfig(data=data, arch=arch, width=cfg.width, pretrained="none", epochs=cfg.epochs, lr=cfg.lr,
                     opt="adam", mom=0.95, wd=1e-4, head_prior=True, channels_last=cfg.channels_last, seed=cfg.seed,
                     dropout=cfg.dropout if arch == "segnet" else 0.0, runs_dir=str(runs), name=name)


def background_only_miou(fit_cfg: FitConfig) -> float:
    """mIoU of predicting background everywhere on the validation split: the score a model that
    learned nothing but the class prior gets (about 0.03 on the demo's data)."""
    cm = None
    for sample in build_split(fit_cfg.data.valid_split, fit_cfg.data.roots):
        target = torch.from_numpy(read_mask(sample.mask)).long()
        one = confusion_matrix(torch.zeros_like(target), target)
        cm = one if cm is None else cm + one
    return scores(cm)["miou"]


def score_weights(weights: Path, fit_cfg: FitConfig) -> dict:
    """Scores (mIoU, ...) of a weights file on the run's validation split, as `evaluate` computes them."""
    model, _ = load_model(weights)
    samples = build_split(fit_cfg.data.valid_split, fit_cfg.data.roots)
    return evaluate_samples(model, samples, torch.device("cpu"), bs=fit_cfg.data.bs).scores


def untrained_miou(fit_cfg: FitConfig) -> float:
    """mIoU of the freshly initialised model on the validation split (the 'before' number)."""
    torch.manual_seed(fit_cfg.seed)
    model = create_model(fit_cfg.arch, width=fit_cfg.width)
    samples = build_split(fit_cfg.data.valid_split, fit_cfg.data.roots)
    return evaluate_samples(model, samples, torch.device("cpu"), bs=fit_cfg.data.bs).scores["miou"]


def run_demo(out: Path, cfg: DemoConfig = DemoConfig(), data_root: Path | None = None) -> dict:
    """Run the demo under `out` (data/, unless `data_root` says where, and runs/); returns and writes
    demo_summary.json, with the seconds each phase took."""
    data_root, runs = data_root or out / "data", out / "runs"
    clock = PhaseClock()
    if not DataRoots.under(data_root).voc.is_dir():
        log(f"Generating the synthetic dataset in {data_root} ...")
        generate(data_root, cfg.synth)
    clock.done("data")
    segnet = demo_fit_config(cfg, data_root, runs, "segnet", _fresh_name(runs, "segnet"))
    _, found = find_lr(segnet, num_it=cfg.lr_find_iters)
    valley = f"{found['valley']:.2e}" if found["valley"] else "none (too few points)"
    log(f"lr_find suggests valley {valley}; the demo trains at {cfg.lr:.0e} with one-cycle.")
    before = untrained_miou(segnet)
    clock.done("find_lr")
    run_dir, _ = fit(segnet)
    clock.done("fit")
    _, metrics = evaluate_run(run_dir, mc=cfg.mc if cfg.dropout else 0)
    clock.done("evaluate")
    control = replace(segnet, arch="colour-control", dropout=0.0, name=_fresh_name(runs, "colour-control"))
    control_dir, _ = fit(control)
    control_metrics = score_weights(control_dir / BEST, control)  # the number only: no figures, no report
    clock.done("control")
    summary = {"segnet_miou": metrics["miou"], "segnet_miou_ci95": metrics["miou_ci95"],
               "untrained_miou": before, "background_only_miou": background_only_miou(segnet),
               "colour_control_miou": control_metrics["miou"],
               "gap_over_control": metrics["miou"] - control_metrics["miou"], "run": str(run_dir),
               "control_run": str(control_dir), "seconds": clock.seconds, "config": asdict(cfg),
               "calibration": {k: metrics["calibration"][k] for k in ("ece", "nll", "entropy_auroc")},
               **({"mc": metrics["mc"]} if "mc" in metrics else {})}
    write_json(out / "demo_summary.json", summary)
    return summary


class PhaseClock:
    """Wall seconds of consecutive phases: `done(name)` closes the phase that ran since the last call."""

    def __init__(self):
        self.seconds, self.last = {}, time.monotonic()

    def done(self, name: str) -> None:
        now = time.monotonic()
        self.seconds[name] = round(now - self.last, 1)
        self.last = now


def write_json(path: Path, content) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(json.dumps(content, indent=2)))


@contextmanager
def torch_threads(threads: int | None):
    """Run the block with `threads` intra-op CPU threads (None: leave torch's setting)."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def run_sweep(out: Path, cfg: DemoConfig, seeds: list[int], threads: int | None = None) -> dict:
    """The demo once per training seed (same data), each under `out`/seed-N/ sharing `out`/data.

    Returns and writes `out`/demo_sweep.json: one row per seed (seed, threads, SegNet, control and
    untrained mIoU, seconds) and the median and minimum SegNet mIoU.
    """
    rows = []
    for seed in seeds:
        with torch_threads(threads) as used:
            started = time.monotonic()
            summary = run_demo(out / f"seed-{seed}", replace(cfg, seed=seed), data_root=out / "data")
        rows.append({"seed": seed, "threads": used, "segnet_miou": summary["segnet_miou"],
                     **({"mc_gain": summary["mc"]["gain"], "miou_deterministic": summary["mc"]["miou_deterministic"]}
                        if "mc" in summary else {}), "ece": summary["calibration"]["ece"],
                     "colour_control_miou": summary["colour_control_miou"],
                     "untrained_miou": summary["untrained_miou"], "seconds": time.monotonic() - started})
        write_json(out / "demo_sweep.json", sweep_summary(rows, cfg))
    return sweep_summary(rows, cfg)


def sweep_summary(rows: list[dict], cfg: DemoConfig) -> dict:
    mious = [r["segnet_miou"] for r in rows]
    return {"rows": rows, "segnet_median": statistics.median(mious), "segnet_min": min(mious),
            "control_max": max(r["colour_control_miou"] for r in rows), "config": asdict(cfg)}


def _fresh_name(runs: Path, base: str) -> str:
    n = 1
    while (runs / f"{base}-{n}").exists():
        n += 1
    return f"{base}-{n}"
