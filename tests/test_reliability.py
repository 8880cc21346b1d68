"""Nothing lost, nothing silently wrong: exit codes, one-sentence refusals, resume robustness (issue 13)."""

import errno
import json
import os
import shutil
import signal
import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

import fastseg.io.serialize as serialize
from fastseg.classes import VOC
from fastseg.cli import app
from fastseg.errors import EXIT_INTERRUPTED, EXIT_IO, FastsegError
from fastseg.io.runs import LOCK, read_metrics_csv, run_lock
from fastseg.io.serialize import load_state, save_state
from fastseg.models import create_model
from fastseg.models.weights import model_metadata, save_model
from tests.conftest import data_args

runner = CliRunner()


def fit_args(root, runs, *extra):
    return ["fit", *data_args(root), "--runs-dir", str(runs), "--width", "0.0625", "--pretrained", "none",
            "--epochs", "1", "--crop", "48", "--bs", "4", "--train", "voc12-train", "--valid", "voc12-val",
            "--device", "cpu", *extra]


def one_sentence(result) -> str:
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    return " ".join(lines[-1].split()) if lines else ""


@pytest.fixture(scope="module")
def run(synth_root, tmp_path_factory):
    """A finished one-epoch run (copy it before changing it)."""
    runs = tmp_path_factory.mktemp("runs")
    result = runner.invoke(app, fit_args(synth_root, runs, "--name", "base"))
    assert result.exit_code == 0, result.output
    return runs / "base"


@pytest.mark.parametrize("args,message", [
    (["--lr", "-1"], "Error: --lr -1.0 must be positive (or 'auto')."),
    (["--wd", "-1"], "Error: --wd -1.0 must be 0 or positive."),
    (["--workers", "-1"], "Error: --workers -1 must be 0 (load in the main process) or more."),
    (["--device", "gpu"], "Error: Unknown --device gpu; use cpu, cuda or cuda:N."),
    (["--device", "cpu:1"], "Error: Unknown --device cpu:1; use cpu, cuda or cuda:N."),
])
def test_bad_fit_options_are_one_sentence_and_leave_nothing(synth_root, tmp_path, args, message):
    result = runner.invoke(app, fit_args(synth_root, tmp_path / "runs", *args))
    assert result.exit_code == 2
    assert one_sentence(result) == message
    assert not (tmp_path / "runs").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu(synth_root, tmp_path):
    result = runner.invoke(app, fit_args(synth_root, tmp_path, "--device", "cuda"))
    assert result.exit_code == 2
    assert one_sentence(result) == ("Error: --device cuda is not available (this machine has no CUDA GPU); "
                                    "use --device cpu.")


def test_find_lr_needs_enough_points(synth_root, tmp_path):
    args = fit_args(synth_root, tmp_path / "runs", "--num-it", "0")
    args = ["find-lr"] + [a for a in args[1:] if a not in ("--epochs", "1")]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert one_sentence(result) == "Error: --num-it 0 is too few; lr_find needs at least 8 learning rates."
    assert not (tmp_path / "runs").exists()


def test_lr_auto_with_a_null_valley_is_one_sentence(synth_root, tmp_path):
    (tmp_path / "lr").mkdir()
    (tmp_path / "lr" / "lr_find.json").write_text(json.dumps({"valley": None}))
    result = runner.invoke(app, fit_args(synth_root, tmp_path, "--lr", "auto", "--name", "lr"))
    assert result.exit_code == 2
    assert one_sentence(result).startswith(f"Error: --lr auto: {tmp_path / 'lr' / 'lr_find.json'} has no valley "
                                           "suggestion (too few points);")


@pytest.fixture
def weights(tmp_path):
    torch.manual_seed(0)
    return save_model(create_model("skip", width=0.0625), tmp_path / "w.safetensors",
                      model_metadata("skip", VOC, 0.0625))


@pytest.mark.parametrize("args,message", [
    (["--bs", "-3"], "Error: --bs -3 must be at least 1."),
    (["--tta-scales", "0.01"], "Error: --tta-scales 0.01 would shrink the smallest image (64 px once padded) below "
                               "32 pixels; use scales of at least 0.50."),
])
def test_bad_evaluate_options(synth_root, weights, args, message):
    result = runner.invoke(app, ["evaluate", str(weights), "--split", "voc12-val", *data_args(synth_root), *args])
    assert result.exit_code == 2
    assert one_sentence(result) == message


def test_download_root_that_is_a_file(tmp_path):
    (tmp_path / "f").write_text("")
    result = runner.invoke(app, ["download", "sbd", "--root", str(tmp_path / "f")])
    assert result.exit_code == 2
    assert one_sentence(result) == f"Error: --root {tmp_path / 'f'} is a file, not a folder; pass a folder to " \
                                   "download into."


def test_fit_on_a_truncated_jpeg_refuses_before_batch_one(synth_copy, tmp_path):
    voc = synth_copy / "VOCdevkit" / "VOC2012"
    image = voc / "JPEGImages" / f"{(voc / 'ImageSets/Segmentation/val.txt').read_text().split()[0]}.jpg"
    image.write_bytes(image.read_bytes()[: image.stat().st_size * 2 // 5])
    result = runner.invoke(app, fit_args(synth_copy, tmp_path / "runs"))
    assert result.exit_code == 2
    assert one_sentence(result) == (f"Error: {image}: image is truncated; fix or remove it, or pass --skip-bad to "
                                    "leave bad samples out.")
    assert not (tmp_path / "runs").exists()


def test_a_missing_pretrained_file_leaves_no_run_folder(synth_root, tmp_path):
    args = [a if a != "none" else str(tmp_path / "nope.pth") for a in fit_args(synth_root, tmp_path / "runs")]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert not (tmp_path / "runs").exists()


def test_disk_full_is_one_sentence_with_the_resume_command(synth_root, tmp_path, monkeypatch):
    def full(tensors, metadata=None):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(serialize, "save", full)  # every tensor file: the epoch's best model is written first
    result = runner.invoke(app, fit_args(synth_root, tmp_path, "--name", "full"))
    assert result.exit_code == EXIT_IO == 74
    run = tmp_path / "full"
    assert one_sentence(result) == (f"Error: No space left on device while writing {run / 'best.safetensors'}; "
                                    f"free space and resume with `fastseg fit --resume {run}`.")


def test_interrupted_fit_exits_130_and_prints_the_resume_command(synth_root, tmp_path, monkeypatch):
    import fastseg.train.fit as training
    monkeypatch.setattr(training, "SeedEpochs", _seed_and_stop)  # a callback every fit has, sending SIGINT
    result = runner.invoke(app, fit_args(synth_root, tmp_path, "--name", "cut", "--epochs", "3"))
    assert result.exit_code == EXIT_INTERRUPTED == 130
    assert one_sentence(result) == (f"Stopped by SIGINT with the checkpoint saved; continue with "
                                    f"`fastseg fit --resume {tmp_path / 'cut'}`.")
    assert load_state(tmp_path / "cut" / "last.safetensors")["batch"] == 2


def _seed_and_stop(seed, rank=0):
    from fastseg.train.callbacks import SeedEpochs

    class SeedAndStop(SeedEpochs):
        def after_loss(self):
            if self.training and self.epoch == 1 and self.iter == 1:
                os.kill(os.getpid(), signal.SIGINT)
    return SeedAndStop(seed, rank)


def test_damaged_checkpoint_is_one_sentence(run, tmp_path):
    broken = shutil.copytree(run, tmp_path / "broken")
    (broken / "last.safetensors").write_bytes((run / "last.safetensors").read_bytes()[:100])
    result = runner.invoke(app, ["fit", "--resume", str(broken)])
    assert result.exit_code == 2
    assert one_sentence(result) == (f"Error: Checkpoint {broken / 'last.safetensors'} could not be read "
                                    "(SafetensorError); it may be incomplete, so resume from a run whose "
                                    "checkpoint files are intact.")


def test_a_loaded_checkpoint_is_not_memory_mapped(tmp_path):
    path = tmp_path / "state.safetensors"
    save_state({"w": torch.ones(1000)}, path)
    state = load_state(path)
    maps = open(f"/proc/{os.getpid()}/maps").read() if os.path.exists("/proc/self/maps") else ""
    assert str(path) not in maps and state["w"].sum() == 1000


def test_safetensors_have_normal_permissions(tmp_path, weights):
    umask = os.umask(0)
    os.umask(umask)
    assert weights.stat().st_mode & 0o777 == 0o666 & ~umask
    save_state({"w": torch.ones(2)}, tmp_path / "s.safetensors")
    assert (tmp_path / "s.safetensors").stat().st_mode & 0o777 == 0o666 & ~umask


def test_a_live_lock_refuses_and_a_dead_one_is_taken_over(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / LOCK).write_text(f"{sleeper.pid}\n")
        with pytest.raises(FastsegError) as err, run_lock(tmp_path):
            pass
        assert str(err.value) == (f"Run folder {tmp_path} is in use by process {sleeper.pid} (see "
                                  f"{tmp_path / LOCK}); wait for it to finish or stop it before resuming.")
    finally:
        sleeper.kill()
        sleeper.wait()
    with run_lock(tmp_path) as lock:  # the PID is gone now: its lock is stale
        assert lock.read_text() == f"{os.getpid()}\n"
    assert not (tmp_path / LOCK).exists()


def test_resume_of_a_running_fit_is_refused(run, tmp_path):
    copy = shutil.copytree(run, tmp_path / "busy")
    (copy / LOCK).write_text(f"{os.getppid()}\n")
    result = runner.invoke(app, ["fit", "--resume", str(copy)])
    assert result.exit_code == 2
    assert one_sentence(result).startswith(f"Error: Run folder {copy} is in use by process {os.getppid()}")


@pytest.mark.slow
def test_resume_relocates_relative_data_and_extends_epochs(synth_root, tmp_path, monkeypatch):
    work = tmp_path / "work"
    shutil.copytree(synth_root, work / "data")
    monkeypatch.chdir(work)
    args = ["fit", "--voc", "data/VOCdevkit", "--sbd", "data/benchmark_RELEASE", "--runs-dir", "runs",
            "--width", "0.0625", "--pretrained", "none", "--epochs", "1", "--crop", "48", "--bs", "4",
            "--train", "voc12-train", "--valid", "voc12-val", "--name", "rel"]
    assert runner.invoke(app, args).exit_code == 0
    monkeypatch.chdir(tmp_path)  # elsewhere: data/... is resolved beside the runs folder
    result = runner.invoke(app, ["fit", "--resume", "work/runs/rel", "--epochs", "2"])
    assert result.exit_code == 0, result.output
    assert "Resuming with --epochs 2 (the run was started with 1)" in " ".join(result.output.split())
    csv_text = (work / "runs/rel/metrics.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in csv_text[1:]] == ["1", "2"]  # not 1.0 after the resume
    assert [r["epoch"] for r in read_metrics_csv(work / "runs/rel/metrics.csv")] == [1, 2]
    assert json.loads((work / "runs/rel/config.json").read_text())["data"]["voc"] == str(work / "data/VOCdevkit")
    shutil.move(work / "data", tmp_path / "moved")
    result = runner.invoke(app, ["fit", "--resume", "work/runs/rel", "--epochs", "3"])
    assert result.exit_code == 2
    assert one_sentence(result) == (f"Error: The run's --voc folder {work / 'data/VOCdevkit'} does not exist; pass "
                                    "--voc DIR with --resume to say where the data is now.")
    result = runner.invoke(app, ["fit", "--resume", "work/runs/rel", "--epochs", "3", "--voc", "moved/VOCdevkit",
                                 "--sbd", "moved/benchmark_RELEASE"])
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())
    assert f"Resuming with --voc moved/VOCdevkit (the run was started with {work / 'data/VOCdevkit'})." in output
    assert json.loads((work / "runs/rel/config.json").read_text())["data"]["voc"] == "moved/VOCdevkit"


def test_the_cli_imports_no_torch_nor_fastai_until_a_command_runs():
    # what keeps `fastseg --help` fast (BENCHMARKS.md has the timing): torch alone takes seconds to import
    code = "import sys, fastseg.cli; print(sorted(m for m in ('torch', 'fastai', 'numpy') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "[]", out.stderr[-2000:]


def test_cli_prints_no_torch_jit_warnings():
    out = subprocess.run([sys.executable, "-c", "import fastseg.cli"], capture_output=True, text=True,
                         env={**os.environ, "PYTHONWARNINGS": "default"})
    assert "torch.jit" not in out.stderr, out.stderr[-2000:]


def test_a_relative_data_path_that_resolves_nowhere_names_it(run, tmp_path, monkeypatch):
    copy = shutil.copytree(run, tmp_path / "runs" / "rel")
    config = json.loads((copy / "config.json").read_text())
    config["data"]["voc"] = "gone/VOCdevkit"
    (copy / "config.json").write_text(json.dumps(config))
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["fit", "--resume", str(copy)])
    assert result.exit_code == 2
    assert one_sentence(result) == (f"Error: The run's --voc folder gone/VOCdevkit does not exist here or in "
                                    f"{tmp_path}; pass --voc DIR with --resume to say where the data is now.")


def test_evaluate_refuses_a_mask_value_it_would_have_counted_as_void(synth_copy, weights):
    import numpy as np
    from PIL import Image

    from fastseg.data.masks import write_palette_png
    voc = synth_copy / "VOCdevkit" / "VOC2012"
    mask_path = voc / "SegmentationClass" / f"{(voc / 'ImageSets/Segmentation/val.txt').read_text().split()[0]}.png"
    mask = np.array(Image.open(mask_path))
    mask[0, 0] = 77
    write_palette_png(mask, mask_path)
    result = runner.invoke(app, ["evaluate", str(weights), "--split", "voc12-val", *data_args(synth_copy)])
    assert result.exit_code == 2
    assert one_sentence(result) == (f"Error: {mask_path}: mask has values [77] outside 0..20 and 255 (the dataset "
                                    "has 21 classes); fix or remove it, or pass --skip-bad to leave bad samples out.")
    result = runner.invoke(app, ["evaluate", str(weights), "--split", "voc12-val", *data_args(synth_copy),
                                 "--skip-bad"])
    assert result.exit_code == 0, result.output
    assert json.loads((weights.parent / "metrics.json").read_text())["images"] == 11


def test_metrics_csv_keeps_integer_epochs_through_a_resume(tmp_path):
    from fastseg.io.runs import write_metrics_csv
    path = tmp_path / "metrics.csv"
    write_metrics_csv(path, [{"epoch": 1, "miou": 0.5}])
    rows = read_metrics_csv(path)  # what a resumed run starts from
    write_metrics_csv(path, rows + [{"epoch": 2, "miou": 0.6}])
    assert path.read_text().splitlines()[1:] == ["1,0.5", "2,0.6"]
