import json
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from fastseg.classes import VOC
from fastseg.cli import app
from fastseg.constants import MIN_OPSET, ONNX_OPSET
from fastseg.errors import FastsegError
from fastseg.evaluate.export import Normalised, WithProbabilities, export_folder, export_onnx
from fastseg.models import create_model, load_pretrained
from fastseg.models.weights import load_model, model_metadata, save_model
from fastseg.train.fit import fit
from tests.conftest import data_args, runner, tiny_config


@pytest.fixture(scope="module")
def exported(synth_root, tmp_path_factory):
    """A tiny evaluated run and its export folder with ONNX."""
    root = tmp_path_factory.mktemp("export")
    run, _ = fit(tiny_config(synth_root, root / "runs", "r", epochs=1))
    assert runner.invoke(app, ["evaluate", str(run)]).exit_code == 0
    result = runner.invoke(app, ["export", str(run), "--format", "folder", "--out", str(root / "model"), "--onnx"])
    assert result.exit_code == 0, result.output
    return run, root / "model"


def test_the_folder_holds_weights_config_card_onnx_and_parity(exported):
    run, folder = exported
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.onnx", "model.safetensors",
                                                        "parity.json"]
    config = json.loads((folder / "config.json").read_text())
    assert (config["arch"], config["width"], config["num_classes"]) == ("segnet", 0.0625, 21)
    assert config["classes"][15] == {"id": 15, "name": "person", "color": [192, 128, 128]}  # VOC's colour map
    assert config["mean"] == [0.485, 0.456, 0.406] and config["input"]["values"] == "[0, 1], then (x - mean) / std"
    card = (folder / "README.md").read_text()
    metrics = json.loads((run / "metrics.json").read_text())
    parity = json.loads((folder / "parity.json").read_text())
    assert f"and PyTorch agree on {100 * parity['pixel_agreement']:.3f} % of pixels" in card
    assert "temperature" not in parity and "max_abs_probability_difference" not in parity  # no --probs
    assert opset_of(folder / "model.onnx") == ONNX_OPSET
    assert f"mIoU {metrics['miou']:.4f} (95 % interval" in card and "60.3 mIoU" in card
    assert "a class absent from both the truth and the predictions of the split is left out of the mean" in card
    assert "| person |" in card and "load_pretrained" in card and "test-time augmentation: none" in card


def test_load_pretrained_gives_the_runs_predictions(exported):
    run, folder = exported
    model, config = load_pretrained(folder)
    reference, _ = load_model(run / "best.safetensors")
    x = torch.randn(2, 3, 75, 101)
    with torch.no_grad():
        assert torch.equal(model(x), reference(x))
    assert config["format"] == "fastseg-model/1"


def test_predict_and_evaluate_take_the_folder(exported, synth_root, tmp_path):
    run, folder = exported
    image = sorted((synth_root / "VOCdevkit" / "VOC2012" / "JPEGImages").glob("*.jpg"))[0]
    for weights in (folder, run):
        out = tmp_path / weights.name
        result = runner.invoke(app, ["predict", str(image), "--weights", str(weights), "--out", str(out)])
        assert result.exit_code == 0, result.output
    mask = f"{image.stem}.png"
    assert (tmp_path / folder.name / mask).read_bytes() == (tmp_path / run.name / mask).read_bytes()
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("model.safetensors", "config.json"):
        (copy / name).write_bytes((folder / name).read_bytes())
    split = json.loads((run / "metrics.json").read_text())["split"]
    result = runner.invoke(app, ["evaluate", str(copy), *data_args(synth_root), "--split", split])
    assert result.exit_code == 0, result.output
    ours = json.loads((copy / "metrics.json").read_text())
    assert ours["miou"] == pytest.approx(json.loads((run / "metrics.json").read_text())["miou"])


def test_parity_json_is_measured_on_the_validation_split(exported):
    _, folder = exported
    parity = json.loads((folder / "parity.json").read_text())
    assert (parity["split"], parity["images"]) == ("seg11valid", 4)  # the run's validation split
    assert parity["pixel_agreement"] >= 0.999 and abs(parity["miou_difference"]) < 1e-3
    session = ort.InferenceSession(str(folder / "model.onnx"))
    model, config = load_pretrained(folder)
    x = torch.rand(1, 3, 64, 96)  # RGB in [0, 1]: the normalisation is inside the graph
    mean, std = torch.tensor(config["mean"]).view(1, 3, 1, 1), torch.tensor(config["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = model((x - mean) / std).numpy()
    assert np.abs(session.run(None, {"image": x.numpy()})[0] - expected).max() < 1e-4


def test_export_never_writes_into_a_folder_holding_other_files(exported, tmp_path):
    run, _ = exported
    (tmp_path / "notes.txt").write_text("mine")
    result = runner.invoke(app, ["export", str(run), "--format", "folder", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert " ".join(result.output.split()) == (f"Error: --out {tmp_path} already holds other files (notes.txt); "
                                               "export into a new or empty folder.")
    assert (tmp_path / "notes.txt").read_text() == "mine" and not (tmp_path / "model.safetensors").exists()


VOC_SIZES = [(500, 375), (375, 500), (333, 500), (366, 500), (97, 131)]
"""The commonest VOC image sizes (H, W), and a small odd one."""


@pytest.fixture(scope="module")
def random_onnx(tmp_path_factory):
    torch.manual_seed(0)
    model = create_model("segnet", width=0.125).eval()
    folder = tmp_path_factory.mktemp("onnx")
    weights = save_model(model, folder / "m.safetensors", model_metadata("segnet", VOC, 0.125))
    return model, ort.InferenceSession(str(export_onnx(weights, folder / "m.onnx", normalise=True)))


@pytest.mark.parametrize("size", VOC_SIZES)
def test_onnx_parity_at_every_voc_size_class(random_onnx, size):
    # SegNet's unpooling follows max-pool argmaxes: a near-tie that the two runtimes' float sums break
    # differently moves one value, and a block of logits with it (PyTorch alone does the same under
    # 1e-6 input noise; BENCHMARKS.md). Random weights on random input tie far more often than a
    # trained model on photos (the demo's validation split agrees on every pixel), so the test bounds
    # the typical logit difference and the share of pixels whose class differs.
    model, session = random_onnx
    x = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(sum(size)))
    with torch.no_grad():
        expected = Normalised(model)(x)
    got = torch.from_numpy(session.run(None, {"image": x.numpy()})[0])
    gap = (got - expected).abs().amax(1) / expected.abs().max()  # per pixel, the largest over the classes
    assert gap.median() < 1e-5
    assert (got.argmax(1) == expected.argmax(1)).double().mean() >= 0.99


def opset_of(path) -> int:
    """The default-domain opset an ONNX file is written in."""
    return next(o.version for o in onnx.load(str(path)).opset_import if o.domain in ("", "ai.onnx"))


def onnx_props(path) -> dict:
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


def typical_gap(got: np.ndarray, expected: np.ndarray) -> float:
    """The 99th percentile of |got - expected|: a random-weight SegNet's max-pool near-ties can move a
    block of values between runtimes (see the VOC-size test), so the largest difference is not bounded."""
    return float(np.quantile(np.abs(got - expected), 0.99))


def tiny_weights(folder, **meta):
    """A random 1/16 SegNet and its weights file (sidecar `meta` added to, or replacing, the usual)."""
    torch.manual_seed(0)
    model = create_model("segnet", width=0.0625).eval()
    return model, save_model(model, folder / "m.safetensors", model_metadata("segnet", VOC, 0.0625, **meta))


def test_onnx_by_default_takes_normalised_input_and_gives_logits_of_any_size(tmp_path):
    model, weights = tiny_weights(tmp_path)
    path = export_onnx(weights, tmp_path / "a" / "b" / "m.onnx")  # its folders are made
    assert path == tmp_path / "a" / "b" / "m.onnx" and opset_of(path) == ONNX_OPSET
    assert onnx_props(path)["input"] == "RGB in [0, 1], normalised by mean and std"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [(i.name, i.shape) for i in session.get_inputs()] == [("image", ["batch", 3, "height", "width"])]
    assert [(o.name, o.shape) for o in session.get_outputs()] == [("logits", ["batch", 21, "height", "width"])]
    x = torch.randn(2, 3, 40, 56)
    with torch.no_grad():
        expected = model(x).numpy()
    got = session.run(None, {"image": x.numpy()})
    assert len(got) == 1 and typical_gap(got[0], expected) < 1e-4


def test_onnx_with_its_own_statistics_probabilities_and_the_oldest_opset(tmp_path):
    mean, std = [0.2, 0.3, 0.4], [0.5, 0.6, 0.7]
    model, weights = tiny_weights(tmp_path, mean=mean, std=std)
    path = export_onnx(weights, tmp_path / "n.onnx", opset=MIN_OPSET, normalise=True, probabilities=True)
    props = onnx_props(path)
    assert opset_of(path) == MIN_OPSET and props["input"] == "RGB in [0, 1]"
    assert (json.loads(props["mean"]), json.loads(props["std"])) == (mean, std)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [(o.name, o.shape) for o in session.get_outputs()] == [("logits", ["batch", 21, "height", "width"]),
                                                                  ("probabilities", ["batch", 21, "height", "width"])]
    x = torch.rand(1, 3, 40, 56)
    with torch.no_grad():
        expected = model((x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1))
        logits, probs = WithProbabilities(model)(x)
    assert torch.equal(probs, logits.softmax(1))  # temperature 1 unless given
    got_logits, got_probs = session.run(None, {"image": x.numpy()})
    assert typical_gap(got_logits, expected.numpy()) < 1e-4
    assert typical_gap(got_probs, expected.softmax(1).numpy()) < 1e-5  # no temperature in the sidecar: 1
    with pytest.raises(FastsegError) as err:
        export_onnx(weights, tmp_path / "old.onnx", opset=MIN_OPSET - 1)
    assert str(err.value) == f"--opset {MIN_OPSET - 1} is too old; use {MIN_OPSET} or newer."
    assert not (tmp_path / "old.onnx").exists()


def test_a_folder_export_keeps_the_runs_statistics_opset_and_temperature_1(exported, tmp_path):
    """A run whose sidecar has its own mean and std (a folder dataset's), exported with --probs and
    an older opset into a folder whose parent does not exist yet: parity holds at temperature 1."""
    run, _ = exported
    copy = shutil.copytree(run, tmp_path / "run")
    model, meta = load_model(run / "best.safetensors")
    save_model(model, copy / "best.safetensors", {**meta, "mean": [0.3, 0.5, 0.2], "std": [0.4, 0.2, 0.3]})
    folder = export_folder(copy, tmp_path / "new" / "model", onnx=True, opset=13, probabilities=True)
    parity = json.loads((folder / "parity.json").read_text())
    assert opset_of(folder / "model.onnx") == 13
    assert parity["temperature"] == 1.0 and parity["max_abs_probability_difference"] < 1e-5
    assert parity["max_abs_logit_difference"] < 1e-3 and parity["pixel_agreement"] >= 0.999
    props, config = onnx_props(folder / "model.onnx"), json.loads((folder / "config.json").read_text())
    for stats in ({k: json.loads(props[k]) for k in ("mean", "std")}, {k: config[k] for k in ("mean", "std")}):
        assert stats == {"mean": [0.3, 0.5, 0.2], "std": [0.4, 0.2, 0.3]}
    plain = export_folder(copy, tmp_path / "plain", onnx=True)  # by default, logits alone
    session = ort.InferenceSession(str(plain / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["logits"]
    assert "temperature" not in json.loads((plain / "parity.json").read_text())
