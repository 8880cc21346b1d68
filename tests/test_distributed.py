import json
import os
import subprocess
import sys

import pytest
import torch
from fastai.data.load import DataLoader

from fastseg.data.splits import DataRoots
from fastseg.distributed import GlooSafeDistributedDL, duplicate_mask
from fastseg.evaluation import evaluate_run, shard_batches
from fastseg.models import create_model
from fastseg.models.io import model_metadata, save_model
from fastseg.runs import read_metrics_csv


def torchrun(*args, timeout=600):
    """`torchrun --standalone --nproc_per_node 2 -m fastseg ARGS` on the CPU (gloo)."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd = [*launcher, "-m", "fastseg", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def data_args(root):
    return ["--voc", str(root / "VOCdevkit"), "--sbd", str(root / "benchmark_RELEASE")]


def test_duplicate_mask_marks_only_the_padding_of_the_last_shard():
    dl = GlooSafeDistributedDL(DataLoader(list(range(5)), bs=2), rank=1, world_size=2)
    dl.n, dl.n_padded = 5, 6          # 5 samples over 2 ranks: rank 1 holds 3, 4 and a repeat
    dl.i = 2
    assert duplicate_mask(dl, 2).tolist() == [False, False]
    dl.i = 3
    assert duplicate_mask(dl, 1).tolist() == [True]
    dl.rank, dl.i = 0, 2
    assert duplicate_mask(dl, 2).tolist() == [False, False]


def test_shard_batches_keeps_whole_batches():
    assert shard_batches(7, 2, 0, 2) == [0, 1, 4, 5]
    assert shard_batches(7, 2, 1, 2) == [2, 3, 6]
    assert sorted(shard_batches(7, 3, 0, 2) + shard_batches(7, 3, 1, 2)) == list(range(7))


def test_two_process_cpu_fit(synth_root, tmp_path):
    result = torchrun("fit", *data_args(synth_root), "--runs-dir", str(tmp_path), "--name", "ddp",
                      "--width", "0.0625", "--pretrained", "none", "--epochs", "2", "--crop", "48", "--bs", "4",
                      "--opt", "adam", "--lr", "1e-2", "--valid", "voc12-val")
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stdout.count("Leakage check") == 1  # only rank 0 prints
    assert "(2 processes)" in result.stdout
    rows = read_metrics_csv(tmp_path / "ddp" / "metrics.csv")
    assert [r["epoch"] for r in rows] == [1, 2] and 0 <= rows[-1]["miou"] <= 1
    for name in ("best.safetensors", "last.safetensors", "config.json", "curves.png"):
        assert (tmp_path / "ddp" / name).is_file(), name


def test_two_process_evaluate_equals_single_process(synth_root, tmp_path):
    torch.manual_seed(0)
    weights = save_model(create_model("skip", width=0.0625), tmp_path / "w.safetensors",
                         model_metadata("skip", 21, 0.0625))
    roots = DataRoots(synth_root / "VOCdevkit", synth_root / "benchmark_RELEASE")
    _, single = evaluate_run(weights, split="voc12-val", roots=roots, bs=5, device="cpu")
    result = torchrun("evaluate", str(weights), "--split", "voc12-val", "--bs", "5", *data_args(synth_root))
    assert result.returncode == 0, result.stderr[-4000:]
    both = json.loads((tmp_path / "metrics.json").read_text())
    assert both["images"] == single["images"] == 12
    for key in ("miou", "fg_miou", "pixel_acc", "mean_acc"):
        assert both[key] == pytest.approx(single[key], abs=1e-6), key
    assert both["miou_ci95"] == pytest.approx(single["miou_ci95"], abs=1e-6)
