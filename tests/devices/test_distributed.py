"""Several processes: the pieces on their own, then 2-process CPU (gloo) runs through the CLI, each
checking that the options it passes took effect under DDP."""

import ast
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from fastai.callback.core import CancelFitException
from fastai.data.load import DataLoader
from safetensors.torch import load_file

import fastseg
from fastseg.classes import VOC
from fastseg.config import SynthConfig
from fastseg.constants import padded_size
from fastseg.data.dataloaders import build_dataloaders, header_size, sharded_batches, size_batches
from fastseg.data.synthetic import generate
from fastseg.devices import collectives
from fastseg.devices.distributed import GlooSafeDistributedDL
from fastseg.evaluate.scoring import evaluate_run, load_per_image
from fastseg.io.runs import BEST, CONFIG, LAST, METRICS, PER_IMAGE, read_metrics_csv
from fastseg.io.serialize import load_state, read_meta
from fastseg.models import create_model
from fastseg.models.weights import model_metadata, save_model
from fastseg.train import callbacks
from fastseg.train.callbacks import Interrupt, SeedEpochs
from tests.conftest import data_args, tiny_config

WIDTH = "0.0625"
TINY = ["--width", WIDTH, "--crop", "48", "--opt", "adam", "--lr", "1e-2", "--train", "voc12-train",
        "--valid", "voc12-val"]
ENV = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(Path(fastseg.__file__).parents[1])}


def fastseg_cli(*args, timeout=300, env=ENV):
    """`python -m fastseg ARGS` in a subprocess (fastseg's own --nproc launcher inside)."""
    return subprocess.run([sys.executable, "-m", "fastseg", *args], capture_output=True, text=True, timeout=timeout,
                          env=env)


def torchrun(*args, timeout=300):
    """`torchrun --standalone --nproc_per_node 2 -m fastseg ARGS` on the CPU (gloo), as the README shows it."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    env = {**ENV, "OMP_NUM_THREADS": "1"}
    return subprocess.run([*launcher, "-m", "fastseg", *args], capture_output=True, text=True, timeout=timeout,
                          env=env)


# --- the pieces -------------------------------------------------------------------------------------

COLLECTIVES = {"all_reduce", "all_gather", "all_gather_object", "broadcast", "broadcast_object_list", "reduce",
               "gather", "scatter", "barrier", "all_to_all", "reduce_scatter", "send", "recv", "isend", "irecv",
               "all_gather_into_tensor", "reduce_scatter_tensor", "gather_object", "scatter_object_list",
               "monitored_barrier", "all_to_all_single"}


def distributed_uses(path: Path) -> list[str]:
    """The torch.distributed imports and collective calls of one module, as 'line: what'."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import) and any(a.name.startswith("torch.distributed") for a in node.names):
            found.append(f"{node.lineno}: import {node.names[0].name}")
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("torch.distributed"):
            found.append(f"{node.lineno}: from {node.module}")
        if isinstance(node, ast.ImportFrom) and node.module == "torch" and any(a.name == "distributed"
                                                                               for a in node.names):
            found.append(f"{node.lineno}: from torch import distributed")
        if isinstance(node, ast.Attribute) and node.attr in COLLECTIVES and ast.unparse(node.value) in (
                "dist", "torch.distributed"):
            found.append(f"{node.lineno}: {ast.unparse(node)}")
    return found


def test_every_collective_goes_through_the_collectives_module():
    package = Path(fastseg.__file__).parent
    launcher = {"from torch.distributed.elastic.multiprocessing.api", "from torch.distributed.elastic.multiprocessing"
                ".errors", "from torch.distributed.launcher.api"}  # starts processes; makes no collective
    offenders = {}
    for path in sorted(package.rglob("*.py")):
        if path.name == "collectives.py":
            continue
        uses = [u for u in distributed_uses(path) if u.split(": ", 1)[1] not in launcher]
        if uses:
            offenders[str(path.relative_to(package))] = uses
    assert offenders == {}
    assert distributed_uses(package / "devices" / "collectives.py")  # the scan sees the module that does


def test_collectives_put_tensors_where_the_backend_takes_them(monkeypatch):
    cpu = torch.zeros(2)
    monkeypatch.setattr(collectives.dist, "get_backend_config", lambda: "cpu:gloo,cuda:nccl")
    assert collectives.backend_device(cpu) == torch.device("cpu")
    monkeypatch.setattr(collectives.dist, "get_backend_config", lambda: "cuda:nccl")  # a group made with "nccl" alone
    monkeypatch.setattr(collectives.torch.cuda, "current_device", lambda: 1)
    assert collectives.backend_device(cpu) == torch.device("cuda", 1)


def test_shard_batches_keeps_whole_batches():
    same = [(0, 0)] * 7  # samples of one size: batch b holds samples b*bs .. b*bs+bs-1
    assert sharded_batches(same, 2, 0, 2) == [[0, 1], [4, 5]]
    assert sharded_batches(same, 2, 1, 2) == [[2, 3], [6]]
    assert sorted(i for r in (0, 1) for b in sharded_batches(same, 3, r, 2) for i in b) == list(range(7))


def test_validation_shards_hold_one_process_batches_once(synth_root):
    valid = build_dataloaders(tiny_config(synth_root, "runs", "x").data, log=lambda _: None).valid
    batches = size_batches([header_size(s.image) for s in valid.items], valid.bs)
    shards = [valid.shard(rank, 2) for rank in (0, 1)]
    assert [shard.batches for shard in shards] == [batches[0::2], batches[1::2]]
    seen = [len(x) for shard in shards for x, _ in shard]
    assert sum(seen) == len(valid.items) and len(seen) == len(batches)  # every image once, nothing repeated


def test_seed_epochs_seeds_the_shuffle_ddp_draws_from():
    loader = GlooSafeDistributedDL(DataLoader(list(range(20)), bs=4, shuffle=True), rank=0, world_size=1)
    seeding = SeedEpochs(7)
    seeding.learn = SimpleNamespace(dls=SimpleNamespace(train=loader), epoch=3)
    orders = []
    for _ in range(2):
        seeding.before_epoch()
        orders.append(loader.get_idxs())
    assert orders[0] == orders[1] != list(range(20))


def test_each_process_draws_its_own_augmentations():
    draws = []
    for rank in (0, 1):
        seeding = SeedEpochs(7, rank)
        seeding.learn = SimpleNamespace(dls=SimpleNamespace(train=SimpleNamespace()), epoch=2)
        seeding.before_epoch()
        draws.append(torch.rand(3))
    assert not torch.equal(*draws)
    torch.manual_seed(callbacks.epoch_seed(7, 2))
    assert torch.equal(draws[0], torch.rand(3))  # rank 0 draws what a single process draws


def test_interrupt_agrees_only_where_every_process_is(monkeypatch):
    """Under DDP the stop flag is all-reduced at training checks and once after validation, never at
    a validation batch (processes hold different numbers of those)."""
    asked = []
    monkeypatch.setattr(callbacks, "world_size", lambda: 2)
    monkeypatch.setattr(callbacks, "any_process", lambda flag: asked.append(flag) or True)
    saved = []
    interrupt = Interrupt(saved.append)
    train = list(range(20))
    interrupt.learn = SimpleNamespace(training=False, iter=15, dl=list(range(17)), dls=SimpleNamespace(train=train))
    interrupt.after_batch()
    assert asked == [] and saved == []
    with pytest.raises(CancelFitException):
        interrupt.after_validate()
    assert asked == [False] and saved == [20]
    interrupt.learn.training = True
    with pytest.raises(CancelFitException):
        interrupt.after_batch()  # batch 16 of the training loader: a check
    assert saved == [20, 16]


def _guard_in_process(rank: int, init_file: str, results) -> None:
    """Process `rank` of 2 (gloo): its NaNGuard saw a NaN loss at batch 3 (rank 1) or nothing (rank 0),
    then checks at batch 16 as every process does."""
    import torch.distributed as dist
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        guard = callbacks.NaNGuard(classes=21, lr=0.01)
        guard.learn = SimpleNamespace(training=True, iter=0, epoch=0, dl=list(range(40)))
        guard.before_epoch()
        for i in range(16):
            guard.learn.iter = i
            guard.learn.loss = torch.tensor(float("nan") if rank == 1 and i == 2 else 1.0)
            guard.after_loss()
        results.put((rank, "no stop"))
    except Exception as error:  # noqa: BLE001 - the message is the result
        results.put((rank, str(error)))
    finally:
        dist.destroy_process_group()


def test_a_nan_in_one_process_stops_every_process_at_the_same_check(tmp_path):
    """A loss that goes NaN in one process only (the others' turn NaN a step later, after DDP's
    all-reduce) stops every process at the same check, each naming the first bad batch: a process
    left running would wait forever in its next collective."""
    import torch.multiprocessing as mp
    context = mp.get_context("fork")
    results = context.SimpleQueue()
    procs = [context.Process(target=_guard_in_process, args=(r, str(tmp_path / "init"), results)) for r in (0, 1)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    got = dict(results.get() for _ in procs)
    expected = ("The training loss became NaN at epoch 1, batch 3; lower --lr (0.01 now) or set --clip, and start a "
                "new run.")
    assert got == {0: expected, 1: expected}


JOIN_AND_EXIT = """
import torch
from fastseg.devices import collectives
collectives.init_process_group("cpu")
for _ in range(20):
    collectives.all_reduce_sum(torch.ones(1000))
collectives.all_gather_object({"rank": collectives.rank()})
"""


def test_a_process_that_joined_a_group_leaves_it_when_it_exits():
    """A process that joins the group through fastseg and ends without leaving it can abort as the
    interpreter shuts down (gloo: "terminate called without an active exception", SIGABRT), and the
    launcher then stops the other processes before they finish. Seen in 2 of 3 such runs here; five
    runs in a row all end with exit code 0 and nothing from C++."""
    script = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
              "--no-python", sys.executable, "-c", JOIN_AND_EXIT]
    for _ in range(5):
        result = subprocess.run(script, capture_output=True, text=True, timeout=120,
                                env={**ENV, "OMP_NUM_THREADS": "1"})
        assert (result.returncode, "terminate called" in result.stderr) == (0, False), result.stderr[-2000:]


def test_a_command_leaves_the_group_when_it_ends_well_and_only_then(tmp_path):
    """The CLI's wrapper destroys the group after a command that ended well; a failed command exits
    with its code and leaves NCCL's group alone (destroying it could wait on peers that never come)."""
    import torch.distributed as dist
    import typer

    from fastseg.cli.common import friendly
    from fastseg.errors import FastsegError

    def fail():
        raise FastsegError("no", 2)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        with pytest.raises(typer.Exit) as stop:
            friendly(fail)()
        assert stop.value.exit_code == 2 and dist.is_initialized()
        assert friendly(lambda: 7)() == 7 and not dist.is_initialized()
    finally:
        collectives.leave_process_group()


# --- through the CLI --------------------------------------------------------------------------------

def interrupt_after_first_epoch(args: list[str], metrics: Path, timeout=300) -> subprocess.CompletedProcess:
    """Runs `python -m fastseg ARGS` and presses Ctrl-C (SIGINT to its process group, loader workers
    included) once the first epoch's row is written."""
    proc = subprocess.Popen([sys.executable, "-m", "fastseg", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=ENV, start_new_session=True)
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        if metrics.is_file() and len(metrics.read_text().splitlines()) >= 2:
            os.killpg(proc.pid, signal.SIGINT)
            break
        time.sleep(0.05)
    out, err = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


def convs(weights: dict) -> dict:
    """The encoder's convolution kernels of a state dict."""
    return {k: v for k, v in weights.items() if k.startswith("encoder.") and v.dim() == 4}


def test_every_option_under_two_processes_through_ctrl_c_and_resume(synth_copy, tmp_path):
    start = save_model(create_model("segnet", width=float(WIDTH)), tmp_path / "start.safetensors",
                       model_metadata("segnet", VOC, float(WIDTH)))
    run = tmp_path / "runs" / "all"
    options = ["--runs-dir", str(run.parent), "--name", run.name, *TINY, "--bs", "2", "--pretrained", str(start),
               "--epochs", "3", "--freeze-epochs", "2", "--log", "tensorboard", "--monitor", "iou:background",
               "--class-weights", "median-freq", "--head-prior", "--workers", "2", "--amp", "bf16",
               "--channels-last", "--seed", "5"]
    stopped = interrupt_after_first_epoch(["fit", "--nproc", "2", *data_args(synth_copy), *options], run / METRICS)
    assert stopped.returncode == 130, stopped.stderr[-3000:]
    assert "Traceback" not in stopped.stderr
    assert stopped.stderr.count("Stopped by SIGINT with the checkpoint saved") == 1
    assert stopped.stdout.count("Class weights") == 1  # printed by rank 0 alone
    state = load_state(run / LAST)
    assert (state["epoch"], state["batch"]) in {(1, 3), (2, 0)}  # epoch 2's training done, or epoch 2 done
    best = load_file(run / BEST)
    assert all(torch.equal(best[k], v) for k, v in convs(load_file(start)).items())  # frozen in epochs 1 and 2
    prior, untrained = best["head.bias"], load_file(start)["head.bias"]
    assert prior.max() - prior.min() > 3 > untrained.max() - untrained.min()  # log class shares (--head-prior)
    config = json.loads((run / CONFIG).read_text())
    assert (config["amp"], config["channels_last"], config["data"]["num_workers"]) == ("bf16", True, 2)
    assert config["process_seeds"] == [5, 6]

    resumed = fastseg_cli("fit", "--nproc", "2", "--resume", str(run))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    rows = read_metrics_csv(run / METRICS)
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    last = load_state(run / LAST)["model"]
    assert all(not torch.equal(last[k], v) for k, v in convs(load_file(start)).items())  # epoch 3 trains it
    chosen = read_meta(run / "best.safetensors")
    scores = [r["iou_background"] for r in rows]
    assert (chosen["monitor"], chosen["epoch"]) == ("iou:background", 1 + scores.index(max(scores)))
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    assert [e.step for e in events.Scalars("metrics/miou")] == [1, 2, 3]
    assert [e.value for e in events.Scalars("iou/background")] == pytest.approx(scores)
    assert events.Images("predictions")


def test_a_failing_worker_is_one_sentence_and_its_exit_code(synth_root, tmp_path):
    result = fastseg_cli("fit", "--nproc", "2", *data_args(synth_root), "--runs-dir", str(tmp_path), *TINY,
                         "--monitor", "iou:unicorn", "--pretrained", "none")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("Error: Unknown --monitor 'iou:unicorn'; choose one of: ")
    assert result.stderr.strip().endswith("the reason is printed above.")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args, message", [
    (["--nproc", "0"], "Error: --nproc 0 and --nnodes 1 must be at least 1.\n"),
    (["--nnodes", "2"], "Error: --nnodes 2 needs --rdzv-endpoint HOST:PORT, an address every machine reaches (the "
                        "same on each).\n")])
def test_bad_process_counts_are_refused(synth_root, tmp_path, args, message):
    from fastseg.cli import app
    from tests.conftest import runner
    result = runner.invoke(app, ["fit", *data_args(synth_root), "--runs-dir", str(tmp_path), *args])
    assert (result.exit_code, result.output) == (2, message)


def mixed_size_data(root: Path) -> Path:
    """35 validation images (odd: the shards differ by one) of several padded sizes."""
    return generate(root, SynthConfig(n_train=8, n_val=35, n_sbd_only=2, size=72, seed=5))


def test_two_processes_score_every_image_once(tmp_path):
    """torchrun's fit and fastseg's `evaluate --nproc 2` on uncropped mixed-size images at batch size
    1 (more than 16 batches per process) count the confusion matrix of a single process, exactly."""
    root = mixed_size_data(tmp_path / "data")
    ids = (root / "VOCdevkit" / "VOC2012" / "ImageSets" / "Segmentation" / "val.txt").read_text().split()
    sizes = {padded_size([header_size(root / "VOCdevkit" / "VOC2012" / "JPEGImages" / f"{i}.jpg")]) for i in ids}
    assert len(ids) == 35 and len(sizes) >= 3
    fit = torchrun("--", "fit", *data_args(root), "--runs-dir", str(tmp_path / "runs"), "--name", "ddp", *TINY,
                   "--pretrained", "none", "--epochs", "1", "--bs", "1", "--monitor", "fg_miou")
    assert fit.returncode == 0, fit.stderr[-3000:]
    assert fit.stdout.count("Leakage check") == 1 and "(2 processes)" in fit.stdout
    run = tmp_path / "runs" / "ddp"
    single = shutil.copytree(run, tmp_path / "single")
    both = fastseg_cli("evaluate", str(run), "--nproc", "2", "--bs", "1")
    assert both.returncode == 0, both.stderr[-3000:]
    assert both.stdout.count("voc12-val (35 images)") == 1
    _, alone = evaluate_run(single, bs=1, device="cpu")
    assert torch.equal(load_per_image(run / PER_IMAGE)[2], load_per_image(single / PER_IMAGE)[2])
    scored = json.loads((run / "metrics.json").read_text())
    fitted = read_meta(run / "best.safetensors")["metrics"]
    for key in ("miou", "fg_miou", "pixel_acc", "mean_acc", "fw_iou"):
        assert fitted[key] == scored[key] == alone[key], key
    for name, row in alone["per_class"].items():
        assert fitted[f"iou_{name}"] == pytest.approx(row["iou"], abs=0, nan_ok=True), name


def test_accelerate_launch_passes_every_option(synth_root, tmp_path):
    """The README's accelerate form: fit's options (--monitor, --log) reach fastseg untouched."""
    accelerate = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                  "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    args = ["fit", *data_args(synth_root), "--runs-dir", str(tmp_path), "--name", "acc", *TINY, "--bs", "4",
            "--pretrained", "none", "--epochs", "1", "--monitor", "fg_miou", "--log", "tensorboard"]
    result = subprocess.run([*accelerate, "-m", "fastseg", *args], capture_output=True, text=True, timeout=300,
                            env={**ENV, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "(2 processes)" in result.stdout
    assert read_meta(tmp_path / "acc" / "best.safetensors")["monitor"] == "fg_miou"
    assert list((tmp_path / "acc" / "tensorboard").iterdir())


def metrics_without_times(run: Path) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "seconds"} for row in read_metrics_csv(run / METRICS)]


@pytest.mark.slow
def test_two_machines_give_the_metrics_of_two_processes(synth_root, tmp_path):
    """Two launchers (`--nnodes 2`, one process each) meeting at a c10d rendezvous on 127.0.0.1 train
    exactly what one launcher of two processes does (one thread per process in both, so that their
    float sums agree bit for bit)."""
    env = {**ENV, "OMP_NUM_THREADS": "1"}
    import socket
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    common = ["fit", *data_args(synth_root), *TINY, "--bs", "4", "--pretrained", "none", "--epochs", "2"]
    nodes = [subprocess.Popen([sys.executable, "-m", "fastseg", *common, "--runs-dir", str(tmp_path / "nodes"),
                               "--name", "two", "--nproc", "1", "--nnodes", "2", "--rdzv-endpoint",
                               f"127.0.0.1:{port}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(2)]
    outcomes = [node.communicate(timeout=300) for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], [err[-2000:] for _, err in outcomes]
    one = fastseg_cli(*common, "--runs-dir", str(tmp_path / "one"), "--name", "two", "--nproc", "2", env=env)
    assert one.returncode == 0, one.stderr[-3000:]
    assert metrics_without_times(tmp_path / "nodes" / "two") == metrics_without_times(tmp_path / "one" / "two")
    nodes, one = (load_file(tmp_path / folder / "two" / BEST) for folder in ("nodes", "one"))
    assert nodes.keys() == one.keys() and all(torch.equal(nodes[k], one[k]) for k in one)
