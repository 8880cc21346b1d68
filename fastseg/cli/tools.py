"""`fastseg bench`, `doctor` and `demo`: programs about fastseg (fastseg.tools)."""

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from fastseg.cli import app
from fastseg.cli.common import (
    BENCH,
    DeviceOpt,
    friendly,
    per_device,
)
from fastseg.config import (
    BenchConfig,
)
from fastseg.console import console, log
from fastseg.errors import FastsegError


@app.command(epilog="Example: fastseg bench --out BENCHMARKS.md")
@friendly
def bench(out: Annotated[Path | None, typer.Option(help="Markdown file to append the results to.")] = None,
          size: Annotated[int, typer.Option(help="Model input side in pixels.")] = BENCH["arch_size"],
          batch: Annotated[int | None, typer.Option(help=per_device("Model batch size", 0))] = None,
          width: Annotated[float, typer.Option(help="Model width multiplier.")] = BENCH["width"],
          steps: Annotated[int | None, typer.Option(help=per_device("Timed steps per model", 1))] = None,
          images: Annotated[int, typer.Option(help="Images for the data pipeline benchmark.")] = BENCH["images"],
          compile: Annotated[bool, typer.Option("--compile/--no-compile", help="The torch.compile precision row "
                             "(CUDA only).")] = BENCH["compile"],
          device: DeviceOpt = None):
    """Data pipeline vs JPEG decode, and training images/s and GFLOPs per image for each arch."""

    from fastseg.tools.bench import run_bench
    command = "fastseg bench " + " ".join(sys.argv[2:])
    cfg = BenchConfig(arch_size=size, batch=batch, width=width, steps=steps, images=images, compile=compile,
                      device=device)
    section = run_bench(cfg, out, command.strip())
    console.print(section, markup=False, soft_wrap=True)


@app.command(epilog="Example: fastseg doctor --out BENCHMARKS.md")
@friendly
def doctor(size: Annotated[int | None, typer.Option(help="Input side (default: 320 on CUDA, 64 on CPU).")] = None,
           width: Annotated[float | None, typer.Option(help="SegNet width (default: 1.0 on CUDA, 0.125 on CPU).")]
           = None,
           batch: Annotated[int | None, typer.Option(help="Batch size (default: 16 on CUDA, 2 on CPU).")] = None,
           steps: Annotated[int | None, typer.Option(help="Timed steps per mode (default: 10 on CUDA, 2 on CPU).")]
           = None,
           compile: Annotated[bool | None, typer.Option("--compile/--no-compile", help="Run the torch.compile "
                              "row (default: on CUDA only; CPU compilation takes minutes).")] = None,
           matmul: Annotated[int | None, typer.Option(help="Side of the peak-measuring matmul (default: 8192 on "
                             "CUDA, 1024 on CPU).")] = None,
           out: Annotated[Path | None, typer.Option(help="Markdown file to append the table to.")] = None,
           device: DeviceOpt = None):
    """Train-step check per precision mode (fp32, bf16, channels_last, compile): agreement with fp32,
    img/s, peak memory, TFLOP/s and MFU against this device's measured matmul peak; exit 1 on a mismatch."""

    from fastseg.tools.doctor import COLUMNS, DoctorConfig, markdown, run_doctor, table_rows
    result = run_doctor(DoctorConfig(size=size, width=width, batch=batch, steps=steps, compile=compile,
                                     matmul=matmul, device=device))
    table = Table(title=f"fastseg doctor on {result['device']}")
    for column in COLUMNS:
        table.add_column(column, justify="left" if column in ("mode", "check") else "right")
    for row in table_rows(result):
        table.add_row(*row)
    console.print(table)
    peaks = result["peaks"]
    log(f"Measured peaks: fp32 {peaks['fp32']:.3f} TFLOP/s, bf16 {peaks['bf16']:.3f} TFLOP/s; "
        f"{result['train_gflops_per_image']:.2f} GFLOP per image per training step.")
    if out is not None:
        from fastseg.tools.bench import append_section
        append_section(out, markdown(result, "fastseg " + " ".join(sys.argv[1:])))
    if not all(r.get("ok", True) for r in result["rows"]):
        log("A precision mode disagrees with fp32 (see the check column).")
        raise typer.Exit(1)


@app.command(epilog="Example: fastseg demo --out demo --seeds 0,1,2,3,4 --threads 2")
@friendly
def demo(out: Annotated[Path, typer.Option(help="Folder for the synthetic data, runs and summary.")] = Path("demo"),
         epochs: Annotated[int | None, typer.Option(help="Override the demo's epochs.")] = None,
         seed: Annotated[int | None, typer.Option(help="Training seed (default: the demo's).")] = None,
         seeds: Annotated[str | None, typer.Option(help="Comma-separated seeds: run the demo once per seed "
                                                         "and print a table (e.g. 0,1,2,3,4).")] = None,
         threads: Annotated[int | None, typer.Option(help="CPU threads for torch (default: torch's).")] = None,
         dropout: Annotated[float | None, typer.Option(help="Bayesian SegNet's dropout (default: none); the "
                                                       "evaluation then averages 8 Monte Carlo samples.")] = None):
    """Synthetic data → find-lr → fit a reduced-width SegNet → evaluate, against a colour-only control."""
    from dataclasses import replace

    from fastseg.tools.demo import DemoConfig, run_demo, run_sweep, torch_threads
    cfg = DemoConfig()
    cfg = replace(cfg, epochs=cfg.epochs if epochs is None else epochs, seed=cfg.seed if seed is None else seed,
                  dropout=cfg.dropout if dropout is None else dropout)
    if cfg.epochs < 1:
        raise FastsegError(f"--epochs {cfg.epochs} must be at least 1.")
    if threads is not None and threads < 1:
        raise FastsegError(f"--threads {threads} must be at least 1.")
    if seeds is not None:
        sweep = run_sweep(out, cfg, _seed_list(seeds), threads)
        _print_sweep(sweep)
        log(f"Sweep written to {out / 'demo_sweep.json'}")
        return
    with torch_threads(threads):
        summary = run_demo(out, cfg)
    log(f"SegNet (width {cfg.width}) mIoU {summary['segnet_miou']:.3f} "
        f"(untrained {summary['untrained_miou']:.3f}); colour-only control {summary['colour_control_miou']:.3f}; "
        f"gap {summary['gap_over_control']:+.3f}.")
    log(f"Run folder: {summary['run']}  (summary in {out / 'demo_summary.json'})")


def _seed_list(text: str) -> list[int]:
    try:
        seeds = [int(v) for v in text.split(",")]
    except ValueError:
        raise FastsegError(f"--seeds {text} is not a comma-separated list of integers, e.g. 0,1,2,3,4.") from None
    if len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise FastsegError(f"--seeds {text} must list distinct non-negative integers.")
    return seeds


def _print_sweep(sweep: dict) -> None:
    table = Table(title="Demo sweep (validation mIoU)")
    for column in ("seed", "threads", "SegNet", "colour control", "untrained", "seconds"):
        table.add_column(column, justify="right")
    for r in sweep["rows"]:
        table.add_row(str(r["seed"]), str(r["threads"]), f"{r['segnet_miou']:.3f}", f"{r['colour_control_miou']:.3f}",
                      f"{r['untrained_miou']:.3f}", f"{r['seconds']:.0f}")
    console.print(table)
    log(f"SegNet median {sweep['segnet_median']:.3f}, minimum {sweep['segnet_min']:.3f}; "
        f"colour control at most {sweep['control_max']:.3f}.")


