"""The model registry: an architecture registered by a user (here inside the test) is offered by
`fit --arch` and its help, and goes through fit → evaluate → export like the built-in ones."""

import json

import pytest
import torch
from torch import nn

from fastseg.cli import app
from fastseg.models import ARCHS, ArchSpec, create_model, load_pretrained, register_arch
from tests.conftest import cli_fit, runner

TOY_HELP = "toy: one 1×1 convolution and a 1×1 head"


class Toy(nn.Module):
    """N×3×H×W → logits N×C×H×W: a 1×1 convolution (the encoder) and a 1×1 head."""

    def __init__(self, num_classes: int, width: float = 1.0):
        super().__init__()
        self.encoder = nn.Conv2d(3, 4, 1)
        self.head = nn.Conv2d(4, num_classes, 1)

    def forward(self, x):
        return self.head(torch.relu(self.encoder(x)))


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setitem(ARCHS, "toy", ArchSpec("toy", Toy, TOY_HELP))  # removed again after the test
    return ARCHS["toy"]


def test_register_arch_makes_create_model_build_it(monkeypatch):
    monkeypatch.setattr("fastseg.models.ARCHS", dict(ARCHS))
    register_arch(ArchSpec("toy", Toy, TOY_HELP))
    assert isinstance(create_model("toy", 5), Toy)
    with pytest.raises(ValueError, match=r"^Unknown arch 'unet'; choose one of: segnet, skip, toy\.$"):
        create_model("unet")


def test_a_registered_arch_is_in_fit_help_and_goes_through_fit_evaluate_export(toy, synth_root, tmp_path):
    shown = " ".join(runner.invoke(app, ["fit", "--help"]).output.replace("│", " ").split())  # rich's box
    assert "toy (toy: one 1×1 convolution and a 1×1 head)" in shown and "segnet (SegNet" in shown
    result = cli_fit(synth_root, tmp_path, "--arch", "toy", "--name", "t")
    assert result.exit_code == 0, result.output
    run = tmp_path / "t"
    result = runner.invoke(app, ["evaluate", str(run), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert json.loads((run / "metrics.json").read_text())["images"] > 0
    result = runner.invoke(app, ["export", str(run), "--format", "folder", "--out", str(tmp_path / "e")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "e" / "config.json").read_text())["arch"] == "toy"
    assert f"A toy model ({TOY_HELP}; none initialisation)" in (tmp_path / "e" / "README.md").read_text()
    model, config = load_pretrained(tmp_path / "e")
    assert isinstance(model, Toy) and model(torch.zeros(1, 3, 32, 40)).shape == (1, config["num_classes"], 32, 40)


def test_an_unregistered_arch_is_refused_by_fit(synth_root, tmp_path):
    result = cli_fit(synth_root, tmp_path, "--arch", "toy")
    assert result.exit_code == 2
    assert "Invalid value for '--arch': 'toy' is not one of 'segnet', 'skip'." in " ".join(result.output.split())
