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
    MANIFEST,
    output_names,
    predict_files,
    predict_image,
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


def reference_tiled(model, image: np.ndarray, tops: list[int], lefts: list[int], tile: int) -> np.ndarray:
    """Whole-image numpy accumulation of each window's softmax, padded with black to 32 as predict
    (and evaluate) does, weighted by a Gaussian of sigma tile/8 on each axis."""
    return reference_blend(model, image, tops, lefts, tile)[0].argmax(0)


def reference_blend(model, image: np.ndarray, tops: list[int], lefts: list[int], tile: int):
    """(4×H×W weighted sums of the windows' softmax, H×W sums of the weights), in numpy."""
    x = ((image / 255.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)).transpose(2, 0, 1)
    total, weights = np.zeros((4, *image.shape[:2])), np.zeros(image.shape[:2])
    for top in tops:
        for left in lefts:
            win = padded_black(64)
            win[:, :tile, :tile] = x[:, top:top + tile, left:left + tile]
            with torch.no_grad():
                logits = model(torch.from_numpy(win).float()[None])[0, :, :tile, :tile].double().numpy()
            prob = np.exp(logits - logits.max(0)) / np.exp(logits - logits.max(0)).sum(0)
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
    x = ((image / 255.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)).transpose(2, 0, 1)
    padded = padded_black(64)
    padded[:, :40, :50] = x
    with torch.no_grad():
        expected = model(torch.from_numpy(padded).float()[None])[0, :, :40, :50].argmax(0).numpy()
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
    from fastseg.evaluate.predict import list_images
    assert list_images([tmp_path / "x", tmp_path / "y", a]) == [(a, Path("a.png")), (b, Path("s/b.jpg")),
                                                                 (a, Path("a.png"))]
    with pytest.raises(FastsegError) as err:
        list_images([tmp_path / "none.png"])
    assert str(err.value) == f"{tmp_path / 'none.png'} does not exist; pass image files or folders of images."
