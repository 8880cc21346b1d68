"""`predict`: overlapping tiles blended as documented (a numpy reference over the whole image), files
it must never overwrite, and exit 1 when an input cannot be read."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from fastseg.classes import VOC
from fastseg.cli import app
from fastseg.constants import IMAGENET_MEAN, IMAGENET_STD
from fastseg.errors import FastsegError
from fastseg.evaluate.predict import (
    IMAGE_SUFFIXES,
    MANIFEST,
    Uncertainty,
    image_classes,
    list_images,
    output_names,
    predict_files,
    predict_image,
    predict_padded,
    predict_tiled,
    predict_with_maps,
    taper,
    tile_starts,
    uncertainty_maps,
    uncertainty_names,
    write_uncertainty,
)
from fastseg.models import create_model
from fastseg.models.weights import model_metadata, save_model
from tests.conftest import runner


@pytest.mark.parametrize(("length", "tile", "overlap", "starts"), [
    (100, 40, 12, [0, 28, 56, 60]), (90, 40, 12, [0, 28, 50]), (64, 64, 8, [0]), (65, 64, 8, [0, 1]),
    (200, 64, 16, [0, 48, 96, 136]), (30, 64, 16, [0])])
def test_tile_starts_by_hand(length, tile, overlap, starts):
    assert tile_starts(length, tile, overlap) == starts


@pytest.mark.parametrize(("length", "tile", "overlap"), [(1000, 512, 64), (513, 512, 0), (777, 96, 95), (300, 64, 1)])
def test_tiles_cover_the_image_and_overlap_by_at_least_the_overlap(length, tile, overlap):
    starts = tile_starts(length, tile, overlap)
    assert starts[0] == 0 and starts[-1] + tile == length
    assert all(a + tile - b >= overlap for a, b in zip(starts, starts[1:], strict=False))
    assert all(b - a >= tile - overlap or b == length - tile for a, b in zip(starts, starts[1:], strict=False))


@pytest.mark.parametrize("length", [9, 40, 64, 512])
def test_taper_is_a_gaussian_of_an_eighth_of_the_window(length):
    i = np.arange(length)
    expected = np.exp(-0.5 * ((i - (length - 1) / 2) / (length / 8)) ** 2)
    assert taper(length).numpy() == pytest.approx(expected, rel=1e-5)


class WindowModel(nn.Module):
    """A 3×3 conv plus a ramp over the input's own width and height: each window sees a pixel
    differently, so how windows are placed and weighted decides every blended pixel."""

    def __init__(self, c: int = 4):
        super().__init__()
        torch.manual_seed(1)
        self.conv = nn.Conv2d(3, c, 3, padding=1)
        self.slope = torch.linspace(-3, 3, c).view(1, c, 1, 1)

    def forward(self, x):
        h, w = x.shape[-2:]
        ramp = torch.arange(w).view(1, 1, 1, w) / w + torch.arange(h).view(1, 1, h, 1) / (2 * h)
        return self.conv(x) + self.slope * ramp


def padded_black(side: int) -> np.ndarray:
    """3×side×side of black (0) once normalised: what padding is, before the model sees it."""
    black = -np.array(IMAGENET_MEAN) / np.array(IMAGENET_STD)
    return np.broadcast_to(black[:, None, None], (3, side, side)).copy()


def padded_logits(model, image: np.ndarray) -> torch.Tensor:
    """4×H×W logits of an H×W image fed as predict feeds it (black padding to 64, normalised)."""
    h, w = image.shape[:2]
    padded = padded_black(64)
    padded[:, :h, :w] = ((image / 255.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)).transpose(2, 0, 1)
    with torch.no_grad():
        return model(torch.from_numpy(padded).float()[None])[0, :, :h, :w]


def reference_tiled(model, image: np.ndarray, tops: list[int], lefts: list[int], tile: int) -> np.ndarray:
    """Whole-image numpy accumulation of each window's softmax, padded with black to 32 as predict
    (and evaluate) does, weighted by a Gaussian of sigma tile/8 on each axis."""
    return reference_blend(model, image, tops, lefts, tile)[0].argmax(0)


def reference_blend(model, image: np.ndarray, tops: list[int], lefts: list[int], tile: int,
                    temperature: float = 1.0):
    """(4×H×W weighted sums of the windows' softmax at `temperature`, H×W sums of the weights), in
    numpy; for a model with a `variance` (VarianceModel), 5×H×W with the variance blended last."""
    x = ((image / 255.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)).transpose(2, 0, 1)
    channels = 4 + hasattr(model, "variance")
    total, weights = np.zeros((channels, *image.shape[:2])), np.zeros(image.shape[:2])
    for top in tops:
        for left in lefts:
            win = padded_black(64)
            win[:, :tile, :tile] = x[:, top:top + tile, left:left + tile]
            with torch.no_grad():
                logits = model(torch.from_numpy(win).float()[None])[0, :, :tile, :tile].double().numpy() / temperature
            prob = np.exp(logits - logits.max(0)) / np.exp(logits - logits.max(0)).sum(0)
            if channels > 4:
                prob = np.concatenate([prob, model.variance[:, :tile, :tile].double().numpy()])
            g = np.exp(-0.5 * ((np.arange(tile) - (tile - 1) / 2) / (tile / 8)) ** 2)
            total[:, top:top + tile, left:left + tile] += prob * np.outer(g, g)
            weights[top:top + tile, left:left + tile] += np.outer(g, g)
    return total, weights


def numpy_maps(prob: np.ndarray) -> dict[str, np.ndarray]:
    """Confidence (the largest probability) and entropy in nats of C×H×W probabilities."""
    logs = np.log(np.where(prob > 0, prob, 1.0))
    return {"confidence": prob.max(0), "entropy": -(prob * logs).sum(0)}


def test_tiled_uncertainty_maps_are_those_of_the_blended_probabilities():
    image = np.random.default_rng(2).integers(0, 256, (100, 90, 3), dtype=np.uint8)
    model = WindowModel().eval()
    mask, maps = predict_with_maps(model, image, torch.device("cpu"), tile=40, overlap=12, maps=True)
    total, weights = reference_blend(model, image, [0, 28, 56, 60], [0, 28, 50], 40)
    expected = numpy_maps(total / weights)
    assert (mask != total.argmax(0)).sum() <= 5  # the classes too: the weight channel is not a class
    assert sorted(maps) == ["confidence", "entropy"]
    for name in expected:
        assert maps[name].dtype == np.float32 and maps[name].shape == (100, 90), name
        np.testing.assert_allclose(maps[name], expected[name], atol=1e-4, err_msg=name)
    assert predict_with_maps(model, image, torch.device("cpu"), tile=40, overlap=12)[1] is None


def test_uncertainty_maps_by_hand():
    """Confidence and entropy of 3 class channels; a fourth channel (Monte Carlo's variance) is passed through."""
    probs = torch.tensor([[[0.5, 1.0]], [[0.25, 0.0]], [[0.25, 0.0]], [[0.03, 0.07]]])
    maps = uncertainty_maps(probs, 3)
    assert maps["confidence"].tolist() == [[0.5, 1.0]]
    assert maps["entropy"].numpy() == pytest.approx(np.array([[1.5 * np.log(2), 0.0]]), abs=1e-6)
    assert maps["variance"].tolist()[0] == pytest.approx([0.03, 0.07])
    assert sorted(uncertainty_maps(probs[:3], 3)) == ["confidence", "entropy"]


def test_uncertainty_files_sit_beside_the_mask_and_hold_the_maps(tmp_path):
    from safetensors.numpy import load_file
    assert uncertainty_names(Path("sub/a.png")) == (Path("sub/a_uncertainty.safetensors"),
                                                     Path("sub/a_uncertainty.png"))
    image = np.random.default_rng(3).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    mask = np.zeros((20, 30), np.uint8)
    mask[5:, 10:] = 2
    maps = {"confidence": np.linspace(0.3, 1, 600, dtype=np.float32).reshape(20, 30),
            "entropy": np.linspace(0, 2, 600, dtype=np.float32).reshape(20, 30)[:, ::-1]}  # not contiguous
    (tmp_path / "sub").mkdir()
    manifest = {"sub/a.png": "earlier"}
    write_uncertainty(image, mask, maps, tmp_path, Path("sub/a.png"), manifest)
    stored = load_file(tmp_path / "sub/a_uncertainty.safetensors")
    assert sorted(stored) == ["confidence", "entropy"]
    for name in maps:
        assert np.array_equal(stored[name], maps[name]), name
    with Image.open(tmp_path / "sub/a_uncertainty.png") as picture:
        assert picture.format == "PNG" and picture.width > picture.height
    assert sorted(manifest) == ["sub/a.png", "sub/a_uncertainty.png", "sub/a_uncertainty.safetensors"]
    assert json.loads((tmp_path / MANIFEST).read_text()) == manifest


def test_tiled_prediction_equals_a_whole_image_blend_of_overlapping_windows():
    image = np.random.default_rng(0).integers(0, 256, (100, 90, 3), dtype=np.uint8)
    model = WindowModel().eval()
    got = predict_image(model, image, torch.device("cpu"), tile=40, overlap=12)
    expected = reference_tiled(model, image, [0, 28, 56, 60], [0, 28, 50], 40)
    assert got.dtype == np.uint8 and got.shape == (100, 90)
    assert (got != expected).sum() <= 5  # float32 against float64 near ties
    assert len(np.unique(got)) > 1


def test_an_image_within_one_tile_is_predicted_whole_and_padded():
    image = np.random.default_rng(1).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    model = WindowModel().eval()
    expected = padded_logits(model, image).argmax(0).numpy()
    got = predict_image(model, image, torch.device("cpu"), tile=64)
    assert (got != expected).sum() <= 2


def write_image(path, seed: int, size=(40, 36)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
    return path


def test_shared_stems_get_their_extension_in_the_name(tmp_path):
    images = [(tmp_path / "a.jpg", tmp_path.joinpath("a.jpg").relative_to(tmp_path)),
              (tmp_path / "a.png", tmp_path.joinpath("a.png").relative_to(tmp_path)),
              (tmp_path / "d" / "b.png", tmp_path.joinpath("d", "b.png").relative_to(tmp_path))]
    names = output_names(images)
    assert [str(n) for n in names.values()] == ["a_jpg.png", "a_png.png", "d/b.png"]


def test_predict_never_overwrites_a_users_overlay_or_mask(tmp_path):
    write_image(tmp_path / "in" / "a.png", 0)
    out = tmp_path / "out"
    out.mkdir()
    (out / "a_overlay.jpg").write_bytes(b"the user's own file")
    model = nn.Conv2d(3, 21, 1)
    with pytest.raises(FastsegError) as err:
        predict_files(model, [tmp_path / "in"], out, torch.device("cpu"))
    assert str(err.value) == (f"{out / 'a_overlay.jpg'} already exists and was not written by predict; choose "
                              "another --out or move that file away.")
    assert (out / "a_overlay.jpg").read_bytes() == b"the user's own file"
    assert sorted(p.name for p in out.iterdir()) == ["a_overlay.jpg"]


def test_predict_rewrites_its_own_outputs_but_not_ones_changed_since(tmp_path):
    write_image(tmp_path / "in" / "a.png", 0)
    out = tmp_path / "out"
    model = nn.Conv2d(3, 21, 1)
    for _ in range(2):
        report = predict_files(model, [tmp_path / "in"], out, torch.device("cpu"))
        assert report.written == [out / "a.png"] and report.failed == []
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST, "a.png", "a_overlay.jpg"]
    (out / "a.png").write_bytes(b"edited by hand")
    with pytest.raises(FastsegError, match="a.png already exists and was not written by predict"):
        predict_files(model, [tmp_path / "in"], out, torch.device("cpu"))
    assert (out / "a.png").read_bytes() == b"edited by hand"


def test_an_out_inside_the_input_folder_is_refused(tmp_path):
    write_image(tmp_path / "in" / "a.png", 0)
    with pytest.raises(FastsegError) as err:
        predict_files(nn.Conv2d(3, 21, 1), [tmp_path / "in"], tmp_path / "in" / "out", torch.device("cpu"))
    assert str(err.value) == (f"--out {tmp_path / 'in' / 'out'} is inside the input folder {tmp_path / 'in'}; choose "
                              "an --out outside it, so that no input can be overwritten.")
    assert not (tmp_path / "in" / "out").exists()


def test_masks_mirror_the_input_tree_in_the_models_classes(tmp_path):
    write_image(tmp_path / "in" / "sub" / "b.jpg", 2)
    model = nn.Conv2d(3, 21, 1)
    predict_files(model, [tmp_path / "in"], tmp_path / "out", torch.device("cpu"), palette=VOC.palette())
    with Image.open(tmp_path / "out" / "sub" / "b.png") as mask:
        assert mask.mode == "P" and mask.getpalette()[:9] == VOC.palette()[:9]
        image = np.asarray(Image.open(tmp_path / "in" / "sub" / "b.jpg").convert("RGB"))
        assert np.array_equal(np.asarray(mask), predict_image(model, image, torch.device("cpu")))
    assert Image.open(tmp_path / "out" / "sub" / "b_overlay.jpg").size == (36, 40)


def test_predict_exits_1_when_an_image_cannot_be_read(tmp_path):
    write_image(tmp_path / "in" / "a.png", 0, size=(32, 32))
    (tmp_path / "in" / "broken.png").write_bytes(b"not a png")
    weights = save_model(create_model("segnet", width=0.0625), tmp_path / "m.safetensors",
                         model_metadata("segnet", VOC, 0.0625))
    args = ["predict", str(tmp_path / "in"), "--weights", str(weights), "--out", str(tmp_path / "out")]
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    reason = "it is not an image file Pillow can read"
    assert f"Could not read {tmp_path / 'in' / 'broken.png'} ({reason}); skipped." in result.output
    assert (tmp_path / "out" / "a.png").is_file()
    (tmp_path / "in" / "broken.png").unlink()
    assert runner.invoke(app, args).exit_code == 0


PALETTE = [v for c in range(256) for v in ((7 * c) % 256, (31 * c + 5) % 256, (101 * c) % 256)]
"""A palette unlike VOC's, so a mask or overlay in VOC colours is told apart."""


def numpy_overlay(image: np.ndarray, mask: np.ndarray, palette: list[int]) -> np.ndarray:
    """Half image, half class colour, truncated to uint8."""
    colours = np.array(palette, np.float32).reshape(256, 3)[mask]
    return (image.astype(np.float32) * 0.5 + colours * 0.5).astype(np.uint8)


def test_overlays_are_blended_in_bands_in_the_given_colours(monkeypatch):
    import fastseg.evaluate.predict as predict
    rng = np.random.default_rng(3)
    image, mask = rng.integers(0, 256, (23, 9, 3), dtype=np.uint8), rng.integers(0, 21, (23, 9)).astype(np.uint8)
    monkeypatch.setattr(predict, "OVERLAY_ROWS", 5)
    assert np.array_equal(predict.banded_overlay(image, mask, PALETTE), numpy_overlay(image, mask, PALETTE))


def test_written_files_use_the_palette_tile_and_overlap_given(tmp_path):
    write_image(tmp_path / "in" / "b.png", 4, size=(100, 90))
    model = WindowModel().eval()
    report = predict_files(model, [tmp_path / "in"], tmp_path / "out", torch.device("cpu"), tile=40, overlap=12,
                           palette=PALETTE)
    image = np.asarray(Image.open(tmp_path / "in" / "b.png").convert("RGB"))
    expected = predict_image(model, image, torch.device("cpu"), tile=40, overlap=12)
    assert not np.array_equal(expected, predict_image(model, image, torch.device("cpu"), tile=40, overlap=0))
    with Image.open(report.written[0]) as mask:
        assert mask.getpalette() == PALETTE and np.array_equal(np.asarray(mask), expected)
    reference = tmp_path / "reference.jpg"
    Image.fromarray(numpy_overlay(image, expected, PALETTE)).save(reference, format="JPEG", quality=90)
    assert (tmp_path / "out" / "b_overlay.jpg").read_bytes() == reference.read_bytes()


def test_an_unreadable_image_is_reported_and_the_next_one_still_written(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.png").write_bytes(b"not a png")
    Image.fromarray(np.full((33, 35), 90, np.uint8), mode="L").save(tmp_path / "in" / "b.png")  # greyscale
    report = predict_files(nn.Conv2d(3, 21, 1), [tmp_path / "in"], tmp_path / "out", torch.device("cpu"))
    assert report.failed == [(tmp_path / "in" / "a.png", "it is not an image file Pillow can read")]
    assert report.written == [tmp_path / "out" / "b.png"]
    assert Image.open(tmp_path / "out" / "b.png").size == (35, 33)


def test_inputs_are_listed_from_every_folder_and_file(tmp_path):
    a, b = write_image(tmp_path / "x" / "a.png", 0), write_image(tmp_path / "y" / "s" / "b.jpg", 1)
    (tmp_path / "y" / "notes.txt").write_text("")
    assert list_images([tmp_path / "x", tmp_path / "y", a]) == [(a, Path("a.png")), (b, Path("s/b.jpg")),
                                                                 (a, Path("a.png"))]
    with pytest.raises(FastsegError) as err:
        list_images([tmp_path / "none.png"])
    assert str(err.value) == f"{tmp_path / 'none.png'} does not exist; pass image files or folders of images."


def test_no_image_in_the_inputs_is_one_sentence_naming_them(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "notes.txt").write_text("")
    with pytest.raises(FastsegError) as err:
        list_images([tmp_path / "a", tmp_path / "b"])
    assert str(err.value) == (f"No images to predict in {tmp_path / 'a'}, {tmp_path / 'b'} (looked for "
                              f"{', '.join(sorted(IMAGE_SUFFIXES))}); pass image files or folders that hold some.")
    assert ".bmp, .jpeg, .jpg, .png, .tif, .tiff, .webp" in str(err.value)


def test_two_inputs_bound_for_one_mask_are_refused_before_anything_is_written(tmp_path):
    a, b = write_image(tmp_path / "x" / "a.png", 0), write_image(tmp_path / "y" / "a.png", 1)
    with pytest.raises(FastsegError) as err:
        predict_files(nn.Conv2d(3, 21, 1), [tmp_path / "x", tmp_path / "y"], tmp_path / "out", torch.device("cpu"))
    assert str(err.value) == (f"{a} and {b} would both be written as a_png.png; predict them into separate --out "
                              "folders.")
    assert not (tmp_path / "out").exists()


class VarianceModel(WindowModel):
    """WindowModel with the `variance` attribute of a MonteCarlo model kept for maps (1×H×W, set by
    each forward): larger than any probability, so a variance taken for a class would win the argmax."""

    def __init__(self):
        super().__init__()
        self.variance = None

    def forward(self, x):
        h, w = x.shape[-2:]
        self.variance = 2 + torch.arange(h * w, dtype=torch.float32).view(1, h, w) / (h * w)
        return super().forward(x)


def test_probabilities_are_at_the_temperature_and_the_mc_variance_comes_last():
    image = np.random.default_rng(5).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    cpu, model, varied = torch.device("cpu"), WindowModel().eval(), VarianceModel().eval()
    logits = padded_logits(model, image)
    with torch.no_grad():
        assert torch.allclose(predict_padded(model, image, cpu)[0], logits.softmax(0), atol=1e-5)
        assert torch.allclose(predict_padded(model, image, cpu, 2.5)[0], (logits / 2.5).softmax(0), atol=1e-5)
        probs = predict_padded(varied, image, cpu, 2.5)[0]
    assert probs.shape == (5, 40, 50) and image_classes(probs, varied) == 4 and image_classes(probs[:4], model) == 4
    assert torch.allclose(probs[:4], (logits / 2.5).softmax(0), atol=1e-5)
    assert torch.equal(probs[4], varied.variance[0, :40, :50])
    mask, maps = predict_with_maps(varied, image, cpu, tile=64, temperature=2.5, maps=True)
    expected = (logits / 2.5).softmax(0).numpy()
    assert (mask != expected.argmax(0)).sum() <= 2 and len(np.unique(mask)) > 1  # float32 near ties
    assert sorted(maps) == ["confidence", "entropy", "variance"]
    np.testing.assert_allclose(maps["confidence"], expected.max(0), atol=1e-5)
    np.testing.assert_allclose(maps["entropy"], numpy_maps(expected)["entropy"], atol=1e-5)
    assert np.array_equal(maps["variance"], varied.variance[0, :40, :50].numpy())


def test_tiled_maps_blend_the_probabilities_at_the_temperature_and_the_variance():
    image = np.random.default_rng(6).integers(0, 256, (100, 90, 3), dtype=np.uint8)
    cpu, varied = torch.device("cpu"), VarianceModel().eval()
    with torch.no_grad():
        mask, maps = predict_tiled(varied, image, cpu, 40, 12, temperature=2.5, maps=True)
    total, weights = reference_blend(VarianceModel().eval(), image, [0, 28, 56, 60], [0, 28, 50], 40, 2.5)
    expected = numpy_maps(total[:4] / weights)
    assert (mask != total[:4].argmax(0)).sum() <= 5 and mask.max() < 4
    assert sorted(maps) == ["confidence", "entropy", "variance"]
    for name in expected:
        np.testing.assert_allclose(maps[name], expected[name], atol=1e-4, err_msg=name)
    np.testing.assert_allclose(maps["variance"], total[4] / weights, rtol=1e-5)


def test_tiled_prediction_defaults_to_temperature_1_and_no_maps():
    image = np.random.default_rng(7).integers(0, 256, (100, 90, 3), dtype=np.uint8)
    model = WindowModel().eval()
    with torch.no_grad():
        mask, maps = predict_tiled(model, image, torch.device("cpu"), 40, 12)
        at_one = predict_tiled(model, image, torch.device("cpu"), 40, 12, 1.0, True)
    total, weights = reference_blend(model, image, [0, 28, 56, 60], [0, 28, 50], 40)
    assert maps is None and np.array_equal(mask, at_one[0])
    np.testing.assert_allclose(at_one[1]["confidence"], (total / weights).max(0), atol=1e-5)


def test_predict_with_mc_writes_the_sampled_variance_and_the_mean_prediction(tmp_path):
    from safetensors.numpy import load_file

    from fastseg.evaluate.uncertainty import MonteCarlo
    from fastseg.models.dropout import MCDropout
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), MCDropout(0.5), nn.Conv2d(16, 4, 1))
    write_image(tmp_path / "in" / "c.png", 8, size=(30, 44))
    predict_files(model, [tmp_path / "in"], tmp_path / "out", torch.device("cpu"),
                  uncertainty=Uncertainty(mc=5, probs=True, temperature=1.0))
    image = np.asarray(Image.open(tmp_path / "in" / "c.png").convert("RGB"))
    mask, maps = predict_with_maps(MonteCarlo(model.eval(), 5, keep_variance=True), image, torch.device("cpu"),
                                   maps=True)
    stored = load_file(tmp_path / "out" / "c_uncertainty.safetensors")
    assert sorted(stored) == ["confidence", "entropy", "variance"] and stored["variance"].max() > 1e-3
    for name in maps:
        assert np.array_equal(stored[name], maps[name]), name
    with Image.open(tmp_path / "out" / "c.png") as written:
        assert np.array_equal(np.asarray(written), mask)
    deterministic = predict_with_maps(model, image, torch.device("cpu"), maps=True)[1]
    assert not np.allclose(deterministic["confidence"], maps["confidence"], atol=1e-3)


def test_the_uncertainty_picture_shows_the_prediction_in_the_given_colours(tmp_path):
    model = nn.Conv2d(3, 21, 1)
    nn.init.zeros_(model.weight)
    with torch.no_grad():
        model.bias.copy_(torch.arange(21) == 5).mul_(4.0)  # class 5 everywhere, confidence below 1
    write_image(tmp_path / "in" / "d.png", 9, size=(60, 80))
    predict_files(model, [tmp_path / "in"], tmp_path / "out", torch.device("cpu"), palette=PALETTE,
                  uncertainty=Uncertainty(probs=True))
    picture = np.asarray(Image.open(tmp_path / "out" / "d_uncertainty.png").convert("RGB")).reshape(-1, 3)
    ours, voc = PALETTE[15:18], VOC.palette()[15:18]
    assert (picture == ours).all(1).sum() > 1000 and (picture == voc).all(1).sum() == 0
    maps = json.loads((tmp_path / "out" / MANIFEST).read_text())
    assert sorted(maps) == ["d.png", "d_overlay.jpg", "d_uncertainty.png", "d_uncertainty.safetensors"]
