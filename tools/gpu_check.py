"""`make gpu-check`: everything fastseg should prove on a lent GPU machine, in one command.

Stages, each in its own process with its own time limit, so one failure or hang does not hide the
rest; results are written after every stage (OUT/gpu_check.json, OUT/gpu_check.md, one log per
stage):

1. info      device, driver, torch / CUDA / cuDNN versions
2. tests     the CUDA test set (tests/gpu, marked gpu)
3. data      VOC-sized synthetic JPEGs for the next two stages (2,000 training images)
4. fit       a timed 2-epoch SegNet fit over them at full width (bf16, channels_last, batch 32,
             crop 320) whose second epoch projects the SegNet recipe: 127 epochs of 10,582 training
             and 736 validation images
5. pipeline  the training loader alone with 16 workers on those JPEGs (images/s)
6. bench     `fastseg bench` (both archs at 320², batch 32)
7. doctor    `fastseg doctor` (precision modes on a briefly trained model)

`--dry-run` runs the same stages at tiny sizes on whatever device there is (the CPU in `make test`),
so the script is known to work before a GPU is at hand. Run from the repository root; see the
Makefile's gpu-check target for the carried wheels.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RECIPE_EPOCHS, RECIPE_TRAIN, RECIPE_VALID = 127, 10_582, 736  # recipes/segnet-voc.toml on train-aug / seg11valid
TARGETS = {"segnet_bf16_img_s": 1200, "pipeline_over_training": 1.2, "recipe_minutes": 20}  # issue 24 on H100/H200

FULL = {"train": 2000, "valid": 100, "size": 500, "crop": 320, "bs": 32, "width": 1.0, "workers": 16,
        "pipeline_batches": 60, "limits": {"tests": 200, "data": 60, "fit": 120, "pipeline": 60, "bench": 150,
                                            "doctor": 150}}
DRY = {"train": 24, "valid": 6, "size": 96, "crop": 64, "bs": 4, "width": 0.0625, "workers": 2,
       "pipeline_batches": 4, "limits": {"tests": 300, "data": 120, "fit": 300, "pipeline": 120, "bench": 300,
                                          "doctor": 300}}


ROOT = Path(__file__).resolve().parent.parent  # the repository: fastseg and tests/ are imported from here


def run_stage(name: str, cmd: list[str], limit: int, out: Path) -> dict:
    """Run `cmd` with a time limit, its output in OUT/<name>.log; returns {"stage", "rc", "seconds"}."""
    start = time.monotonic()
    with open(out / f"{name}.log", "w") as log:
        try:
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
            rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, timeout=limit, cwd=ROOT, env=env).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    seconds = time.monotonic() - start
    print(f"[gpu-check] {name}: rc={rc} in {seconds:.0f} s", flush=True)
    return {"stage": name, "rc": rc, "seconds": round(seconds, 1)}


def stage_command(stage: str, args, sizes: dict) -> list[str]:
    """This script re-run for one in-process stage (info, data, fit, pipeline)."""
    return [sys.executable, __file__, "--stage", stage, "--out", str(args.out), "--work", str(args.work)] + (
        ["--dry-run"] if args.dry_run else [])


def cli_commands(args, sizes: dict) -> dict[str, list[str]]:
    """The stages that are fastseg commands or pytest."""
    fastseg = [sys.executable, "-m", "fastseg"]
    section = str(args.out / "benchmarks_gpu.md")
    tiny_bench = ["--size", "32", "--batch", "2", "--width", "0.0625", "--steps", "1", "--images", "4",
                  "--no-compile"] if args.dry_run else ["--size", "320", "--batch", "32", "--no-compile"]
    tiny_doctor = ["--size", "32", "--width", "0.0625", "--batch", "2", "--steps", "1", "--matmul", "128",
                   "--no-compile"] if args.dry_run else []
    return {"tests": [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=",
                      "-m", "gpu", "tests/gpu", "--durations=0", f"--junitxml={args.out / 'tests.xml'}"],
            "bench": fastseg + ["bench", *tiny_bench, "--out", section],
            "doctor": fastseg + ["doctor", *tiny_doctor, "--out", section]}


def info() -> dict:
    """The machine: GPU, driver, torch, CUDA and cuDNN versions."""
    import torch
    out = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
           "cudnn": torch.backends.cudnn.version(), "cpus": os.cpu_count(), "device": "cpu", "driver": None}
    if torch.cuda.is_available():
        out["device"] = torch.cuda.get_device_name(0)
        try:
            out["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                           capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            pass
    return out


def make_data(work: Path, sizes: dict) -> dict:
    """VOC-layout synthetic data under WORK/data: `train` voc12-train and `valid` voc12-val images."""
    from fastseg.config import SynthConfig
    from fastseg.data.synthetic import generate
    generate(work / "data", SynthConfig(n_train=sizes["train"], n_val=sizes["valid"], n_sbd_only=2,
                                        size=sizes["size"], seed=1))
    return {"train": sizes["train"], "valid": sizes["valid"], "size": sizes["size"]}


def data_config(work: Path, sizes: dict, workers: int):
    from fastseg.config import DataConfig
    from fastseg.data.splits import DataRoots
    roots = DataRoots.under(work / "data")
    return DataConfig(voc=str(roots.voc), sbd=str(roots.sbd), train_split="voc12-train", valid_split="voc12-val",
                      crop=sizes["crop"], bs=sizes["bs"], num_workers=workers, augment="light")


def timed_fit(work: Path, sizes: dict) -> dict:
    """2 epochs of SegNet at full width; the second epoch's training and validation seconds per image
    project the recipe's 127 epochs."""
    from fastai.callback.core import Callback

    from fastseg.config import FitConfig
    from fastseg.devices.select import pick_device
    from fastseg.train.fit import fit

    class PhaseTimer(Callback):
        order = 99

        def __init__(self):
            self.phases = []

        def _sync(self):
            import torch
            if torch.cuda.is_available():
                torch.cuda.synchronize()

        def before_train(self):
            self._sync()
            self.t = time.perf_counter()

        def after_train(self):
            self._sync()
            self.train_s = time.perf_counter() - self.t

        def before_validate(self):
            self.t = time.perf_counter()

        def after_validate(self):
            self._sync()
            self.phases.append((self.train_s, time.perf_counter() - self.t))

    device = pick_device(None)
    cfg = FitConfig(data=data_config(work, sizes, sizes["workers"]), arch="segnet", width=sizes["width"],
                    pretrained="none", epochs=2, lr=1e-3, opt="sgd", amp="bf16" if device.type == "cuda" else "off",
                    channels_last=device.type == "cuda", runs_dir=str(work / "runs"), name=f"fit-{time.time_ns()}")
    timer = PhaseTimer()
    fit(cfg, extra_cbs=[timer])
    train_s, valid_s = timer.phases[-1]
    per_train, per_valid = train_s / sizes["train"], valid_s / sizes["valid"]
    epoch_s = per_train * RECIPE_TRAIN + per_valid * RECIPE_VALID
    return {"epochs": [list(p) for p in timer.phases], "train_img_s": 1 / per_train, "valid_img_s": 1 / per_valid,
            "recipe_epoch_s": epoch_s, "recipe_minutes": RECIPE_EPOCHS * epoch_s / 60,
            "batch": sizes["bs"], "crop": sizes["crop"], "workers": sizes["workers"]}


def pipeline(work: Path, sizes: dict) -> dict:
    """Images/s of the training loader alone (decode, augment, crop, collate, copy to the device)."""
    import torch

    from fastseg.data.dataloaders import build_dataloaders
    from fastseg.devices.select import pick_device
    device = pick_device(None)
    dl = build_dataloaders(data_config(work, sizes, sizes["workers"]), device=device, log=lambda _: None).train
    count, start = 0, None
    for i, (x, _) in enumerate(dl):
        if i == 2:  # workers started and warm
            torch.cuda.synchronize() if device.type == "cuda" else None
            start, count = time.perf_counter(), 0
        count += len(x)
        if i + 1 >= sizes["pipeline_batches"]:
            break
    if device.type == "cuda":
        torch.cuda.synchronize()
    return {"img_s": count / (time.perf_counter() - start), "workers": sizes["workers"], "batch": sizes["bs"],
            "crop": sizes["crop"]}


STAGES = {"info": lambda work, sizes: info(), "data": make_data, "fit": timed_fit, "pipeline": pipeline}


def run_one(args, sizes: dict) -> None:
    """One in-process stage: its result merged into OUT/gpu_check.json under its name."""
    result = STAGES[args.stage](args.work, sizes)
    path = args.out / f"{args.stage}.json"
    path.write_text(json.dumps(result, indent=2))


def bench_rows(section: Path) -> dict:
    """The SegNet bf16 + channels_last training img/s from bench's precision table, if present."""
    for line in section.read_text().splitlines() if section.is_file() else []:
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) > 2 and cells[0] == "segnet" and cells[1] == "bf16 + channels_last":
            return {"segnet_bf16_cl_img_s": float(cells[2])}
    return {}


def summary(out: Path, stages: list[dict]) -> dict:
    """Every stage's status and results, with the issue's targets checked where measured."""
    results = {s["stage"]: s for s in stages}
    for name in STAGES:
        path = out / f"{name}.json"
        if path.is_file():
            results.setdefault(name, {})["result"] = json.loads(path.read_text())
    bench = bench_rows(out / "benchmarks_gpu.md")
    fit = results.get("fit", {}).get("result", {})
    pipe = results.get("pipeline", {}).get("result", {})
    checks = {}
    if "segnet_bf16_cl_img_s" in bench:
        checks["segnet_bf16_img_s"] = (bench["segnet_bf16_cl_img_s"], bench["segnet_bf16_cl_img_s"]
                                       >= TARGETS["segnet_bf16_img_s"])
    if pipe and fit:
        ratio = pipe["img_s"] / fit["train_img_s"]
        checks["pipeline_over_training"] = (ratio, ratio >= TARGETS["pipeline_over_training"])
    if fit:
        checks["recipe_minutes"] = (fit["recipe_minutes"], fit["recipe_minutes"] <= TARGETS["recipe_minutes"])
    return {"stages": results, "bench": bench, "targets": TARGETS, "checks": checks}


def markdown(report: dict, command: str) -> str:
    """The GPU section of BENCHMARKS.md: machine, command, stage table, targets, then bench/doctor."""
    stages = report["stages"]
    machine = stages.get("info", {}).get("result", {})
    lines = [f"## {time.strftime('%Y-%m-%d')} `make gpu-check` on {machine.get('device', '?')}", "",
             f"Driver {machine.get('driver')}, torch {machine.get('torch')}, CUDA {machine.get('cuda')}, cuDNN "
             f"{machine.get('cudnn')}, Python {machine.get('python')}, {machine.get('cpus')} CPUs. "
             f"Command: `{command}`.", "", "| stage | exit | seconds |", "|---|---|---|"]
    lines += [f"| {name} | {s.get('rc')} | {s.get('seconds')} |" for name, s in stages.items() if "rc" in s]
    fit, pipe = stages.get("fit", {}).get("result"), stages.get("pipeline", {}).get("result")
    if fit:
        lines += ["", f"2-epoch SegNet fit (width 1, bf16, channels_last, batch {fit['batch']}, crop {fit['crop']}, "
                  f"{fit['workers']} workers), second epoch: training {fit['train_img_s']:.0f} img/s, validation "
                  f"{fit['valid_img_s']:.0f} img/s; the recipe's epoch (10,582 + 736 images) "
                  f"{fit['recipe_epoch_s']:.0f} s, **127 epochs ≈ {fit['recipe_minutes']:.1f} min**."]
    if pipe:
        lines += ["", f"Training loader alone, {pipe['workers']} workers: **{pipe['img_s']:.0f} img/s**."]
    lines += ["", "| target | measured | met |", "|---|---|---|"]
    lines += [f"| {k} (target {report['targets'][k]}) | {v:.2f} | {'yes' if ok else 'NO'} |"
              for k, (v, ok) in report["checks"].items()]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("gpu-check"), help="Results folder.")
    parser.add_argument("--work", type=Path, default=None, help="Scratch folder for data and runs "
                        "(default: a fresh one under the system's temporary folder).")
    parser.add_argument("--dry-run", action="store_true", help="Tiny sizes, any device.")
    parser.add_argument("--stage", choices=sorted(STAGES), help=argparse.SUPPRESS)
    parser.add_argument("--only", default=None, help="Comma-separated stages to run (default: all).")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    args.work = args.work or Path(tempfile.mkdtemp(prefix="fastseg-gpu-check-"))
    sizes = DRY if args.dry_run else FULL
    if args.stage:
        run_one(args, sizes)
        return 0
    order = ["info", "tests", "data", "fit", "pipeline", "bench", "doctor"]
    wanted = args.only.split(",") if args.only else order
    commands = cli_commands(args, sizes)
    stages = []
    for name in [s for s in order if s in wanted]:
        cmd = commands.get(name) or stage_command(name, args, sizes)
        stages.append(run_stage(name, cmd, sizes["limits"].get(name, 60), args.out))
        report = summary(args.out, stages)
        (args.out / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str))
        (args.out / "gpu_check.md").write_text(markdown(report, "make gpu-check"))
    print((args.out / "gpu_check.md").read_text())
    return 0 if all(s["rc"] == 0 for s in stages) else 1


if __name__ == "__main__":
    sys.exit(main())
