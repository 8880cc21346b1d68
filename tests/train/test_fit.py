import json
import math
import os
import signal

import numpy as np
import pytest
import torch
from fastai.callback.core import Callback
from typer.testing import CliRunner

from fastseg.cli import app
from fastseg.data.stats import median_frequency_weights
from fastseg.errors import FastsegError, Interrupted
from fastseg.io.runs import describe_run, read_metrics_csv
from fastseg.io.serialize import load_state, read_meta
from fastseg.train.fit import fit, resume_fit
from fastseg.train.lr_find import find_lr
from tests.conftest import cli_fit, tiny_config

runner = CliRunner()


class SendSignal(Callback):
    """Sends SIGINT to this process during a chosen training batch."""

    def __init__(self, epoch, batch):
        self.at = (epoch, batch)

    def after_loss(self):
        if self.training and (self.epoch, self.iter) == self.at:
            os.kill(os.getpid(), signal.SIGINT)


def test_fit_writes_a_complete_run_folder(synth_root, tmp_path):
    run, rows = fit(tiny_config(synth_root, tmp_path, "r", epochs=2))
    for name in ("config.json", "metrics.csv", "curves.png", "best.safetensors", "last.safetensors"):
        assert (run / name).is_file(), name
    assert not (run / "best.json").exists() and not (run / "last.json").exists()  # metadata in the headers
    csv_rows = read_metrics_csv(run / "metrics.csv")
    assert [r["epoch"] for r in csv_rows] == [1, 2]
    columns = {"train_loss", "valid_loss", "miou", "fg_miou", "pixel_acc", "mean_acc", "fw_iou", "iou_person"}
    assert columns <= set(csv_rows[0])
    best = read_meta(run / "best.safetensors")
    assert best["arch"] == "segnet" and best["metrics"]["miou"] == max(r["miou"] for r in csv_rows)
    config = json.loads((run / "config.json").read_text())
    assert config["lr"] == 1e-2 and config["data"]["crop"] == 48 and config["name"] == "r"
    state = load_state(run / "last.safetensors")
    assert state["epoch"] == 2 and state["batch"] == 0


@pytest.mark.parametrize("every_s, drawn", [(0.0, [1, 2, 3]), (math.inf, [1, 3])])
def test_curves_are_drawn_first_then_at_most_every_few_seconds_and_at_the_end(synth_root, tmp_path, monkeypatch,
                                                                               every_s, drawn):
    import fastseg.train.recorder as recorder
    epochs_drawn = []
    monkeypatch.setattr(recorder, "CURVES_EVERY_S", every_s)
    monkeypatch.setattr(recorder, "plot_curves", lambda rows, path: epochs_drawn.append(len(rows)))
    fit(tiny_config(synth_root, tmp_path, "c"))
    assert epochs_drawn == drawn


def test_interrupted_and_resumed_run_equals_uninterrupted(synth_root, tmp_path):
    _, full = fit(tiny_config(synth_root, tmp_path, "full"))
    with pytest.raises(Interrupted, match=r"^Stopped by SIGINT with the checkpoint saved; continue with "
                                          r"`fastseg fit --resume .*cut`\.$") as stopped:
        fit(tiny_config(synth_root, tmp_path, "cut"), extra_cbs=[SendSignal(epoch=1, batch=2)])
    run, partial = tmp_path / "cut", stopped.value.rows
    assert len(partial) == 1  # stopped inside epoch 2
    state = load_state(run / "last.safetensors")
    assert (state["epoch"], state["batch"]) == (1, 3)
    _, resumed = resume_fit(run)
    assert len(resumed) == len(full) == 3
    for a, b in zip(full, resumed, strict=True):
        for key in ("train_loss", "valid_loss", "miou", "pixel_acc", "lr"):
            assert b[key] == pytest.approx(a[key], abs=1e-5), (a["epoch"], key)


class Crash(Exception):
    pass


class CrashAfterEpoch(Callback):
    order = 100  # after RunRecorder has written the epoch's checkpoint

    def after_epoch(self):
        if self.epoch == 0:
            raise Crash("simulated crash after the epoch checkpoint")


def to_legacy(path):
    """Rewrite a .safetensors file as fastseg wrote them before the one-file format: the tensors with no
    metadata in the header, the metadata in a <name>.json sidecar."""
    from safetensors.torch import load, save
    meta = read_meta(path)
    path.write_bytes(save(load(path.read_bytes())))
    path.with_suffix(".json").write_text(json.dumps(meta))


@pytest.mark.parametrize("legacy", [False, True])
def test_crash_at_an_epoch_boundary_then_resume_equals_uninterrupted(synth_root, tmp_path, legacy):
    _, full = fit(tiny_config(synth_root, tmp_path, "full"))
    with pytest.raises(Crash):
        fit(tiny_config(synth_root, tmp_path, "crash"), extra_cbs=[CrashAfterEpoch()])
    run = tmp_path / "crash"
    if legacy:  # a run of an older fastseg: best.json and last.json beside the tensors
        for name in ("best.safetensors", "last.safetensors"):
            to_legacy(run / name)
        assert describe_run(run)["state"] == "interrupted" and describe_run(run)["best_epoch"] == 1
    _, resumed = resume_fit(run)
    for a, b in zip(full, resumed, strict=True):
        for key in ("train_loss", "valid_loss", "miou", "lr"):
            assert b[key] == pytest.approx(a[key], abs=1e-5), (a["epoch"], key)
    assert not (run / "best.json").exists() and not (run / "last.json").exists()  # rewritten as one file each


def test_lr_find_then_fit_with_lr_auto(synth_root, tmp_path):
    run, found = find_lr(tiny_config(synth_root, tmp_path, "lr"), num_it=30)
    assert (run / "lr_find.png").is_file()
    saved = json.loads((run / "lr_find.json").read_text())
    assert set(saved) == {"valley", "slide", "steep", "minimum", "arch", "width"} and saved["valley"] > 0
    assert (saved["arch"], saved["width"]) == ("segnet", 0.0625)
    run, _ = fit(tiny_config(synth_root, tmp_path, "auto", epochs=1, lr="auto"))  # another --name
    assert json.loads((run / "config.json").read_text())["lr"] == pytest.approx(saved["valley"])


class PoisonBatch(Callback):
    order = 1

    def after_pred(self):
        if self.training and self.iter == 2:
            self.learn.pred = self.pred * float("nan")


def test_nan_loss_names_epoch_and_batch(synth_root, tmp_path):
    from fastseg.io.runs import describe_run
    with pytest.raises(FastsegError, match=r"loss became NaN at epoch 1, batch 3; lower --lr \(0\.01 now\) or set "
                       r"--clip, and start a new run\.$") as err:
        fit(tiny_config(synth_root, tmp_path, "nan", epochs=1), extra_cbs=[PoisonBatch()])
    assert json.loads((tmp_path / "nan" / "failed.json").read_text()) == {"error": str(err.value)}
    assert describe_run(tmp_path / "nan")["state"] == "failed"  # what `fastseg runs` shows


def test_median_frequency_weights():
    pixels = np.array([600, 100, 50, 0])
    image_pixels = np.array([1000, 400, 100, 0])
    weights = median_frequency_weights(pixels, image_pixels)
    freq = np.array([0.6, 0.25, 0.5])
    assert weights[:3] == pytest.approx(np.median(freq) / freq)
    assert weights[3] == 0


@pytest.mark.parametrize("args,message", [
    (["--arch", "unet"], "Invalid value for '--arch'"),
    (["--crop", "16"], "Error: --crop 16 is too small; use at least 32 pixels."),
    (["--bs", "500"], "Error: --bs 500 is larger than the training split train-aug (22 images)"),
    (["--lr", "fast"], "Error: --lr fast is not a number"),
])
def test_bad_fit_options(synth_root, tmp_path, args, message):
    result = cli_fit(synth_root, tmp_path, *args)
    assert result.exit_code == 2
    assert not any(tmp_path.iterdir())  # nothing written for a run that could not start
    assert message in " ".join(result.output.split())
    assert "Traceback" not in result.output


def test_missing_dataset_folder(tmp_path):
    result = runner.invoke(app, ["fit", "--voc", str(tmp_path / "VOC"), "--runs-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert f"Error: VOC2012 folder {tmp_path / 'VOC'} was not found" in result.output


def test_unwritable_run_folder(synth_root, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = cli_fit(synth_root, blocker)
    assert result.exit_code == 2
    output = " ".join(result.output.split())
    assert f"Error: Run folder {blocker}/" in output and "cannot be written (Not a directory)" in output


def test_existing_run_is_never_overwritten(synth_root, tmp_path):
    assert cli_fit(synth_root, tmp_path, "--name", "keep").exit_code == 0
    before = (tmp_path / "keep" / "best.safetensors").read_bytes()
    result = cli_fit(synth_root, tmp_path, "--name", "keep")
    assert result.exit_code == 2
    assert f"Run folder {tmp_path / 'keep'} already holds a run; pass --resume" in " ".join(result.output.split())
    assert (tmp_path / "keep" / "best.safetensors").read_bytes() == before


def test_resume_needs_a_checkpoint(tmp_path):
    with pytest.raises(FastsegError, match="has no checkpoint"):
        resume_fit(tmp_path)


def test_learners_split_encoder_and_decoder(synth_root, tmp_path):
    from fastseg.data.dataloaders import build_dataloaders
    from fastseg.train.learner import seg_learner
    dls = build_dataloaders(tiny_config(synth_root, tmp_path, "x").data, device="cpu", log=lambda _: None)
    learn = seg_learner(dls, "skip", width=0.0625)
    groups = learn.splitter(learn.model)
    assert len(groups) == 2 and len(groups[0]) == len(list(learn.model.encoder.parameters()))
    learn = seg_learner(dls, "colour-control")  # no decoder: its head is the second group
    assert [len(g) for g in learn.splitter(learn.model)] == [len(list(learn.model.encoder.parameters())), 2]
    learn = seg_learner(dls, "segnet", width=0.0625)
    learn.create_opt()
    learn.freeze()
    conv = learn.model.encoder.features[0]
    assert not conv.weight.requires_grad and learn.model.head.weight.requires_grad
    learn.unfreeze()
    assert conv.weight.requires_grad


def test_an_unknown_optimizer_is_refused():
    from fastseg.train.learner import make_opt_func
    with pytest.raises(FastsegError) as err:
        make_opt_func("rmsprop")
    assert str(err.value) == "Unknown --opt 'rmsprop'; choose one of: sgd, adam."


def test_l1_penalty_adds_to_the_backpropagated_loss_only():
    from types import SimpleNamespace

    from fastseg.train.callbacks import L1Penalty
    model = torch.nn.Linear(2, 1)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, -2.0]]))
        model.bias.fill_(0.5)
    learn = SimpleNamespace(model=model, loss=torch.tensor(1.0), loss_grad=torch.tensor(1.0), training=True)
    cb = L1Penalty(0.1)
    cb.learn = learn
    cb.after_loss()
    assert float(learn.loss_grad) == pytest.approx(1.0 + 0.1 * 3.5)
    assert float(learn.loss) == 1.0  # the loss the Recorder logs stays the data loss


class LoggedLosses(Callback):
    order = 6  # after L1Penalty (5), as the Recorder (50) reads them

    def __init__(self):
        self.logged, self.backpropagated = [], []

    def after_loss(self):
        if self.training:
            self.logged.append(float(self.learn.loss.detach()))
            self.backpropagated.append(float(self.learn.loss_grad.detach()))


def test_l1_penalty_leaves_the_logged_loss_alone_in_a_fit(synth_root, tmp_path):
    seen = LoggedLosses()
    fit(tiny_config(synth_root, tmp_path, "l1", epochs=1, l1=1e-3), extra_cbs=[seen])
    assert all(b > a + 1e-3 for a, b in zip(seen.logged, seen.backpropagated, strict=True))
