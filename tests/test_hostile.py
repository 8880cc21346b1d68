"""Nothing silently wrong, round two (issue 25): photos as users see them, options that mean what they
say, runs that refuse garbage. One CLI test per case the issue names."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from fastseg.classes import VOC
from fastseg.cli import app
from fastseg.models import create_model
from fastseg.models.weights import model_metadata, save_model
from tests.conftest import data_args, runner
from tests.test_reliability import fit_args, one_sentence

ORIENTATION = 0x0112  # the EXIF tag


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("w") / "w.safetensors"
    return save_model(create_model("skip", width=0.0625), path, model_metadata("skip", VOC, 0.0625))


@pytest.fixture(scope="module")
def run(synth_root, tmp_path_factory):
    """A finished one-epoch run (copy it before changing it)."""
    runs = tmp_path_factory.mktemp("runs")
    result = runner.invoke(app, fit_args(synth_root, runs, "--name", "base"))
    assert result.exit_code == 0, result.output
    return runs / "base"


def photo(h: int = 48, w: int = 96, seed: int = 0) -> np.ndarray:
    """An H×W×3 uint8 picture with structure (gradients and a block), not noise."""
    y, x = np.mgrid[0:h, 0:w]
    rgb = np.stack([x * 255 // w, y * 255 // h, (x + y) % 200], -1).astype(np.uint8)
    rgb[h // 4: h // 2, w // 8: w // 3] = (250, 30, 30)
    return rgb


def with_orientation(img: Image.Image, path, orientation: int):
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    img.save(path, exif=exif)
    return path


def predicted(weights, images, out):
    result = runner.invoke(app, ["predict", *map(str, images), "--weights", str(weights), "--out", str(out),
                                 "--device", "cpu"])
    assert result.exit_code == 0, result.output
    return result


# --- 1. one image reader --------------------------------------------------------------------------------------

def test_predict_masks_a_rotated_photo_as_the_user_sees_it(weights, tmp_path):
    rotated = with_orientation(Image.fromarray(photo()), tmp_path / "phone.jpg", 6)  # stored 96×48, shown 48×96
    shown = ImageOps.exif_transpose(Image.open(rotated))
    shown.save(tmp_path / "upright.png")
    predicted(weights, [rotated, tmp_path / "upright.png"], tmp_path / "out")
    mask = np.array(Image.open(tmp_path / "out" / "phone.png"))
    assert mask.shape == (96, 48)
    assert (mask == np.array(Image.open(tmp_path / "out" / "upright.png"))).all()
    assert Image.open(tmp_path / "out" / "phone_overlay.jpg").size == (48, 96)


def _twin(mode: str, grey: np.ndarray, rgb: np.ndarray, path):
    """A file in `mode` whose correct reading is `grey` (H×W) or `rgb` (H×W×3) as 8-bit; returns (path, twin)."""
    if mode == "I;16":
        Image.fromarray(grey.astype(np.uint16) * 257 + 100).save(path.with_suffix(".png"))  # rounds down to grey
        return path.with_suffix(".png"), np.repeat(grey[..., None], 3, -1)
    if mode == "I":
        Image.fromarray(grey.astype(np.int32) * 257 - 100, mode="I").save(path.with_suffix(".tif"))  # rounds up
        return path.with_suffix(".tif"), np.repeat(grey[..., None], 3, -1)
    if mode == "F":
        Image.fromarray(grey.astype(np.float32) / 255, mode="F").save(path.with_suffix(".tif"))
        return path.with_suffix(".tif"), np.repeat(grey[..., None], 3, -1)
    if mode == "LA":
        Image.fromarray(np.stack([grey, 255 - grey], -1), mode="LA").save(path.with_suffix(".png"))
        return path.with_suffix(".png"), np.repeat(grey[..., None], 3, -1)
    if mode == "P":
        img = Image.fromarray(rgb).quantize(16)
        img.info["transparency"] = 0
        img.save(path.with_suffix(".png"), transparency=0)
        return path.with_suffix(".png"), np.asarray(img.convert("RGB"))
    Image.fromarray(rgb).convert("CMYK").save(path.with_suffix(".tif"))
    return path.with_suffix(".tif"), rgb


@pytest.mark.parametrize("mode", ["I;16", "I", "F", "LA", "P", "CMYK"])
def test_predict_reads_every_mode_like_its_8bit_twin(weights, tmp_path, mode):
    rgb = photo()
    grey = rgb[..., 0] // 2 + 40  # mean near 95, as the photo
    odd, twin = _twin(mode, grey, rgb, tmp_path / "odd")
    Image.fromarray(twin).save(tmp_path / "twin.png")
    predicted(weights, [odd, tmp_path / "twin.png"], tmp_path / "out")
    overlays = [np.asarray(Image.open(tmp_path / "out" / f"{n}_overlay.jpg")) for n in ("odd", "twin")]
    assert np.abs(overlays[0].astype(int) - overlays[1]).max() <= 2


def test_a_mode_fastseg_cannot_convert_is_one_sentence(weights, tmp_path):
    path = tmp_path / "lab.tif"
    Image.fromarray(photo()).convert("LAB").save(path)
    result = runner.invoke(app, ["predict", str(path), "--weights", str(weights), "--out", str(tmp_path / "o"),
                                 "--device", "cpu"])
    assert result.exit_code == 1
    assert f"Could not read {path} (it holds LAB pixels, which fastseg does not convert to RGB; save it as 8-bit " \
           "RGB or greyscale); skipped." in " ".join(result.output.split())


@pytest.fixture
def shapes(tmp_path):
    data = tmp_path / "shapes"
    result = runner.invoke(app, ["synth", "--layout", "folder", "--classes", "3", "--out", str(data),
                                 "--n-train", "6", "--n-val", "2", "--size", "64"])
    assert result.exit_code == 0, result.output
    return data


def _rotate_sample(data, stem: str, orientation: int, mask_shown: bool):
    """Give `stem` a stored image that shows (with `orientation`) as the original; its mask stays in the
    shown orientation (`mask_shown`) or is stored like the image."""
    image = next((data / "images").glob(f"{stem}.*"))
    shown = Image.open(image).convert("RGB")
    stored = shown.transpose(Image.Transpose.ROTATE_90 if orientation == 6 else Image.Transpose.ROTATE_180)
    image.unlink()
    with_orientation(stored, data / "images" / f"{stem}.jpg", orientation)
    if not mask_shown:
        mask = Image.open(data / "masks" / f"{stem}.png")
        mask.transpose(Image.Transpose.ROTATE_90).save(data / "masks" / f"{stem}.png")
    return data / "images" / f"{stem}.jpg"


def _non_square(data, n: int = 3) -> list[str]:
    stems = sorted(p.stem for p in (data / "images").iterdir())
    return [s for s in stems if len(set(Image.open(next((data / "images").glob(f"{s}.*"))).size)) == 2][:n]


def test_check_data_names_rotated_images_and_refuses_the_ambiguous(shapes):
    shown, stored, square = _non_square(shapes)
    a = _rotate_sample(shapes, shown, 6, mask_shown=True)
    b = _rotate_sample(shapes, stored, 6, mask_shown=False)
    c = _rotate_sample(shapes, square, 3, mask_shown=True)  # 180°: the mask fits both ways
    result = runner.invoke(app, ["check-data", "--data", str(shapes)])
    output = " ".join(result.output.split())
    assert result.exit_code == 1, output
    assert f"{a}: image is rotated when shown (EXIF orientation 6); its mask matches the shown orientation" in output
    assert f"{b}: image is rotated when shown (EXIF orientation 6); its mask matches the stored orientation" in output
    assert (f"{c}: image is rotated when shown (EXIF orientation 3) and its mask fits both the stored and the shown "
            "orientation, so which one it follows is unknown; save the image upright without the EXIF orientation "
            "(e.g. with exiftool -Orientation= or any editor's export)") in output
    assert "1 problem(s) found" in output


def test_training_pairs_a_rotated_image_with_its_mask_either_way(shapes):
    from fastseg.data.dataloaders import decoded_image, sample_mask
    from fastseg.data.folder import folder_samples
    shown, stored = _non_square(shapes, 2)
    before = {s: np.asarray(Image.open(shapes / "masks" / f"{s}.png")) for s in (shown, stored)}
    _rotate_sample(shapes, shown, 6, mask_shown=True)
    _rotate_sample(shapes, stored, 6, mask_shown=False)
    samples = folder_samples(shapes)
    for stem in (shown, stored):
        image, mask = decoded_image(samples[stem]), np.asarray(sample_mask(samples[stem]))
        assert image.size == (mask.shape[1], mask.shape[0])
        assert (mask == before[stem]).all()  # the mask as drawn on the shown photo


def test_a_16bit_training_image_is_read_like_its_8bit_twin(shapes):
    from fastseg.data.dataloaders import decoded_image
    from fastseg.data.folder import folder_samples
    stem = sorted(p.stem for p in (shapes / "images").iterdir())[0]
    image = next((shapes / "images").glob(f"{stem}.*"))
    grey = np.asarray(Image.open(image).convert("L"))
    image.unlink()
    Image.fromarray(grey.astype(np.uint16) * 257 + 100).save(shapes / "images" / f"{stem}.png")
    result = runner.invoke(app, ["check-data", "--data", str(shapes)])
    assert result.exit_code == 0, result.output
    assert (np.asarray(decoded_image(folder_samples(shapes)[stem])) == grey[..., None]).all()


# --- 2. one validation of every option ------------------------------------------------------------------------

def test_epochs_0_is_refused_not_the_default(synth_root, tmp_path):
    args = [a if a != "1" else "0" for a in fit_args(synth_root, tmp_path / "runs")]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert one_sentence(result) == "Error: --epochs 0 must be at least 1."
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("line,message", [
    ("bs = 4.5", "bs = 4.5, which fit refuses: --bs must be a whole number."),
    ('epochs = "two"', "epochs = 'two', which fit refuses: --epochs must be a whole number."),
    ("epochs = 0", "epochs = 0, which fit refuses: --epochs 0 must be at least 1."),
    ("cache = 1", "cache = 1, which fit refuses: --cache must be true or false."),
    ('width = "wide"', "width = 'wide', which fit refuses: --width must be a number."),
    ("lr = nan", "lr = nan, which fit refuses: --lr nan must be a finite number."),
])
def test_a_recipe_value_of_the_wrong_type_is_one_sentence(synth_root, tmp_path, line, message):
    path = tmp_path / "r.toml"
    path.write_text(line + "\n")
    args = fit_args(synth_root, tmp_path / "runs")
    key = "--" + line.split()[0]
    if key in args:  # the recipe's value, not the command line's, is the one under test
        del args[args.index(key): args.index(key) + 2]
    result = runner.invoke(app, [*args, "--config", str(path)])
    assert result.exit_code == 2
    assert one_sentence(result) == f"Error: Recipe {path} sets {message}"
    assert not (tmp_path / "runs").exists()


def test_the_library_refuses_what_the_command_line_refuses(synth_root):
    from fastseg.config import DataConfig, FitConfig
    from fastseg.errors import FastsegError
    data = DataConfig(voc=str(synth_root))
    with pytest.raises(FastsegError, match=r"^--bs must be a whole number\.$"):
        DataConfig(voc=str(synth_root), bs=4.5)
    with pytest.raises(FastsegError, match=r"^--width inf must be a finite number\.$"):
        FitConfig(data=data, width=float("inf"))


@pytest.mark.parametrize("args,message", [
    (["--arch", "skip"], "--arch skip cannot change when resuming {run} (it was started with segnet); resume "
                         "without --arch, or start a new run with another --name."),
    (["--lr", "0.1"], "--lr 0.1 cannot change when resuming {run} (it was started with 0.005); resume without --lr, "
                      "or start a new run with another --name."),
    (["--crop", "64"], "--crop 64 cannot change when resuming {run} (it was started with 48); resume without "
                       "--crop, or start a new run with another --name."),
    (["--epochs", "0"], "--epochs 0 must be at least 1."),
])
def test_resume_refuses_an_option_the_run_cannot_change(run, tmp_path, args, message):
    copy = shutil.copytree(run, tmp_path / "r")
    before = (copy / "config.json").read_text()
    result = runner.invoke(app, ["fit", "--resume", str(copy), *args])
    assert result.exit_code == 2
    assert one_sentence(result) == "Error: " + message.format(run=copy)
    assert (copy / "config.json").read_text() == before


def test_resume_applies_and_records_what_can_change(run, tmp_path):
    copy = shutil.copytree(run, tmp_path / "r")
    result = runner.invoke(app, ["fit", "--resume", str(copy), "--epochs", "2", "--workers", "0", "--arch", "segnet"])
    assert result.exit_code == 0, result.output
    assert "Resuming with --workers 0 (the run was started with None)." in " ".join(result.output.split())
    config = json.loads((copy / "config.json").read_text())
    assert (config["epochs"], config["data"]["num_workers"]) == (2, 0)


@pytest.mark.parametrize("args,message", [
    (["--batch", "0"], "Error: --batch 0 must be at least 1."),
    (["--steps", "0"], "Error: --steps 0 must be at least 1."),
    (["--size", "8"], "Error: --size 8 is too small; use at least 32 pixels."),
])
def test_bench_refuses_0_instead_of_taking_the_default(tmp_path, args, message):
    result = runner.invoke(app, ["bench", "--device", "cpu", "--out", str(tmp_path / "b.md"), *args])
    assert result.exit_code == 2
    assert one_sentence(result) == message
    assert not (tmp_path / "b.md").exists()


# --- 3. a run that diverges stops -----------------------------------------------------------------------------

def test_a_diverging_run_stops_with_exit_1_and_no_best_model(synth_root, tmp_path):
    result = runner.invoke(app, fit_args(synth_root, tmp_path, "--name", "boom", "--lr", "1e6", "--epochs", "2"))
    assert result.exit_code == 1
    sentence = one_sentence(result)
    assert re.fullmatch(r"Error: The training loss (exploded to \S+ at epoch 1, batch \d \(over 100 times an "
                        r"untrained model's 3\.04\)|became NaN at epoch 1, batch \d); lower --lr \(1e\+06 now\) or "
                        r"set --clip, and start a new run\.", sentence)
    assert not (tmp_path / "boom" / "best.safetensors").exists()
    assert json.loads((tmp_path / "boom" / "failed.json").read_text())["error"] == sentence.removeprefix("Error: ")


def test_a_non_finite_validation_loss_stops_and_never_becomes_best(synth_root, tmp_path, monkeypatch):
    from fastseg.train.recorder import RunRecorder
    row = RunRecorder.epoch_row
    monkeypatch.setattr(RunRecorder, "epoch_row", lambda self: row(self) | {"valid_loss": float("nan")})
    result = runner.invoke(app, fit_args(synth_root, tmp_path, "--name", "nan"))
    assert result.exit_code == 1
    assert re.fullmatch(r"Error: The validation loss is NaN after epoch 1 \(training loss \S+\): the run diverged; "
                        r"lower --lr \(0\.005 now\) or set --clip, and start a new run\.", one_sentence(result))
    assert not (tmp_path / "nan" / "best.safetensors").exists()


# --- 4. unclear answers ---------------------------------------------------------------------------------------

def test_predict_of_an_empty_folder_is_exit_2(weights, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("")
    result = runner.invoke(app, ["predict", str(tmp_path / "empty"), "--weights", str(weights), "--out",
                                 str(tmp_path / "o")])
    assert result.exit_code == 2
    assert one_sentence(result) == (f"Error: No images to predict in {tmp_path / 'empty'} (looked for .bmp, .jpeg, "
                                    ".jpg, .png, .tif, .tiff, .webp); pass image files or folders that hold some.")
    assert not (tmp_path / "o").exists()


def test_both_exports_create_a_missing_parent_folder(weights, tmp_path):
    out = tmp_path / "no" / "such" / "dir" / "m.onnx"
    result = runner.invoke(app, ["export", str(weights), "--format", "onnx", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.is_file() and [p.name for p in out.parent.iterdir()] == ["m.onnx"]


def test_sigterm_during_evaluate_exits_130_with_a_sentence(synth_root, weights, tmp_path):
    shutil.copy(weights, tmp_path / "w.safetensors")
    code = ("import os, signal, sys; import fastseg.evaluate.scoring as s; real = s.evaluate_samples\n"
            "def cut(*a, **k):\n    os.kill(os.getpid(), signal.SIGTERM)\n    return real(*a, **k)\n"
            "s.evaluate_samples = cut; from fastseg.cli import app; sys.argv[0] = 'fastseg'; app()")
    args = ["evaluate", str(tmp_path / "w.safetensors"), "--split", "voc12-val", "--device", "cpu",
            *data_args(synth_root)]
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert out.returncode == 130, out.stderr[-2000:]
    assert out.stderr.strip().splitlines()[-1] == ("Stopped by SIGTERM; every file written so far is complete and "
                                                   "nothing half-written was left.")
    assert "Traceback" not in out.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.safetensors"]


def test_unreadable_inputs_are_named_by_their_fault(weights, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "text.jpg").write_text("not a picture")
    (photos / "loop.png").symlink_to(photos / "loop.png")
    result = runner.invoke(app, ["predict", str(photos), "--weights", str(weights), "--out", str(tmp_path / "o")])
    output = " ".join(result.output.split())
    assert result.exit_code == 1
    assert f"Could not read {photos / 'text.jpg'} (it is not an image file Pillow can read); skipped." in output
    assert f"Could not read {photos / 'loop.png'} (it is a symbolic link that loops); skipped." in output
    assert "Error)" not in output and "(OSError)" not in output


@pytest.mark.parametrize("target", ["itself", "gone"])
def test_a_broken_symlink_given_by_name_is_named_as_one(weights, tmp_path, target):
    link = tmp_path / "photo.png"
    link.symlink_to(link if target == "itself" else tmp_path / "deleted.png")
    for args, sentence in ((["predict", str(link), "--weights", str(weights)], f"{link} is a symbolic link"),
                           (["predict", str(weights), "--weights", str(link)],
                            f"Weights file {link} is a symbolic link")):
        result = runner.invoke(app, [*args, "--out", str(tmp_path / "o")])
        assert result.exit_code == 2
        assert f"{sentence} that loops or points nowhere;" in " ".join(result.output.split())
    assert not (tmp_path / "o").exists()


def test_an_empty_val_split_is_explained_by_what_it_is(shapes, tmp_path):
    stems = sorted(p.stem for p in (shapes / "images").iterdir())
    (shapes / "train.txt").write_text("\n".join(stems) + "\n")
    (shapes / "val.txt").unlink()
    result = runner.invoke(app, ["fit", "--data", str(shapes), "--runs-dir", str(tmp_path / "runs"), "--epochs", "1",
                                 "--width", "0.0625", "--pretrained", "none", "--bs", "2", "--crop", "32"])
    assert result.exit_code == 2
    assert one_sentence(result) == (f"Error: Split val has no images: {shapes / 'train.txt'} lists every image of "
                                    f"{shapes / 'images'} and there is no {shapes / 'val.txt'}; leave some out of "
                                    "train.txt or write val.txt.")


def test_a_run_folder_claimed_by_another_fit_is_refused_before_anything_else(synth_root, tmp_path):
    claimed = tmp_path / "same"
    claimed.mkdir()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (claimed / ".lock").write_text(f"{other.pid}\n")
        result = runner.invoke(app, fit_args(synth_root, tmp_path, "--name", "same"))
    finally:
        other.kill()
        other.wait()
    assert result.exit_code == 2
    assert one_sentence(result) == (f"Error: Run folder {claimed} is in use by process {other.pid} (see "
                                    f"{claimed / '.lock'}); choose another --name, or wait for it to finish.")
    assert "leakage" not in result.output.lower() and "checking" not in result.output  # refused before the data
    assert sorted(p.name for p in claimed.iterdir()) == [".lock"]


def _claim(path, barrier, results):
    from fastseg.errors import FastsegError
    from fastseg.io.runs import claim_run
    barrier.wait()
    try:
        with claim_run(path):
            results.put("won")
            barrier.wait()  # hold the folder until every process has tried
    except FastsegError:
        results.put("refused")
        barrier.wait()


def test_of_many_fits_started_at_once_with_one_name_exactly_one_takes_the_folder(tmp_path):
    import multiprocessing
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(4), ctx.Queue()
    procs = [ctx.Process(target=_claim, args=(tmp_path / "runs" / "same", barrier, results)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert sorted(results.get(timeout=5) for _ in procs) == ["refused"] * 3 + ["won"]


def test_failed_start_removes_the_folder_it_claimed(synth_root, tmp_path):
    args = [a if a != "none" else str(tmp_path / "nope.pth") for a in fit_args(synth_root, tmp_path / "runs")]
    result = runner.invoke(app, [*args, "--name", "x"])
    assert result.exit_code == 2
    assert not (tmp_path / "runs").exists()


def test_sigterm_is_restored_after_a_command(weights, tmp_path):
    before = signal.getsignal(signal.SIGTERM)
    runner.invoke(app, ["predict", str(tmp_path), "--weights", str(weights), "--out", str(tmp_path / "o")])
    assert signal.getsignal(signal.SIGTERM) is before
