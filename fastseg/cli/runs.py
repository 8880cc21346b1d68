"""`fastseg compare`, `runs` and `report`: reading run folders back."""

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from fastseg.cli import app
from fastseg.cli.common import (
    RUNS,
    RunsOpt,
    SbdOpt,
    Voc11Opt,
    friendly,
    given_roots,
)
from fastseg.console import console, log
from fastseg.errors import FastsegError


@app.command(epilog="Example: fastseg evaluate runs/a; fastseg evaluate runs/b; fastseg compare runs/a runs/b")
@friendly
def compare(runs: Annotated[list[Path], typer.Argument(help="Run folders evaluated on one split; the first is "
                                                            "the baseline.")],
            out: Annotated[Path, typer.Option(help="Folder for compare.md, compare.png and compare.json.")]
            = Path("compare"),
            samples: Annotated[int, typer.Option(help="Paired bootstrap resamples.")] = 1000):
    """Side-by-side metrics and per-class IoU, and a paired bootstrap over the validation images saying
    whether each run's mIoU difference to the first is beyond noise."""
    from fastseg.evaluate.compare import compare_runs
    if samples < 100:
        raise FastsegError(f"--samples {samples} is too few for a 95 % interval; use at least 100.")
    result = compare_runs(runs, out, samples)
    names = result["names"]
    table = Table(title=f"{result['split']} ({result['images']} images)")
    for column in ("metric", *names):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for row in result["table"]:
        first, *rest = row["values"]
        table.add_row(row["metric"], f"{first:.4f}", *(f"{v:.4f} ({v - first:+.4f})" for v in rest))
    console.print(table)
    for test in result["tests"]:
        log(test["verdict"])
    log(f"Wrote {out / 'compare.md'}, {out / 'compare.png'} and {out / 'compare.json'}.")


@app.command("runs", epilog="Example: fastseg runs --runs-dir runs --json")
@friendly
def runs_cmd(runs_dir: RunsOpt = RUNS,
             as_json: Annotated[bool, typer.Option("--json", help="Print the rows as JSON for scripts.")] = False):
    """Every run folder in --runs-dir, oldest first: arch, data, epochs, best metric, state, time, size."""
    import json

    from fastseg.io.runs import format_bytes, format_seconds, list_runs
    rows = list_runs(runs_dir)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title=f"Runs in {runs_dir}")
    for column in ("run", "arch", "width", "train / valid", "epochs", "best (metric, epoch)", "state", "time", "size"):
        table.add_column(column, justify="right" if column in ("width", "epochs", "time", "size") else "left")
    for r in rows:
        best = f"{r['best']:.4f} {r['monitor']} @{r['best_epoch']}" if "best" in r else "–"
        epochs = f"{r['epochs_done']}/{r['epochs']}" if "epochs" in r else "–"
        state = r["state"] + (f" ({r['reason']})" if "reason" in r else "")
        table.add_row(r["name"], r.get("arch", "–"), str(r.get("width", "–")), r.get("splits", "–"), epochs, best,
                      state, format_seconds(r.get("seconds", 0)), format_bytes(r["bytes"]))
    console.print(table)


@app.command(epilog="Example: fastseg report runs/segnet-voc")
@friendly
def report(run: Annotated[Path | None, typer.Argument(help="Run folder (default: latest run).")] = None,
           runs_dir: RunsOpt = RUNS,
           voc: Annotated[Path | None, typer.Option("--voc", help="VOC2012 folder (default: the run's).")] = None,
           sbd: SbdOpt = None, voc11: Voc11Opt = None,
           data: Annotated[Path | None, typer.Option("--data", help="A folder dataset (default: the run's).")] = None):
    """Write report.md and a self-contained report.html (the run card) from a run's files."""
    from fastseg.evaluate.report import write_report
    from fastseg.evaluate.scoring import data_roots
    from fastseg.io.runs import CONFIG, latest_run, load_config
    run = run or latest_run(runs_dir, "metrics.json")
    roots, given = None, given_roots(voc, sbd, voc11, data, None)
    if given and (run / CONFIG).is_file():
        roots = data_roots(load_config(run / CONFIG), given)
    md, page = write_report(run, roots)
    log(f"Wrote {md} and {page}")
