"""`make bench`: data pipeline and model throughput, written to BENCHMARKS.md with the machine.

Timings are measured here, never asserted in tests: these machines are noisy.
"""

import platform
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from fastai.callback.core import Callback
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

from fastseg.config import DEVICE_DEFAULTS, BenchConfig
from fastseg.constants import IGNORE_INDEX, NUM_CLASSES
from fastseg.data.splits import DataRoots
from fastseg.io.atomic import atomic_write
from fastseg.models import cli_archs, create_model

VOC_SIZE = 500  # VOC's longer side; synth draws the other side at 60-100 % of it
LR, MOMENTUM, WD = 1e-3, 0.9, 5e-4  # the one SGD every timed training loop here uses




def for_device(cfg: BenchConfig, device: torch.device) -> BenchConfig:
    """`cfg` with the device's default batch and steps where none were given."""
    batch, steps = DEVICE_DEFAULTS.get(device.type, DEVICE_DEFAULTS["cpu"])
    return replace(cfg, batch=cfg.batch or batch, steps=cfg.steps or steps)


def plain_sgd(model) -> torch.optim.SGD:
    return torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WD)


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
    """Training images/s (fastseg's Learner step in fp32, see `learner_epoch_seconds`) and GFLOPs per
    image."""
    model = create_model(arch, width=cfg.width).to(device)
    fwd, both = model_flops(model, torch.randn(cfg.batch, 3, cfg.arch_size, cfg.arch_size, device=device))
    model.zero_grad(set_to_none=True)
    step_s = learner_epoch_seconds(model, random_batches(cfg, device), device) / cfg.steps
    params = sum(p.numel() for p in model.parameters())
    return {"arch": arch, "params_m": params / 1e6, "gflops_fwd": fwd / cfg.batch / 1e9,
            "gflops_train": both / cfg.batch / 1e9, "train_img_s": cfg.batch / step_s,
            "tflops_s": both / step_s / 1e12}


PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}  # dense bf16 tensor-core peaks
PRECISION_MODES = (  # (name, autocast dtype, channels_last, torch.compile)
    ("fp32", None, False, False), ("bf16", torch.bfloat16, False, False),
    ("bf16 + channels_last", torch.bfloat16, True, False),
    ("bf16 + channels_last + compile", torch.bfloat16, True, True))


def peak_tflops(device: torch.device) -> float | None:
    """The device's dense bf16 peak, for model FLOP utilisation (None when unknown)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_BF16_TFLOPS.items() if key in name), None)


def bench_precision(arch: str, cfg: BenchConfig, device: torch.device, train_gflops: float,
                    modes=PRECISION_MODES) -> list[dict]:
    """(e) Training img/s, peak memory and MFU per precision mode: fastseg's Learner step (input path,
    precision callbacks, SGD) over cfg.steps cached batches of cfg.batch, as `fit` trains."""
    rows, peak = [], peak_tflops(device)
    for name, dtype, channels_last, compiled in modes:
        if compiled and not cfg.compile:
            continue
        model = create_model(arch, width=cfg.width)
        amp = "off" if dtype is None else "bf16"
        seconds = learner_epoch_seconds(model, random_batches(cfg, device), device, amp, channels_last, compiled)
        img_s = cfg.batch * cfg.steps / seconds
        tflops = train_gflops * img_s / 1e3
        rows.append({"arch": arch, "mode": name, "img_s": img_s, "tflops_s": tflops,
                     "peak_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
                     "mfu": tflops / peak if peak else None})
    return rows


def random_batches(cfg: BenchConfig, device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """cfg.steps (images B×3×S×S float32, masks B×S×S int64) on the host, pinned when `device` is CUDA:
    where fit's loader leaves its batches before the copy to the device."""
    def host(t):
        return t.pin_memory() if device.type == "cuda" else t
    return [(host(torch.randn(cfg.batch, 3, cfg.arch_size, cfg.arch_size)),
             host(torch.randint(0, NUM_CLASSES, (cfg.batch, cfg.arch_size, cfg.arch_size))))
            for _ in range(cfg.steps)]


def learner_epoch_seconds(model, batches, device: torch.device, amp: str = "off", channels_last: bool = False,
                          compiled: bool = False) -> float:
    """Seconds of one training epoch over `batches` (host tensors) of a fastai Learner built the way
    `fit` builds one: the batches copied by fastseg's loader, `InputPath`, the precision callbacks,
    device-side losses, SGD with momentum and L2 decay. The first epoch warms up (and compiles).
    CUDA's peak-memory counter is reset before the timed epoch."""
    from fastai.data.core import DataLoaders
    from fastai.data.load import DataLoader
    from fastai.learner import Learner

    from fastseg.devices.precision import precision_callbacks
    from fastseg.devices.transfer import NonBlockingLoader
    from fastseg.evaluate.metrics import seg_metrics
    from fastseg.train.callbacks import NaNGuard
    from fastseg.train.fastpath import InputPath, install_device_losses
    from fastseg.train.learner import make_opt_func
    from fastseg.train.losses import segmentation_loss

    class CachedBatches(NonBlockingLoader, DataLoader):
        pass
    model = model.to(device).to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    dls = DataLoaders(CachedBatches(batches, bs=None, pin_memory=device.type == "cuda"),
                      CachedBatches(batches[:1], bs=None), device=device)
    learn = Learner(dls, torch.compile(model) if compiled else model, loss_func=segmentation_loss(),
                    opt_func=make_opt_func("sgd", MOMENTUM), metrics=seg_metrics(), lr=LR, wd=WD,
                    cbs=[InputPath(channels_last), NaNGuard(), *precision_callbacks(amp, device)])
    install_device_losses(learn)
    timer = _TrainTimer(device)
    with learn.no_bar(), learn.no_logging():
        learn.fit(2, cbs=[timer])
    return timer.seconds


def bench_data(voc: Path, sbd: Path, n: int) -> dict:
    """Images/s of JPEG decode alone and of the full training item pipeline (decode, mask read,
    light augmentation, crop 320), both in one process (= per worker)."""
    from fastseg.config import DataConfig
    from fastseg.data.dataloaders import build_dataloaders
    jpegs = sorted((voc / "JPEGImages").glob("*.jpg"))[:n]
    decode = _rate(lambda: [np.asarray(Image.open(p).convert("RGB")) for p in jpegs], len(jpegs))
    data = DataConfig(voc=str(voc), sbd=str(sbd), train_split="voc12-train", valid_split="voc12-val",
                      crop=320, bs=1, augment="light")
    ds = build_dataloaders(data, device="cpu", log=lambda _: None).train
    items = min(n, len(ds.dataset))
    pipeline = _rate(lambda: [ds.after_item(ds.create_item(i)) for i in range(items)], items)
    return {"decode_img_s": decode, "pipeline_img_s": pipeline, "ratio": pipeline / decode}


def bench_learner_vs_plain(arch: str, cfg: BenchConfig, device: torch.device) -> dict:
    """Training img/s of fastseg's Learner step (`learner_epoch_seconds`: its loader copy, input path
    and callbacks) against a minimal PyTorch loop over the same model, batches, SGD and precision."""
    batches = random_batches(cfg, device)
    plain = _plain_loop_seconds(create_model(arch, width=cfg.width).to(device), batches, device)
    learner = learner_epoch_seconds(create_model(arch, width=cfg.width), batches, device)
    images = len(batches) * cfg.batch
    return {"arch": arch, "plain_img_s": images / plain, "learner_img_s": images / learner, "ratio": plain / learner}


def _plain_loop_seconds(model, batches, device) -> float:
    opt = plain_sgd(model)
    model.train()

    def epoch():
        for x, y in batches:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            loss = torch.nn.functional.cross_entropy(model(x), y, ignore_index=IGNORE_INDEX)
            loss.backward()
            opt.step()
            opt.zero_grad()
    return time_call(epoch, 1, device)


class _TrainTimer(Callback):
    """Times the training phase of the last epoch (device synced)."""

    order = 100

    def __init__(self, device):
        self.device, self.seconds = device, None

    def before_train(self):
        sync(self.device)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        self.start = time.perf_counter()

    def after_train(self):
        sync(self.device)
        self.seconds = time.perf_counter() - self.start


def bench_evaluation(arch: str, cfg: BenchConfig, voc: Path, sbd: Path, device: torch.device) -> float:
    """Evaluation images/s at native VOC sizes (500×375-like), batch of cfg.batch."""
    from fastseg.data.splits import build_split
    from fastseg.evaluate.scoring import evaluate_samples
    samples = build_split("voc12-train", DataRoots(voc, sbd))[: cfg.eval_images]
    model = create_model(arch, width=cfg.width)
    start = time.perf_counter()
    evaluate_samples(model, samples, device, bs=min(cfg.batch, 4))
    sync(device)
    return len(samples) / (time.perf_counter() - start)


def bench_metric(device: torch.device, batches: int = 5, size: int = 320, bs: int = 8) -> dict:
    """Seconds per batch of fastseg's confusion-matrix metric against fastai's JaccardCoeffMulti."""
    from types import SimpleNamespace

    from fastai.metrics import JaccardCoeffMulti

    from fastseg.evaluate.metrics import seg_metrics
    data = [SimpleNamespace(pred=torch.randn(bs, NUM_CLASSES, size, size, device=device),
                            y=torch.randint(0, NUM_CLASSES, (bs, size, size), device=device), dl=None)
            for _ in range(batches)]
    for d in data:
        d.yb = (d.y,)
    ours, theirs = seg_metrics(), JaccardCoeffMulti()

    def run(metrics):
        for m in metrics:
            m.reset()
        for d in data:
            for m in metrics:
                m.accumulate(d)
        return [m.value for m in metrics]
    fast = time_call(lambda: run(ours), 2, device) / batches
    slow = time_call(lambda: run([theirs]), 2, device) / batches
    return {"ours_ms": 1e3 * fast, "fastai_ms": 1e3 * slow, "speedup": slow / fast}


def _rate(work, count: int) -> float:
    work()  # warm caches once
    start = time.perf_counter()
    work()
    return count / (time.perf_counter() - start)


def markdown(cfg: BenchConfig, device: torch.device, r: dict, command: str) -> str:
    data, fastest = r["data"], max(m["train_img_s"] for m in r["models"])
    lines = [f"## {time.strftime('%Y-%m-%d')} on {device.type}: {machine_line(device)}", "",
             f"Command: `{command}`", "",
             f"### Models at {cfg.arch_size}×{cfg.arch_size}, batch {cfg.batch}, width {cfg.width}, fp32", "",
             "| arch | params (M) | GFLOP/img forward | GFLOP/img train step | train img/s | achieved TFLOP/s |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {m['arch']} | {m['params_m']:.2f} | {m['gflops_fwd']:.1f} | {m['gflops_train']:.1f} | "
              f"{m['train_img_s']:.2f} | {m['tflops_s']:.3f} |" for m in r["models"]]
    lines += ["", "### (a) fastseg Learner against a plain PyTorch loop (same model, batches, SGD, precision)", "",
              "| arch | plain loop img/s | Learner img/s | ratio (target ≥ 0.95) |", "|---|---|---|---|"]
    lines += [f"| {a['arch']} | {a['plain_img_s']:.2f} | {a['learner_img_s']:.2f} | {a['ratio']:.3f} |"
              for a in r["learner"]]
    lines += ["", "### (b) Data pipeline, one process = one worker, VOC-sized JPEGs", "",
              "| JPEG decode only (img/s) | light preset + crop 320 (img/s) | ratio (target ≥ 0.40) | "
              "workers to feed the fastest training rate above |", "|---|---|---|---|",
              f"| {data['decode_img_s']:.1f} | {data['pipeline_img_s']:.1f} | {data['ratio']:.2f} | "
              f"{max(1, -(-fastest // data['pipeline_img_s'])):.0f} |",
              "", "### (c) Evaluation at native VOC sizes", "", "| arch | images/s |", "|---|---|"]
    lines += [f"| {arch} | {rate:.2f} |" for arch, rate in r["evaluation"].items()]
    met = r["metric"]
    lines += ["", f"### (d) Metric accumulation per batch (8×{NUM_CLASSES}×320×320 logits)", "",
              "| fastseg confusion matrix (ms) | fastai JaccardCoeffMulti (ms) | speed-up (target ≥ 10×) |",
              "|---|---|---|", f"| {met['ours_ms']:.1f} | {met['fastai_ms']:.1f} | {met['speedup']:.1f}× |", ""]
    if "precision" not in r:
        lines += ["(e) precision, memory and MFU run on CUDA only: no GPU on this machine.", ""]
        return "\n".join(lines)
    lines += [f"### (e) Precision modes at {cfg.arch_size}×{cfg.arch_size}, batch {cfg.batch}", "",
              "| arch | mode | train img/s | achieved TFLOP/s | peak memory (GiB) | MFU (of dense bf16 peak) |",
              "|---|---|---|---|---|---|"]
    lines += [f"| {p['arch']} | {p['mode']} | {p['img_s']:.1f} | {p['tflops_s']:.1f} | "
              f"{p['peak_gib']:.1f} | {_percent(p['mfu'])} |"
              for p in r["precision"]]
    return "\n".join(lines) + "\n"


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f} %"


def run_bench(cfg: BenchConfig, out: Path | None, command: str) -> str:
    """Run every benchmark, append the section to `out` (if given) and return it."""
    from fastseg.config import SynthConfig
    from fastseg.data.synthetic import generate
    from fastseg.devices.select import pick_device
    device = pick_device(cfg.device)
    cfg = for_device(cfg, device)
    folder = Path(tempfile.mkdtemp(prefix="fastseg-bench-"))
    try:
        generate(folder, SynthConfig(n_train=max(cfg.images, cfg.eval_images), n_val=4, n_sbd_only=2,
                                     size=VOC_SIZE, seed=1))
        voc, sbd = DataRoots.under(folder).voc, DataRoots.under(folder).sbd
        results = {"models": [bench_model(arch, cfg, device) for arch in cli_archs()],
                   "learner": [bench_learner_vs_plain(arch, cfg, device) for arch in cli_archs()],
                   "data": bench_data(voc, sbd, cfg.images),
                   "evaluation": {arch: bench_evaluation(arch, cfg, voc, sbd, device) for arch in cli_archs()},
                   "metric": bench_metric(device)}
        if device.type == "cuda":
            results["precision"] = [row for m in results["models"]
                                    for row in bench_precision(m["arch"], cfg, device, m["gflops_train"])]
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    section = markdown(cfg, device, results, command)
    if out is not None:
        append_section(out, section, "# Benchmarks\n\nOne section per `make bench` run.\n")
    return section


def append_section(out: Path, section: str, head: str = "# Benchmarks\n") -> Path:
    """Append a markdown `section` to the file `out` (BENCHMARKS.md), atomically; a new file starts with
    `head`. What `bench` and `doctor --out` write their results with."""
    text = out.read_text() if out.is_file() else head
    return atomic_write(out, lambda tmp: tmp.write_text(text.rstrip() + "\n\n" + section))
