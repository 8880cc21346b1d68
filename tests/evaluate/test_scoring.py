import json
import shutil
import subprocess

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from fastseg.classes import VOC
from fastseg.constants import voc_palette
from fastseg.data.masks import read_mask
from fastseg.data.splits import build_split
from fastseg.evaluate.metrics import confusion_matrix
from fastseg.evaluate.predict import predict_files, predict_image, tile_starts
from fastseg.evaluate.scoring import evaluate_run, evaluate_samples
from fastseg.io.serialize import read_meta
from fastseg.models import create_model
from fastseg.train.fit import fit
from tests.conftest import tiny_config


@pytest.fixture(scope="module")
def trained_run(synth_root, tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    run, rows = fit(tiny_config(synth_root, runs, "eval", epochs=2))
    return run, rows


def test_metrics_json_equals_what_fit_reported(trained_run):
    run, rows = trained_run
    path, metrics = evaluate_run(run)
    best = read_meta(run / "best.safetensors")
    assert json.loads(path.read_text())["miou"] == metrics["miou"]
    for key in ("miou", "fg_miou", "pixel_acc", "mean_acc"):
        assert metrics[key] == pytest.approx(best["metrics"][key], abs=1e-9), key
    lo, hi = metrics["miou_ci95"]
    assert lo <= metrics["miou"] <= hi
    for name in ("confusion_matrix.png", "predictions_best.png", "predictions_worst.png", "predictions_random.png",
                 "report.md", "report.html"):
        assert (run / name).is_file(), name


def test_odd_sizes_are_scored_at_native_resolution(roots):
    samples = build_split("voc12-val", roots)
    sizes = {Image.open(s.image).size for s in samples}
    assert any(w % 32 or h % 32 for w, h in sizes)
    result = evaluate_samples(create_model("skip", width=0.0625), samples, torch.device("cpu"), bs=3)
    for i, sample in enumerate(samples):
        mask = read_mask(sample.mask)
        assert int(result.per_image[i].sum()) == int((mask != 255).sum())  # every original pixel, nothing else


def test_per_image_confusion_in_one_bincount():
    pred = torch.tensor([[[0, 1], [1, 1]], [[2, 2], [0, 0]]])
    target = torch.tensor([[[0, 1], [255, 0]], [[2, 1], [0, 255]]])
    cms = confusion_matrix(pred, target, 3, per_sample=True)
    assert cms[0].tolist() == [[1, 1, 0], [0, 1, 0], [0, 0, 0]]
    assert cms[1].tolist() == [[1, 0, 0], [0, 0, 1], [0, 0, 1]]


class PixelModel(nn.Module):
    """Per-pixel (1×1) model: equivariant to flips, so flip TTA must change nothing."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU(), nn.Conv2d(8, 21, 1))

    def forward(self, x):
        return self.net(x)


def test_flip_tta_on_flip_equivariant_model_changes_nothing(roots):
    samples = build_split("voc12-val", roots)
    plain = evaluate_samples(PixelModel(), samples, torch.device("cpu"), bs=4)
    flipped = evaluate_samples(PixelModel(), samples, torch.device("cpu"), bs=4, flip=True)
    assert torch.equal(plain.cm, flipped.cm)
    assert flipped.plain_scores["miou"] == pytest.approx(flipped.scores["miou"])


class LocalModel(nn.Module):
    """Two 3×3 convs: each output pixel sees only 5×5 input pixels."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 21, 3, padding=1))

    def forward(self, x):
        return self.net(x)


def away_from_tile_edges(h, w, tile, overlap, margin):
    """H×W bool: pixels at least `margin` px inside every tile that covers them."""
    safe = np.ones((h, w), bool)
    for top in tile_starts(h, tile, overlap):
        for left in tile_starts(w, tile, overlap):
            inside = np.zeros((h, w), bool)
            inside[top + margin: top + tile - margin, left + margin: left + tile - margin] = True
            covered = np.zeros((h, w), bool)
            covered[top: top + tile, left: left + tile] = True
            safe &= inside | ~covered
    return safe


def test_tiles_agree_with_whole_image_away_from_borders():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(150, 210, 3), dtype=np.uint8)
    whole = predict_image(LocalModel(), image, "cpu", tile=1000)
    tiled = predict_image(LocalModel(), image, "cpu", tile=64, overlap=16)
    safe = away_from_tile_edges(150, 210, 64, 16, margin=2)  # 2 px: the model's receptive-field radius
    assert safe.mean() > 0.7
    assert np.array_equal(tiled[safe], whole[safe])
    assert not np.array_equal(tiled, whole)  # the edges do differ: tiling really happened


def test_predict_writes_palette_pngs_at_original_size(tmp_path, synth_root):
    images = sorted((synth_root / "VOCdevkit" / "VOC2012" / "JPEGImages").glob("*.jpg"))[:3]
    folder = tmp_path / "in"
    folder.mkdir()
    for p in images:
        shutil.copy(p, folder / p.name)
    (folder / "broken.jpg").write_bytes(b"not an image")
    report = predict_files(create_model("segnet", width=0.0625), [folder], tmp_path / "out", "cpu", tile=64, overlap=16)
    assert [p.name for p, _ in report.failed] == ["broken.jpg"]
    assert len(report.written) == 3
    for p in images:
        mask = Image.open(tmp_path / "out" / f"{p.stem}.png")
        assert mask.mode == "P" and mask.size == Image.open(p).size
        assert mask.getpalette()[: 3 * 21] == voc_palette()[: 3 * 21]
        assert (tmp_path / "out" / f"{p.stem}_overlay.jpg").is_file()


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")
def test_report_html_shows_its_images_in_chromium(trained_run, tmp_path):
    run, _ = trained_run
    evaluate_run(run)
    page = (run / "report.html").read_text()
    assert "src='data:image/png;base64," in page and "http" not in page.split("<body>")[1][:2000]
    probe = tmp_path / "probe.html"
    check = ("<script>window.onload=()=>{const ok=[...document.images].every(i=>i.complete&&i.naturalWidth>0);"
             "document.title=(ok&&document.images.length>=4)?'IMAGES-OK':'IMAGES-BROKEN';}</script></body>")
    probe.write_text(page.replace("</body>", check))
    flags = CHROMIUM_FLAGS + [f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([CHROMIUM, *flags, "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    assert "<title>IMAGES-OK</title>" in dom
    shot = tmp_path / "shot.png"
    page_uri = (run / "report.html").as_uri()
    subprocess.run([CHROMIUM, *flags, f"--screenshot={shot}", "--window-size=1000,2400", page_uri],
                   capture_output=True, timeout=120)
    pixels = np.asarray(Image.open(shot).convert("RGB")).reshape(-1, 3).astype(int)
    bluish = (pixels[:, 2] - pixels[:, 0] > 60).mean()  # the curves and confusion matrix are blue
    assert bluish > 0.005


def moved_run(trained_run, tmp_path):
    """A copy of the trained run whose saved data paths are relative ones that do not resolve here."""
    run = shutil.copytree(trained_run[0], tmp_path / "moved")
    for name in ("metrics.json", "report.md", "report.html"):
        (run / name).unlink(missing_ok=True)
    config = json.loads((run / "config.json").read_text())
    config["data"].update(voc="elsewhere/VOCdevkit", sbd="elsewhere/benchmark_RELEASE")
    (run / "config.json").write_text(json.dumps(config))
    return run


def test_evaluate_with_data_roots_given_writes_the_report_on_them(trained_run, tmp_path, roots):
    from fastseg.data.splits import DataRoots
    run = moved_run(trained_run, tmp_path)
    _, metrics = evaluate_run(run, roots=DataRoots(roots.voc, roots.sbd))
    report = (run / "report.md").read_text()
    assert f"mIoU {metrics['miou']:.4f}" in report and "| train-aug | 22 |" in report


def test_evaluate_checks_the_runs_data_paths_before_scoring(trained_run, tmp_path):
    from fastseg.errors import FastsegError
    run = moved_run(trained_run, tmp_path)
    with pytest.raises(FastsegError, match=r"^VOC2012 folder elsewhere/VOCdevkit was not found"):
        evaluate_run(run)
    assert not (run / "metrics.json").exists()


class ColumnModel(nn.Module):
    """Per-pixel model plus a left-to-right ramp favouring class 1: not flip-equivariant."""

    def __init__(self):
        super().__init__()
        self.pixel = PixelModel()

    def forward(self, x):
        ramp = torch.linspace(-3, 3, x.shape[-1])
        logits = self.pixel(x).clone()
        logits[:, 1] += ramp
        return logits


def test_flip_tta_averages_the_flipped_back_prediction(roots):
    from fastseg.evaluate.tta import tta_probabilities
    model, x = ColumnModel(), torch.randn(2, 3, 32, 48, generator=torch.Generator().manual_seed(0))
    plain = model(x).softmax(1)
    expected = (plain + model(x.flip(-1)).softmax(1).flip(-1)) / 2
    assert torch.allclose(tta_probabilities(model, x, flip=True), expected, atol=1e-6)
    samples = build_split("voc12-val", roots)
    flipped = evaluate_samples(model, samples, torch.device("cpu"), bs=4, flip=True)
    assert not torch.equal(evaluate_samples(model, samples, torch.device("cpu"), bs=4).cm, flipped.cm)


def test_tta_scales_average_each_rescaled_prediction_at_the_input_size():
    import torch.nn.functional as F

    from fastseg.evaluate.tta import tta_probabilities
    model, x = LocalModel(), torch.randn(1, 3, 32, 48, generator=torch.Generator().manual_seed(0))
    half = F.interpolate(x, scale_factor=0.5, mode="bilinear", align_corners=False)
    back = F.interpolate(model(half).softmax(1), size=(32, 48), mode="bilinear", align_corners=False)
    expected = (back + model(x).softmax(1)) / 2
    assert torch.allclose(tta_probabilities(model, x, scales=(0.5, 1.0)), expected, atol=1e-6)

def test_scores_do_not_depend_on_the_batch_size(roots):
    """Each image is padded to its own next multiple of 32 only: bs 1, 7 and 32 give one matrix."""
    torch.manual_seed(0)
    model = create_model("segnet", width=0.0625)
    samples = build_split("voc12-val", roots)
    assert len({Image.open(s.image).size for s in samples}) > 1
    cms = [evaluate_samples(model, samples, torch.device("cpu"), bs=bs).cm for bs in (1, 7, 32)]
    assert torch.equal(cms[0], cms[1]) and torch.equal(cms[0], cms[2])


def test_fit_validation_does_not_depend_on_the_batch_size(synth_root):
    from dataclasses import replace

    from fastseg.data.dataloaders import build_dataloaders
    torch.manual_seed(0)
    model = create_model("segnet", width=0.0625).eval()
    data = replace(tiny_config(synth_root, "runs", "x").data, valid_split="voc12-val")
    cms = []
    for bs in (1, 7, 32):
        dl = build_dataloaders(replace(data, val_bs=bs), log=lambda _: None).valid
        with torch.no_grad():
            cms.append(sum(confusion_matrix(model(x).argmax(1), y, 21) for x, y in dl))
    assert torch.equal(cms[0], cms[1]) and torch.equal(cms[0], cms[2])


@pytest.fixture
def photos(tmp_path, synth_root):
    """photos/{a.jpg, a.png, b.jpg, sub/a.jpg}: copies of synthetic JPEGs (a.png is a user's file)."""
    jpegs = sorted((synth_root / "VOCdevkit" / "VOC2012" / "JPEGImages").glob("*.jpg"))
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    for name, source in (("a.jpg", 0), ("a.png", 1), ("b.jpg", 2), ("sub/a.jpg", 3)):
        shutil.copy(jpegs[source], folder / name)
    return folder


def tree(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def cli_predict(weights, *args):
    from typer.testing import CliRunner

    from fastseg.cli import app
    return CliRunner().invoke(app, ["predict", *map(str, args), "--weights", str(weights), "--device", "cpu"])


@pytest.fixture
def tiny_weights(tmp_path):
    from fastseg.models.weights import model_metadata, save_model
    torch.manual_seed(0)
    return save_model(create_model("segnet", width=0.0625), tmp_path / "w.safetensors",
                      model_metadata("segnet", VOC, 0.0625))


def test_predict_refuses_an_out_inside_an_input_folder(photos, tiny_weights):
    before = tree(photos)
    for out in (photos, photos / "sub"):
        result = cli_predict(tiny_weights, photos, "--out", out)
        assert result.exit_code == 2
        assert " ".join(result.output.split()) == (f"Error: --out {out} is inside the input folder {photos}; choose "
                                                   "an --out outside it, so that no input can be overwritten.")
    assert tree(photos) == before


def test_predict_never_writes_over_a_file_it_did_not_write(photos, tiny_weights, tmp_path):
    before = tree(photos)
    result = cli_predict(tiny_weights, photos / "a.jpg", "--out", photos)  # a.png is the user's
    assert result.exit_code == 2
    assert " ".join(result.output.split()) == (f"Error: {photos / 'a.png'} already exists and was not written by "
                                               "predict; choose another --out or move that file away.")
    assert tree(photos) == before
    out = tmp_path / "masks"
    assert cli_predict(tiny_weights, photos / "b.jpg", "--out", out).exit_code == 0
    assert cli_predict(tiny_weights, photos / "b.jpg", "--out", out).exit_code == 0  # its own files: rewritten
    (out / "b.png").write_bytes(b"the user's now")  # replaced since: no longer predict's
    assert cli_predict(tiny_weights, photos / "b.jpg", "--out", out).exit_code == 2
    assert (out / "b.png").read_bytes() == b"the user's now"


def test_predict_mirrors_folders_and_keeps_names_distinct(photos, tiny_weights, tmp_path):
    out = tmp_path / "masks"
    result = cli_predict(tiny_weights, photos, "--out", out)
    assert result.exit_code == 0, result.output
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*.png"))
    assert written == ["a_jpg.png", "a_png.png", "b.png", "sub/a.png"]
    assert f"Wrote {len(written)} mask(s) and overlay(s) to {out}." in " ".join(result.output.split())
    assert (out / "sub" / "a_overlay.jpg").is_file() and (out / ".fastseg-predict.json").is_file()


def test_tiled_prediction_keeps_one_band_of_rows(monkeypatch):
    import warnings

    import fastseg.evaluate.predict as predict
    rows = []
    real = predict._band
    monkeypatch.setattr(predict, "_band", lambda c, n, w, d: rows.append(n) or real(c, n, w, d))
    image = np.random.default_rng(0).integers(0, 256, size=(400, 150, 3), dtype=np.uint8)
    image.setflags(write=False)  # as np.asarray(PIL image) is: no NumPy/torch warning either
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mask = predict_image(LocalModel(), image, "cpu", tile=64, overlap=16)
    assert mask.shape == (400, 150) and rows == [64]  # one band of tile rows for a 400-row image
