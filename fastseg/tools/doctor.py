"""`fastseg doctor`: is the fast path right and fast on this device?

First trains a SegNet briefly in fp32 on one learnable batch (each 16×16 cell is one of four classes,
drawn in that class's colour), so that its logits have margins: at initial weights most pixels are near-ties, where any
rounding flips the argmax and an agreement check cannot tell rounding from a real bug. Then, per
precision mode (fp32, bf16, bf16 + channels_last, bf16 + channels_last + torch.compile), from those
weights: the eval-mode logits through fit's input path (`InputPath`'s conversion, the mode's
autocast) against fp32's (argmax agreement), the first training step's loss against fp32's, and the
time of fastseg's Learner step (`bench.learner_epoch_seconds`: loader copy, input path, precision
callbacks): images/s, peak memory, achieved TFLOP/s from the FLOP count the bench uses, and its share
(MFU) of this device's own peak, measured in the same run with a large matmul in the mode's dtype.
"""

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from fastseg.constants import MIN_SIZE, NUM_CLASSES
from fastseg.errors import FastsegError
from fastseg.models import create_model
from fastseg.tools.bench import (
    PRECISION_MODES,
    learner_epoch_seconds,
    machine_line,
    model_flops,
    sync,
    time_call,
)
from fastseg.train.fastpath import plain_input

LOSS_RTOL = 0.05      # bf16 keeps ~3 significant digits; the first-step loss agrees far better than this,
LOSS_ATOL = 0.01      # or within this many nats: a trained model's loss is small, so its relative change
# is not (an H200 at 320², full width: 7 % of a small loss, with 99.9 % of pixels agreeing)
MIN_AGREEMENT = 0.95  # share of pixels whose argmax matches fp32's on the briefly trained model: bf16
# rounding flips only the few pixels left near a tie; a layout, cast or NaN bug flips most of them
CELL = 16                  # side of the learnable batch's single-class cells
BATCH_CLASSES = (0, 5, 10, 15)  # the classes drawn: few enough to learn in tens of steps
NOISE = 0.1                # pixel noise around each class's colour
WARMUP_LR = 1e-2           # Adam, for the brief fp32 training that gives the logits their margins


@dataclass
class DoctorConfig:
    size: int | None = None         # input side; None: 320 on CUDA, 64 on the CPU
    width: float | None = None      # model width; None: 1.0 on CUDA, 0.125 on the CPU
    batch: int | None = None        # None: 16 on CUDA, 2 on the CPU
    steps: int | None = None        # timed steps per mode; None: 10 on CUDA, 2 on the CPU
    compile: bool | None = None     # the compile row; None: on CUDA only (CPU compilation takes minutes)
    matmul: int | None = None       # side of the peak-measuring matmul; None: 8192 on CUDA, 1024 on the CPU
    train_steps: int | None = None  # fp32 steps before the checks; None: 30
    device: str | None = None

    def __post_init__(self) -> None:
        """Raises FastsegError naming the first option out of range (None is the device's default)."""
        for name, value in (("--size", self.size), ("--batch", self.batch), ("--steps", self.steps),
                            ("--matmul", self.matmul)):
            if value is not None and value < 1:
                raise FastsegError(f"{name} {value} must be at least 1.")
        if self.size is not None and self.size < MIN_SIZE:
            raise FastsegError(f"--size {self.size} is too small; use at least {MIN_SIZE} pixels.")


CUDA_DEFAULTS = DoctorConfig(size=320, width=1.0, batch=16, steps=10, compile=True, matmul=8192, train_steps=30)
CPU_DEFAULTS = DoctorConfig(size=64, width=0.125, batch=2, steps=2, compile=False, matmul=1024, train_steps=30)


def for_device(cfg: DoctorConfig, device: torch.device) -> DoctorConfig:
    """`cfg` with every unset option taken from the device's defaults."""
    base = CUDA_DEFAULTS if device.type == "cuda" else CPU_DEFAULTS
    given = {k: v for k, v in vars(cfg).items() if v is not None}
    return replace(base, **(given | {"device": str(device)}))


def matmul_peak_tflops(device: torch.device, dtype: torch.dtype, n: int) -> float:
    """Achieved TFLOP/s of an n×n @ n×n matmul in `dtype`: the device's practical peak for it. fp32
    is measured in the math cuDNN's convolutions use (TF32 where `cudnn.allow_tf32`, PyTorch's
    default), so fp32's MFU compares like with like (an H200: 51 TFLOP/s in IEEE fp32)."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32
    try:
        seconds = time_call(lambda: a @ b, 3, device)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous
    return 2 * n**3 / seconds / 1e12


def fixed_batch(cfg: DoctorConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """A learnable batch, seeded, on the host: (images B×3×S×S float32, targets B×S×S int64). Each
    CELL×CELL cell is one of BATCH_CLASSES, drawn in that class's colour plus NOISE."""
    gen = torch.Generator().manual_seed(0)
    cells = -(-cfg.size // CELL)
    picks = torch.randint(0, len(BATCH_CLASSES), (cfg.batch, cells, cells), generator=gen)
    y = torch.tensor(BATCH_CLASSES)[picks]
    y = y.repeat_interleave(CELL, 1).repeat_interleave(CELL, 2)[:, :cfg.size, :cfg.size].contiguous()
    colours = torch.randn(NUM_CLASSES, 3, generator=gen)
    x = colours[y].permute(0, 3, 1, 2) + NOISE * torch.randn(cfg.batch, 3, cfg.size, cfg.size, generator=gen)
    return x.contiguous(), y


def trained_weights(cfg: DoctorConfig, device: torch.device, x: torch.Tensor, y: torch.Tensor) -> dict:
    """A seeded SegNet trained in fp32 for cfg.train_steps Adam steps on (x, y), BatchNorm statistics
    settled on the batch: the start of every mode, with logits far from ties."""
    torch.manual_seed(0)
    model = create_model("segnet", NUM_CLASSES, width=cfg.width).to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=WARMUP_LR)
    x, y = x.to(device), y.to(device)
    for _ in range(cfg.train_steps):
        F.cross_entropy(model(x), y).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.momentum = None  # a cumulative average: the next pass sets the batch's statistics
                m.reset_running_stats()
        model(x)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def mode_model(cfg: DoctorConfig, device: torch.device, channels_last: bool, weights: dict) -> torch.nn.Module:
    """A SegNet from `weights` on `device`, in the mode's memory format."""
    model = create_model("segnet", NUM_CLASSES, width=cfg.width).to(device)
    model.load_state_dict(weights)
    return model.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def mode_outputs(model, device: torch.device, dtype, channels_last: bool, compiled: bool, x, y) -> tuple:
    """(eval-mode logits B×C×S×S float32, first training step's loss) of one mode, with fit's input
    conversion (`plain_input`) and the mode's autocast. The logits are compared in eval mode: in
    train mode BatchNorm's batch statistics of a small batch amplify bf16 rounding."""
    run = torch.compile(model) if compiled else model
    x, y = plain_input(x.to(device), channels_last), y.to(device)

    def forward():
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            return run(x).float()
    model.eval()
    with torch.no_grad():
        logits = forward()
    model.train()
    loss = F.cross_entropy(forward(), y)
    loss.backward()
    model.zero_grad(set_to_none=True)
    return logits, float(loss.detach())


def peak_memory(device: torch.device) -> float | None:
    """GiB allocated at most since the last reset (CUDA); None elsewhere."""
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def run_doctor(cfg: DoctorConfig) -> dict:
    """Every precision mode's row plus the device's measured peaks: {"config", "peaks", "rows"}."""
    from fastseg.devices.select import pick_device
    device = pick_device(cfg.device)
    cfg = for_device(cfg, device)
    x, y = fixed_batch(cfg)
    weights = trained_weights(cfg, device, x, y)
    peaks = {name: matmul_peak_tflops(device, dtype, cfg.matmul)
             for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))}
    rows, reference, flops = [], None, None
    for name, dtype, channels_last, compiled in PRECISION_MODES:
        if compiled and not cfg.compile:
            rows.append({"mode": name, "skipped": "--compile"})
            continue
        row, logits = measure_mode(cfg, device, (name, dtype, channels_last, compiled), (x, y, weights), peaks)
        if reference is None:
            reference = (logits, row["loss"])
            flops = row["train_flops"]
        rows.append(check_against_fp32(row, logits, *reference))
    return {"config": cfg, "device": device, "peaks": peaks, "rows": rows, "train_gflops_per_image":
            flops / cfg.batch / 1e9 if flops else None}


def measure_mode(cfg: DoctorConfig, device, mode: tuple, start: tuple, peaks: dict) -> tuple[dict, torch.Tensor]:
    """One mode's row (first-step loss, img/s, TFLOP/s, MFU, peak memory) and its logits on the
    fixed batch; `mode` is a PRECISION_MODES entry, `start` is (images, targets, trained weights)."""
    name, dtype, channels_last, compiled = mode
    x, y, weights = start
    model = mode_model(cfg, device, channels_last, weights)
    logits, loss = mode_outputs(model, device, dtype, channels_last, compiled, x, y)
    _, train_flops = model_flops(mode_model(cfg, device, False, weights), x.to(device))  # the same work in every mode
    host = (x.pin_memory(), y.pin_memory()) if device.type == "cuda" else (x, y)
    seconds = learner_epoch_seconds(model, [host] * cfg.steps, device, "off" if dtype is None else "bf16",
                                    channels_last, compiled) / cfg.steps
    sync(device)
    tflops = train_flops / seconds / 1e12
    peak = peaks["bf16" if dtype is not None else "fp32"]
    return ({"mode": name, "loss": loss, "img_s": cfg.batch / seconds, "tflops_s": tflops, "peak_tflops": peak,
             "mfu": tflops / peak, "peak_gib": peak_memory(device), "train_flops": train_flops}, logits)


def check_against_fp32(row: dict, logits: torch.Tensor, ref_logits: torch.Tensor, ref_loss: float) -> dict:
    """`row` with its agreement with fp32: relative first-step loss difference, share of pixels whose
    argmax matches, and ok (loss within LOSS_RTOL or LOSS_ATOL, agreement at least MIN_AGREEMENT)."""
    loss_rel = abs(row["loss"] - ref_loss) / abs(ref_loss)
    loss_ok = abs(row["loss"] - ref_loss) <= max(LOSS_RTOL * abs(ref_loss), LOSS_ATOL)
    agreement = float((logits.argmax(1) == ref_logits.argmax(1)).float().mean())
    return {**row, "loss_rel_diff": loss_rel, "argmax_agreement": agreement,
            "ok": loss_ok and agreement >= MIN_AGREEMENT}


COLUMNS = ("mode", "img/s", "TFLOP/s", "peak", "MFU", "mem GiB", "Δ loss", "argmax =", "check")
"""peak: the measured matmul TFLOP/s in the mode's dtype; Δ loss: first-step loss against fp32,
relative; argmax =: share of pixels whose class matches fp32's."""
SHORT_NAMES = {"fp32": "fp32", "bf16": "bf16", "bf16 + channels_last": "bf16+CL",
               "bf16 + channels_last + compile": "bf16+CL+compile"}


def table_rows(result: dict) -> list[tuple[str, ...]]:
    """The doctor table's cells, one tuple per mode, in COLUMNS order."""
    out = []
    for r in result["rows"]:
        if "skipped" in r:
            out.append((SHORT_NAMES[r["mode"]], *(["-"] * (len(COLUMNS) - 2)), f"skip ({r['skipped']})"))
            continue
        memory = "n/a" if r["peak_gib"] is None else f"{r['peak_gib']:.2f}"
        out.append((SHORT_NAMES[r["mode"]], f"{r['img_s']:.1f}", f"{r['tflops_s']:.4f}", f"{r['peak_tflops']:.3f}",
                    f"{100 * r['mfu']:.1f}%", memory, f"{100 * r['loss_rel_diff']:.2f}%",
                    f"{100 * r['argmax_agreement']:.1f}%", "ok" if r["ok"] else "MISMATCH"))
    return out


def markdown(result: dict, command: str) -> str:
    """A BENCHMARKS.md section: the machine, the sizes and the table."""
    import time
    cfg, device = result["config"], result["device"]
    lines = [f"## {time.strftime('%Y-%m-%d')} `fastseg doctor` on {device.type}: {machine_line(device)}", "",
             f"Command: `{command}`; SegNet width {cfg.width}, {cfg.size}×{cfg.size}, batch {cfg.batch}, "
             f"{cfg.steps} timed steps; peaks from {cfg.matmul}² matmuls.", "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(result)]
    return "\n".join(lines) + "\n"
