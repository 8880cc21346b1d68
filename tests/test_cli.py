"""Commands and options through the CLI, each checked for the effect it promises."""

import json
import shutil

import pytest
import torch
from typer.testing import CliRunner

from fastseg.cli import app
from fastseg.io.serialize import read_meta
from tests.conftest import cli_fit, data_args

runner = CliRunner()


@pytest.fixture
def learners(monkeypatch):
    """Every Learner `fit` builds, in order."""
    import fastseg.train.fit
    built, build = [], fastseg.train.fit.build_learner
    monkeypatch.setattr(fastseg.train.fit, "build_learner", lambda *a, **k: built.append(build(*a, **k)) or built[-1])
    return built


def test_data_and_loader_options_reach_the_learner(synth_copy, tmp_path, learners):
    voc11 = shutil.move(synth_copy / "VOCdevkit" / "VOC2011", tmp_path / "VOC2011")  # not where it is looked for
    result = cli_fit(synth_copy, tmp_path / "runs", "--name", "o", "--arch", "skip", "--train", "voc12-train",
                     "--valid", "seg11valid", "--voc11", str(voc11), "--augment", "none", "--workers", "1",
                     "--cache", "--device", "cpu")
    assert result.exit_code == 0, result.output
    learn = learners[0]
    assert type(learn.model).__name__ == "VGGUNet"  # --arch skip
    assert learn.opt_func.func.__name__ == "SGD"                       # the default --opt sgd
    assert (len(learn.dls.train_ds), len(learn.dls.valid_ds)) == (12, 4)  # voc12-train, seg11valid via --voc11
    assert learn.dls.train.fake_l.num_workers == 1  # what fastai iterates (.num_workers reads 1 even at 0)
    aug = next(t for t in learn.dls.train.after_item.fs if hasattr(t, "aug")).aug
    assert [type(t).__name__ for t in aug.transforms] == ["PadIfNeeded", "RandomCrop"]  # --augment none
    assert next(learn.model.parameters()).device.type == "cpu"
    config = json.loads((tmp_path / "runs" / "o" / "config.json").read_text())
    assert (config["arch"], config["opt"], config["device"]) == ("skip", "sgd", "cpu")
    assert (config["data"]["num_workers"], config["data"]["cache"]) == (1, True)  # --cache: data/test_dataloaders.py
    assert read_meta(tmp_path / "runs" / "o" / "best.safetensors")["arch"] == "skip"


def test_device_cpu_wins_over_cuda(monkeypatch):
    from fastseg.devices.select import pick_device
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device("cpu") == torch.device("cpu") and pick_device(None) == torch.device("cuda")


def test_find_lr_command(synth_root, tmp_path):
    result = runner.invoke(app, ["find-lr", *data_args(synth_root), "--runs-dir", str(tmp_path), "--name", "lr",
                                 "--width", "0.0625", "--pretrained", "none", "--crop", "48", "--bs", "4",
                                 "--num-it", "12"])
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "lr" / "lr_find.json").read_text())
    assert saved["arch"] == "segnet" and (tmp_path / "lr" / "lr_find.png").is_file()
    shown = " ".join(result.output.split())
    assert shown.startswith("Leakage check") and f"plot and values in {tmp_path / 'lr'}" in shown


@pytest.fixture(scope="module")
def evaluated_run(synth_root, tmp_path_factory):
    from fastseg.evaluate.scoring import evaluate_run
    from fastseg.train.fit import fit
    from tests.conftest import tiny_config
    run, _ = fit(tiny_config(synth_root, tmp_path_factory.mktemp("runs"), "e", epochs=1))
    evaluate_run(run)
    return run


def test_report_command_rewrites_the_run_card(evaluated_run):
    for name in ("report.md", "report.html"):
        (evaluated_run / name).unlink()
    result = runner.invoke(app, ["report", str(evaluated_run)])
    assert result.exit_code == 0, result.output
    assert "# Run card: e" in (evaluated_run / "report.md").read_text()
    assert "<h1>Run card: e</h1>" in (evaluated_run / "report.html").read_text()


def test_export_command_writes_an_onnx_model_that_matches(evaluated_run, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from fastseg.models.weights import load_model
    out = tmp_path / "m.onnx"
    result = runner.invoke(app, ["export", str(evaluated_run / "best.safetensors"), "--out", str(out)])
    assert result.exit_code == 0 and f"Wrote {out}" in result.output
    x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    (logits,) = ort.InferenceSession(str(out)).run(None, {"image": x.numpy()})
    with torch.no_grad():
        assert torch.allclose(torch.from_numpy(logits), load_model(evaluated_run / "best.safetensors")[0](x), atol=1e-4)


def test_evaluate_tta_options_are_applied_and_recorded(evaluated_run):
    result = runner.invoke(app, ["evaluate", str(evaluated_run), "--tta", "flip", "--tta-scales", "0.5,1"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((evaluated_run / "metrics.json").read_text())
    assert metrics["tta"] == {"flip": True, "scales": [0.5, 1.0]}
    assert metrics["tta_gain"] == pytest.approx(metrics["miou"] - metrics["miou_without_tta"])
    assert "TTA gain" in result.output


def test_every_command_help_ends_with_an_example_and_fit_groups_its_options():
    names = [c.name or c.callback.__name__ for c in app.registered_commands]
    assert len(names) >= 13
    for name in names:
        result = runner.invoke(app, [name, "--help"], env={"COLUMNS": "200"})
        assert result.exit_code == 0, result.output
        assert result.output.rsplit("╯", 1)[1].strip().startswith("Example"), name  # below the last panel
    fit_help = runner.invoke(app, ["fit", "--help"], env={"COLUMNS": "200"}).output
    panels = ["Data", "Model", "Optimisation and schedule", "Precision and speed", "Run folder"]
    assert all(f"─ {panel} ─" in fit_help for panel in panels)
    assert fit_help.index("--crop") < fit_help.index("─ Model ─") < fit_help.index("--width")  # options in their panels
