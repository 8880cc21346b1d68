"""Bayesian SegNet and calibration, checked against independent references: hand-built averages,
a numpy ECE, pairwise AUROC, NLL before and after a temperature, and the files the CLI writes."""

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.numpy import load_file
from typer.testing import CliRunner

from fastseg.cli import app
from fastseg.evaluate.uncertainty import CalibrationStats, MonteCarlo, fit_temperature, histogram_auroc
from fastseg.io.serialize import read_meta
from fastseg.models import create_model
from fastseg.models.dropout import MCDropout, mc_sampling
from tests.conftest import cli_fit

runner = CliRunner()


@pytest.mark.parametrize("arch", ["segnet", "skip"])
def test_dropout_zero_builds_todays_model_and_dropout_sits_in_the_central_units(arch):
    torch.manual_seed(0)
    plain = create_model(arch, width=0.0625)
    torch.manual_seed(0)
    bayes = create_model(arch, width=0.0625, dropout=0.5)
    assert not any(isinstance(m, MCDropout) for m in plain.modules())
    assert plain.state_dict().keys() == bayes.state_dict().keys()
    assert all(torch.equal(plain.state_dict()[k], bayes.state_dict()[k]) for k in plain.state_dict())
    drops = [name for name, m in bayes.named_modules() if isinstance(m, MCDropout)]
    assert drops == ["encoder.dropouts.0", "encoder.dropouts.1", "encoder.dropouts.2",
                     "dropouts.0", "dropouts.1", "dropouts.2"]  # 3 deepest encoder stages, their 3 mirrors
    x = torch.randn(2, 3, 64, 64)
    bayes.load_state_dict(plain.state_dict())
    plain.eval(), bayes.eval()
    with torch.no_grad():
        assert torch.equal(plain(x), bayes(x))        # eval mode without sampling: no dropout
        with mc_sampling(bayes):
            assert not torch.equal(bayes(x), bayes(x))  # sampling: masks differ between passes


def test_mc_without_dropout_is_the_deterministic_pass_exactly():
    model = create_model("segnet", width=0.0625).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(MonteCarlo(model, 8)(x), model(x))


def test_mc_average_equals_a_hand_built_average_of_seeded_passes():
    torch.manual_seed(0)
    model = create_model("segnet", width=0.0625, dropout=0.5).eval()
    x = torch.randn(2, 3, 64, 64)
    n = 4  # 4 passes × 2 images fit one batched forward
    with torch.no_grad():
        mc = MonteCarlo(model, n, seed=11)
        mean, variance = mc.mean_probabilities(x)
        with mc_sampling(model):
            torch.manual_seed(11)
            passes = model(x.repeat(n, 1, 1, 1)).softmax(1).view(n, 2, 21, 64, 64)
    expected = passes.mean(0)
    assert torch.allclose(mean, expected, atol=1e-6)
    win = expected.argmax(1, keepdim=True)
    assert torch.allclose(variance, passes.gather(2, win.expand(n, -1, -1, -1, -1))[:, :, 0].var(0, unbiased=False),
                          atol=1e-6)
    assert torch.equal(torch.exp(mc(x)).argmax(1), expected.argmax(1))
    with torch.no_grad():
        assert torch.equal(mc(x), mc(x))  # seeded at every call


def test_ece_nll_and_auroc_on_a_hand_built_case():
    # 8 pixels, 2 classes: confidences 0.95 (4 pixels, 3 right), 0.65 (4 pixels, 2 right); one void pixel
    conf = np.array([0.95] * 4 + [0.65] * 4)
    right = np.array([1, 1, 1, 0, 1, 1, 0, 0], bool)
    target = np.zeros(8, np.int64)
    p1 = np.where(right, 1 - conf, conf)          # class 1's probability: wrong pixels predict class 1
    probs = torch.tensor(np.stack([1 - p1, p1]), dtype=torch.float32).view(1, 2, 1, 8)
    probs = torch.cat([probs, torch.tensor([0.5, 0.5]).view(1, 2, 1, 1)], 3)  # + a void pixel
    y = torch.tensor(np.append(target, 255)).view(1, 1, 9)
    stats = CalibrationStats(2)
    stats.update(probs, y)
    out = stats.summary()
    ece = 0.5 * abs(0.75 - 0.95) + 0.5 * abs(0.5 - 0.65)
    nll = -np.mean(np.log(np.where(right, conf, 1 - conf)))
    assert out["pixels"] == 8 and math.isclose(out["ece"], ece, rel_tol=1e-6) and math.isclose(out["nll"], nll,
                                                                                              rel_tol=1e-6)
    ent = -(conf * np.log(conf) + (1 - conf) * np.log(1 - conf))
    pairs = [(a > b) + 0.5 * (a == b) for a in ent[~right] for b in ent[right]]
    assert math.isclose(out["entropy_auroc"], np.mean(pairs), rel_tol=1e-9)


def test_histogram_auroc_is_the_pairwise_probability():
    gen = np.random.default_rng(0)
    pos, neg = gen.integers(0, 50, 20), gen.integers(10, 60, 30)
    auroc = histogram_auroc(torch.bincount(torch.tensor(pos), minlength=60), torch.bincount(torch.tensor(neg),
                                                                                            minlength=60))
    assert math.isclose(auroc, np.mean([(a > b) + 0.5 * (a == b) for a in pos for b in neg]), rel_tol=1e-12)


def test_temperature_lowers_the_nll_of_an_over_confident_model():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(5000, 5, generator=gen) * 2
    target = torch.distributions.Categorical(logits=logits).sample()  # calibrated at T = 1 by construction
    sharp = logits * 4                                                  # over-confident: T should be near 4
    t = fit_temperature(sharp, target)
    nll = torch.nn.functional.cross_entropy
    assert 3 < t < 5 and nll(sharp / t, target) < nll(sharp, target) - 0.1


def test_bayesian_run_through_the_cli(synth_root, tmp_path):
    fitted = cli_fit(synth_root, tmp_path, "--name", "b", "--dropout", "0.5", "--epochs", "2", "--opt", "adam",
                     "--lr", "1e-2")
    assert fitted.exit_code == 0, fitted.output
    run = tmp_path / "b"
    assert read_meta(run / "best.safetensors")["dropout"] == 0.5
    result = runner.invoke(app, ["evaluate", str(run), "--mc", "4"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((run / "metrics.json").read_text())
    mc = metrics["mc"]
    assert mc["samples"] == 4 and math.isclose(mc["gain"], metrics["miou"] - mc["miou_deterministic"], abs_tol=1e-9)
    assert mc["gain_ci95"][0] <= mc["gain_ci95"][1]
    cal = metrics["calibration"]
    assert cal["temperature"] == 1.0 and 0 <= cal["ece"] <= 1 and len(cal["bins"]) == 15
    assert (run / "reliability.png").stat().st_size > 5000 and (run / "predictions_uncertain.png").is_file()
    result = runner.invoke(app, ["evaluate", str(run), "--calibrate"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((run / "metrics.json").read_text())
    temperature = read_meta(run / "best.safetensors")["temperature"]
    assert metrics["calibration"]["temperature"] == temperature != 1.0
    assert metrics["calibration"]["nll"] <= metrics["calibration_before"]["nll"] + 1e-6
    photo = tmp_path / "in" / "p.png"
    photo.parent.mkdir()
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (70, 90, 3), dtype=np.uint8)).save(photo)
    result = runner.invoke(app, ["predict", str(photo.parent), "--weights", str(run), "--out", str(tmp_path / "o"),
                                 "--mc", "3", "--probs"])
    assert result.exit_code == 0, result.output
    maps = load_file(tmp_path / "o" / "p_uncertainty.safetensors")
    assert set(maps) == {"confidence", "entropy", "variance"} and maps["confidence"].shape == (70, 90)
    assert (maps["confidence"] >= 1 / 21 - 1e-6).all() and (maps["confidence"] <= 1 + 1e-6).all()
    assert (maps["entropy"] >= -1e-6).all() and (maps["entropy"] <= math.log(21) + 1e-5).all()
    with Image.open(tmp_path / "o" / "p.png") as mask:
        assert mask.size == (90, 70)
    assert (tmp_path / "o" / "p_uncertainty.png").is_file()


def test_probability_maps_round_trip_at_the_calibrated_temperature(synth_root, tmp_path):
    from fastseg.models.weights import load_model, set_temperature
    assert cli_fit(synth_root, tmp_path, "--name", "t").exit_code == 0
    weights = tmp_path / "t" / "best.safetensors"
    set_temperature(weights, 2.5)
    image = np.random.default_rng(2).integers(0, 255, (40, 50, 3), dtype=np.uint8)
    (tmp_path / "in").mkdir()
    Image.fromarray(image).save(tmp_path / "in" / "q.png")
    result = runner.invoke(app, ["predict", str(tmp_path / "in"), "--weights", str(tmp_path / "t"), "--out",
                                 str(tmp_path / "o"), "--probs"])
    assert result.exit_code == 0, result.output
    maps = load_file(tmp_path / "o" / "q_uncertainty.safetensors")
    assert set(maps) == {"confidence", "entropy"}
    model, meta = load_model(weights)
    x = (image / 255.0 - np.array(meta["mean"])) / np.array(meta["std"])
    padded = np.broadcast_to(-np.array(meta["mean"]) / np.array(meta["std"]), (64, 64, 3)).copy()  # black, normalised
    padded[:40, :50] = x
    with torch.no_grad():
        logits = model(torch.tensor(padded, dtype=torch.float32).permute(2, 0, 1)[None])[0, :, :40, :50]
    probs = (logits / 2.5).softmax(0).numpy()
    assert np.allclose(maps["confidence"], probs.max(0), atol=1e-5)
    assert np.allclose(maps["entropy"], -(probs * np.log(probs)).sum(0), atol=1e-4)


def test_onnx_export_emits_probabilities_at_the_temperature(synth_root, tmp_path):
    import onnxruntime as ort

    from fastseg.models.weights import set_temperature
    assert cli_fit(synth_root, tmp_path, "--name", "x").exit_code == 0
    set_temperature(tmp_path / "x" / "best.safetensors", 2.0)
    result = runner.invoke(app, ["export", str(tmp_path / "x"), "--format", "folder", "--out", str(tmp_path / "e"),
                                 "--onnx", "--probs"])
    assert result.exit_code == 0, result.output
    parity = json.loads((tmp_path / "e" / "parity.json").read_text())
    assert parity["temperature"] == 2.0 and parity["max_abs_probability_difference"] < 1e-4
    session = ort.InferenceSession(str(tmp_path / "e" / "model.onnx"), providers=["CPUExecutionProvider"])
    image = np.random.default_rng(3).random((1, 3, 40, 56), dtype=np.float32)
    logits, probs = session.run(None, {"image": image})
    expected = np.exp(logits / 2.0) / np.exp(logits / 2.0).sum(1, keepdims=True)
    assert [o.name for o in session.get_outputs()] == ["logits", "probabilities"]
    assert np.allclose(probs, expected, atol=1e-5)
    assert json.loads((tmp_path / "e" / "config.json").read_text())["temperature"] == 2.0


def test_calibrate_keeps_about_the_asked_number_of_pixels(roots):
    from fastseg.data.splits import build_split
    from fastseg.evaluate.scoring import evaluate_samples
    samples = build_split("voc12-val", roots)
    model = create_model("segnet", width=0.0625)
    result = evaluate_samples(model, samples, "cpu", bs=4, calibration_pixels=3000)
    kept = sum(len(t) for _, t in result.pixels)
    assert 3000 - len(samples) <= kept <= 3000 and all(t.max() < 21 for _, t in result.pixels)
