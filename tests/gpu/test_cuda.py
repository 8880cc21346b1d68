"""fastseg on CUDA, as a user drives it: fit in bf16 + channels_last (and compiled), resume, evaluate
with flip TTA, tiled predict, ONNX export with parity against CUDA PyTorch, a one-process NCCL group,
deterministic resume, and doctor's agreement check on a briefly trained model."""

import json
import os
import signal
import socket

import numpy as np
import pytest
import torch
from fastai.callback.core import Callback
from PIL import Image
from safetensors.torch import load_file
from typer.testing import CliRunner

from fastseg.cli import app
from fastseg.config import FitConfig
from fastseg.errors import Interrupted
from fastseg.io.runs import read_metrics_csv
from fastseg.io.serialize import load_state
from fastseg.train.fit import fit
from tests.conftest import data_args

runner = CliRunner()
WIDTH = "0.25"


def cli(*args):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def cuda_fit(root, runs, name, *extra, epochs=2):
    """`fastseg fit` on the GPU: SegNet at width 0.25 from scratch on 64-px crops of the synthetic tree."""
    return cli("fit", *data_args(root), "--runs-dir", runs, "--name", name, "--width", WIDTH, "--pretrained", "none",
               "--epochs", epochs, "--crop", 64, "--bs", 8, "--opt", "adam", "--lr", "1e-3", "--device", "cuda",
               *extra)


def test_fit_bf16_channels_last_resume_evaluate_flip(synth_root, tmp_path):
    cuda_fit(synth_root, tmp_path, "r", "--amp", "bf16", "--channels-last", "--workers", 2)
    run = tmp_path / "r"
    config = json.loads((run / "config.json").read_text())
    assert config["amp"] == "bf16" and config["channels_last"] is True and config["data"]["num_workers"] == 2
    rows = read_metrics_csv(run / "metrics.csv")
    assert [r["epoch"] for r in rows] == [1, 2] and all(np.isfinite(r["valid_loss"]) for r in rows)
    cli("fit", "--resume", run, "--epochs", 3)
    assert [r["epoch"] for r in read_metrics_csv(run / "metrics.csv")] == [1, 2, 3]
    cli("evaluate", run, "--tta", "flip", "--device", "cuda")
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0 <= metrics["miou"] <= 1 and metrics["tta"]["flip"] is True


def test_fit_compiled(synth_root, tmp_path):
    cuda_fit(synth_root, tmp_path, "c", "--compile", "--amp", "bf16", epochs=1)
    config = json.loads((tmp_path / "c" / "config.json").read_text())
    assert config["compile"] is True
    weights = load_file(tmp_path / "c" / "best.safetensors")
    assert not any(k.startswith("_orig_mod") for k in weights)  # saved as the plain model
    assert np.isfinite(read_metrics_csv(tmp_path / "c" / "metrics.csv")[0]["valid_loss"])


def test_tiled_predict_and_onnx_parity(synth_root, tmp_path):
    cuda_fit(synth_root, tmp_path, "p", epochs=1)
    photo = tmp_path / "photos" / "wide.png"
    photo.parent.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (96, 300, 3), dtype=np.uint8)).save(photo)
    cli("predict", photo.parent, "--weights", tmp_path / "p", "--out", tmp_path / "masks", "--tile", 128,
        "--overlap", 32, "--device", "cuda")
    with Image.open(tmp_path / "masks" / "wide.png") as mask:
        assert mask.size == (300, 96)
    cli("export", tmp_path / "p", "--format", "folder", "--out", tmp_path / "export", "--onnx")
    parity = json.loads((tmp_path / "export" / "parity.json").read_text())
    assert parity["torch_device"].startswith("cuda")
    assert parity["pixel_agreement"] >= 0.999 and abs(parity["miou_difference"]) <= 0.01


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def nccl_group():
    """A one-process NCCL group: every collective fastseg makes then really runs through NCCL, which
    refuses CPU tensors."""
    import torch.distributed as dist
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
    torch.cuda.set_device(0)
    dist.init_process_group("nccl", rank=0, world_size=1, device_id=torch.device("cuda", 0))
    yield
    dist.destroy_process_group()


def test_fit_and_evaluate_inside_an_nccl_group(synth_root, tmp_path, nccl_group):
    cuda_fit(synth_root, tmp_path, "n", epochs=1)
    cli("evaluate", tmp_path / "n", "--device", "cuda", "--tta", "flip")
    assert (tmp_path / "n" / "metrics.json").is_file()


class StopAfterFirstEpoch(Callback):
    """Ctrl-C at the first batch of epoch 2, as a user would stop a run."""

    def before_batch(self):
        if self.training and (self.epoch, self.iter) == (1, 0):
            os.kill(os.getpid(), signal.SIGINT)


def test_deterministic_resume_is_bit_identical(synth_root, tmp_path):
    cuda_fit(synth_root, tmp_path, "whole", "--deterministic", epochs=2)
    config = FitConfig(**json.loads((tmp_path / "whole" / "config.json").read_text()) | {"name": "split"})
    with pytest.raises(Interrupted):
        fit(config, extra_cbs=[StopAfterFirstEpoch()])
    cli("fit", "--resume", tmp_path / "split")
    whole, split = (load_state(tmp_path / n / "last.safetensors") for n in ("whole", "split"))
    assert whole["epoch"] == split["epoch"] == 2 and whole["model"].keys() == split["model"].keys()
    assert all(torch.equal(whole["model"][k], split["model"][k]) for k in whole["model"])


def test_doctor_agrees_on_a_trained_model_and_catches_a_broken_precision_path(monkeypatch):
    from fastseg.tools import doctor
    cfg = doctor.DoctorConfig(size=128, width=0.25, batch=4, steps=2, compile=False, matmul=2048, device="cuda")
    rows = doctor.run_doctor(cfg)["rows"]
    assert all(r["ok"] for r in rows if "skipped" not in r), rows
    real = doctor.plain_input
    monkeypatch.setattr(doctor, "plain_input", lambda x, cl: real(x, cl).to(torch.float16).to(torch.float32) * 0.5
                        if cl else real(x, cl))  # a broken channels_last path: inputs halved
    rows = doctor.run_doctor(cfg)["rows"]
    assert [r["ok"] for r in rows[:3]] == [True, True, False], rows
