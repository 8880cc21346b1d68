import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from fastai.data.load import DataLoader

from fastseg.classes import VOC
from fastseg.data.splits import DataRoots
from fastseg.devices.distributed import GlooSafeDistributedDL, duplicate_mask
from fastseg.evaluate.scoring import evaluate_run, shard_batches
from fastseg.io.runs import read_metrics_csv
from fastseg.models import create_model
from fastseg.models.weights import model_metadata, save_model
from tests.conftest import data_args


def torchrun(*args, timeout=600):
    """`torchrun --standalone --nproc_per_node 2 -m fastseg ARGS` on the CPU (gloo)."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd = [*launcher, "-m", "fastseg", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


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


def drop_one_val_id(root):
    """Makes voc12-val odd (11 images), so 2 ranks need one padded duplicate; returns its size."""
    val = root / "VOCdevkit" / "VOC2012" / "ImageSets" / "Segmentation" / "val.txt"
    ids = val.read_text().split()[:-1]
    val.write_text("\n".join(ids) + "\n")
    return len(ids)


def crop_val_images(root, size=40):
    """Crops every voc12-val image and mask to size×size (top left): every validation batch is then
    padded to the same size, whichever images it holds, so sharding cannot change a prediction."""
    from PIL import Image
    voc = root / "VOCdevkit" / "VOC2012"
    for i in (voc / "ImageSets" / "Segmentation" / "val.txt").read_text().split():
        for path in (voc / "JPEGImages" / f"{i}.jpg", voc / "SegmentationClass" / f"{i}.png"):
            with Image.open(path) as img:
                cropped = img.crop((0, 0, size, size))  # a palette PNG stays a palette PNG
            cropped.save(path, **({"quality": 100} if path.suffix == ".jpg" else {}))


def test_two_process_cpu_fit(synth_copy, tmp_path):
    assert drop_one_val_id(synth_copy) == 11  # 2 ranks × 6: rank 1 repeats one image, which must not count
    crop_val_images(synth_copy)
    result = torchrun("fit", *data_args(synth_copy), "--runs-dir", str(tmp_path), "--name", "ddp",
                      "--width", "0.0625", "--pretrained", "none", "--epochs", "2", "--crop", "48", "--bs", "4",
                      "--opt", "adam", "--lr", "1e-2", "--valid", "voc12-val", "--class-weights", "median-freq")
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stdout.count("Leakage check") == 1  # only rank 0 prints
    assert result.stdout.count("Class weights") == 1
    assert "(2 processes)" in result.stdout
    run = tmp_path / "ddp"
    rows = read_metrics_csv(run / "metrics.csv")
    assert [r["epoch"] for r in rows] == [1, 2]
    for name in ("best.safetensors", "last.safetensors", "config.json", "curves.png"):
        assert (run / name).is_file(), name
    best = json.loads((run / "best.json").read_text())["metrics"]
    _, single = evaluate_run(run, device="cpu")  # one process, every image once, same weights and batch size
    assert single["images"] == 11
    for key in ("miou", "pixel_acc", "mean_acc"):
        assert best[key] == pytest.approx(single[key], abs=1e-6), key


def test_two_process_evaluate_equals_single_process(synth_copy, tmp_path):
    assert drop_one_val_id(synth_copy) == 11  # batches of 5: rank 0 scores 5 + 1 images, rank 1 scores 5
    torch.manual_seed(0)
    single_dir, ddp_dir = tmp_path / "single", tmp_path / "ddp"
    single_dir.mkdir()
    weights = save_model(create_model("skip", width=0.0625), single_dir / "w.safetensors",
                         model_metadata("skip", VOC, 0.0625))
    shutil.copytree(single_dir, ddp_dir)
    roots = DataRoots(synth_copy / "VOCdevkit", synth_copy / "benchmark_RELEASE")
    _, single = evaluate_run(weights, split="voc12-val", roots=roots, bs=5, device="cpu")
    result = torchrun("evaluate", str(ddp_dir / "w.safetensors"), "--split", "voc12-val", "--bs", "5",
                      *data_args(synth_copy))
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stdout.count("voc12-val (11 images)") == 1  # the per-class table, from rank 0 only
    both = json.loads((ddp_dir / "metrics.json").read_text())
    assert both["images"] == single["images"] == 11
    for key in ("miou", "fg_miou", "pixel_acc", "mean_acc", "boundary_miou", "interior_miou"):
        assert both[key] == pytest.approx(single[key], abs=1e-6), key
    for name, row in single["per_class"].items():
        assert both["per_class"][name] == pytest.approx(row, abs=1e-9, nan_ok=True), name
    assert both["miou_ci95"] == pytest.approx(single["miou_ci95"], abs=1e-6)
