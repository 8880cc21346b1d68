"""`make demo`: the whole product on the built-in synthetic dataset, on a CPU, in a few minutes.

Generates the dataset, runs find-lr, fits a reduced-width SegNet, evaluates it at native
resolution, and trains the colour-only control (per-pixel 1×1 convolutions) on the same data and
schedule, so the gap between the two shows what shape and texture add over colour.
"""

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from fastseg.config import FitConfig
from fastseg.console import log
from fastseg.data.dataloaders import DataConfig
from fastseg.data.splits import build_split
from fastseg.data.synthetic import SynthConfig, generate
from fastseg.evaluation import evaluate_run, evaluate_samples
from fastseg.models import create_model
from fastseg.training import find_lr, fit


@dataclass(frozen=True)
class DemoConfig:
    """Sizes chosen so that everything past the install takes under 5 minutes on 2 CPU cores."""

    synth: SynthConfig = field(default_factory=lambda: SynthConfig(n_train=400, n_val=60, n_sbd_only=400, size=112))
    width: float = 0.125   # SegNet at 1/8 of its channels: ~0.46 M parameters
    crop: int = 64         # training crops; validation runs on whole images
    bs: int = 32           # the SegNet seed's batch; 16 learned the classes far more slowly
    epochs: int = 24
    lr: float = 5e-2       # Adam peak of the one-cycle schedule (lr_find is run and shown beside it)
    lr_find_iters: int = 30
    seed: int = 0


def demo_fit_config(cfg: DemoConfig, data_root: Path, runs: Path, arch: str, name: str) -> FitConfig:
    data = DataConfig(voc=str(data_root / "VOCdevkit" / "VOC2012"),
                      sbd=str(data_root / "benchmark_RELEASE" / "dataset"), train_split="train-aug",
                      valid_split="voc12-val", crop=cfg.crop, bs=cfg.bs, augment="none", cache=True)
    return FitConfig(data=data, arch=arch, width=cfg.width, pretrained="none", epochs=cfg.epochs, lr=cfg.lr,
                     opt="adam", wd=1e-4, seed=cfg.seed, runs_dir=str(runs), name=name)


def untrained_miou(fit_cfg: FitConfig) -> float:
    """mIoU of the freshly initialised model on the validation split (the 'before' number)."""
    torch.manual_seed(fit_cfg.seed)
    model = create_model(fit_cfg.arch, width=fit_cfg.width)
    samples = build_split(fit_cfg.data.valid_split, fit_cfg.data.roots)
    return evaluate_samples(model, samples, torch.device("cpu"), bs=fit_cfg.data.bs).scores["miou"]


def run_demo(out: Path, cfg: DemoConfig = DemoConfig()) -> dict:
    """Run the demo under `out` (data/ and runs/); returns and writes demo_summary.json."""
    data_root, runs = out / "data", out / "runs"
    if not (data_root / "VOCdevkit").is_dir():
        log(f"Generating the synthetic dataset in {data_root} ...")
        generate(data_root, cfg.synth)
    segnet = demo_fit_config(cfg, data_root, runs, "segnet", _fresh_name(runs, "segnet"))
    _, found = find_lr(segnet, num_it=cfg.lr_find_iters)
    log(f"lr_find suggests valley {found['valley']:.2e}; the demo trains at {cfg.lr:.0e} with one-cycle.")
    before = untrained_miou(segnet)
    run_dir, _ = fit(segnet)
    _, metrics = evaluate_run(run_dir)
    control = replace(segnet, arch="colour-control", name=_fresh_name(runs, "colour-control"))
    control_dir, _ = fit(control)
    _, control_metrics = evaluate_run(control_dir)
    summary = {"segnet_miou": metrics["miou"], "segnet_miou_ci95": metrics["miou_ci95"],
               "untrained_miou": before, "colour_control_miou": control_metrics["miou"],
               "gap_over_control": metrics["miou"] - control_metrics["miou"], "run": str(run_dir),
               "control_run": str(control_dir), "config": asdict(cfg)}
    (out / "demo_summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _fresh_name(runs: Path, base: str) -> str:
    n = 1
    while (runs / f"{base}-{n}").exists():
        n += 1
    return f"{base}-{n}"
