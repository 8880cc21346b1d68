"""`make bench`: data pipeline and model throughput, written to BENCHMARKS.md with the machine.

Timings are measured here, never asserted in tests: these machines are noisy.
"""

import platform
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

from fastseg.models import MODELS, create_model

VOC_SIZE = 500  # VOC's longer side; synth draws the other side at 60-100 % of it


@dataclass
class BenchConfig:
    arch_size: int = 320
    batch: int = 8
    width: float = 1.0
    steps: int = 3
    images: int = 48
    device: str | None = None


def machine_line(device: torch.device) -> str:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    threads = torch.get_num_threads()
    return f"{name}; {threads} CPU threads; Python {platform.python_version()}, torch {torch.__version__}"


def time_call(fn, repeats: int, device: torch.device) -> float:
    """Seconds per call after one warm-up call."""
    fn()
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync(device)
    return (time.perf_counter() - start) / repeats


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def model_flops(model, x: torch.Tensor) -> tuple[float, float]:
    """(forward, forward+backward) FLOPs for one batch, counted by torch.utils.flop_counter."""
    with FlopCounterMode(display=False) as fwd:
        out = model(x)
    with FlopCounterMode(display=False) as both:
        out = model(x)
        out.float().mean().backward()
    return float(fwd.get_total_flops()), float(both.get_total_flops())


def bench_model(arch: str, cfg: BenchConfig, device: torch.device) -> dict:
    """Training images/s (forward+backward+SGD step) and GFLOPs per image."""
    model = create_model(arch, width=cfg.width).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    x = torch.randn(cfg.batch, 3, cfg.arch_size, cfg.arch_size, device=device)
    y = torch.randint(0, 21, (cfg.batch, cfg.arch_size, cfg.arch_size), device=device)
    fwd, both = model_flops(model, x)
    opt.zero_grad()

    def step():
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    seconds = time_call(step, cfg.steps, device)
    params = sum(p.numel() for p in model.parameters())
    return {"arch": arch, "params_m": params / 1e6, "gflops_fwd": fwd / cfg.batch / 1e9,
            "gflops_train": both / cfg.batch / 1e9, "train_img_s": cfg.batch / seconds,
            "tflops_s": both / seconds / 1e12}


def bench_data(cfg: BenchConfig) -> dict:
    """Images/s of JPEG decode alone and of the full training item pipeline (decode, mask read,
    light augmentation, crop 320), both in one process (= per worker)."""
    from fastseg.data.dataloaders import DataConfig, build_dataloaders
    from fastseg.data.synthetic import SynthConfig, generate
    folder = Path(tempfile.mkdtemp(prefix="fastseg-bench-"))
    try:
        n = cfg.images
        generate(folder, SynthConfig(n_train=n, n_val=4, n_sbd_only=2, size=VOC_SIZE, seed=1))
        voc = folder / "VOCdevkit" / "VOC2012"
        jpegs = sorted((voc / "JPEGImages").glob("*.jpg"))[:n]
        decode = _rate(lambda: [np.asarray(Image.open(p).convert("RGB")) for p in jpegs], len(jpegs))
        data = DataConfig(voc=str(voc), sbd=str(folder / "benchmark_RELEASE" / "dataset"), train_split="voc12-train",
                          valid_split="voc12-val", crop=320, bs=1, augment="light")
        ds = build_dataloaders(data, device="cpu", log=lambda _: None).train
        items = min(n, len(ds.dataset))
        pipeline = _rate(lambda: [ds.after_item(ds.create_item(i)) for i in range(items)], items)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return {"decode_img_s": decode, "pipeline_img_s": pipeline, "ratio": pipeline / decode}


def _rate(work, count: int) -> float:
    work()  # warm caches once
    start = time.perf_counter()
    work()
    return count / (time.perf_counter() - start)


def markdown(cfg: BenchConfig, device: torch.device, data: dict, models: list[dict], command: str) -> str:
    lines = [f"## {time.strftime('%Y-%m-%d')} on {device.type}: {machine_line(device)}", "",
             f"Command: `{command}`", "", "### Data pipeline (one process = one worker, VOC-sized JPEGs)", "",
             "| JPEG decode only (img/s) | light preset + crop 320 (img/s) | ratio (target ≥ 0.40) |",
             "|---|---|---|",
             f"| {data['decode_img_s']:.1f} | {data['pipeline_img_s']:.1f} | {data['ratio']:.2f} |", "",
             f"### Models at {cfg.arch_size}×{cfg.arch_size}, batch {cfg.batch}, width {cfg.width}, fp32", "",
             "| arch | params (M) | GFLOP/img forward | GFLOP/img train step | train img/s | achieved TFLOP/s |",
             "|---|---|---|---|---|---|"]
    for m in models:
        lines.append(f"| {m['arch']} | {m['params_m']:.2f} | {m['gflops_fwd']:.1f} | {m['gflops_train']:.1f} | "
                     f"{m['train_img_s']:.2f} | {m['tflops_s']:.3f} |")
    return "\n".join(lines) + "\n"


def run_bench(cfg: BenchConfig, out: Path | None, command: str) -> str:
    """Run every benchmark, append the section to `out` (if given) and return it."""
    device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    data = bench_data(cfg)
    models = [bench_model(arch, cfg, device) for arch in MODELS]
    section = markdown(cfg, device, data, models, command)
    if out is not None:
        head = out.read_text() if out.is_file() else "# Benchmarks\n\nOne section per `make bench` run.\n"
        out.write_text(head.rstrip() + "\n\n" + section)
    return section
