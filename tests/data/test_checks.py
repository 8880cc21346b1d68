import os
import shutil
import stat

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import fastseg.data.checks as checks
from fastseg.classes import VOC
from fastseg.cli import app
from fastseg.constants import voc_palette
from fastseg.data.checks import check_dataset, preflight
from fastseg.data.masks import write_palette_png
from fastseg.data.splits import DataRoots, build_split
from fastseg.errors import FastsegError

runner = CliRunner()


def roots_of(root):
    return DataRoots(root / "VOCdevkit" / "VOC2012", root / "benchmark_RELEASE" / "dataset")


def first_voc_id(root):
    return (root / "VOCdevkit/VOC2012/ImageSets/Segmentation/train.txt").read_text().split()[0]


def test_clean_tree_passes(synth_root):
    report = check_dataset(roots_of(synth_root))
    assert report.problems == []
    assert report.counts["train-aug"] == 22 and report.counts["seg11valid"] == 4
    assert all(shared == 0 for _, _, shared in report.leaks)
    result = runner.invoke(app, ["check-data", "--voc", str(synth_root / "VOCdevkit"),
                                 "--sbd", str(synth_root / "benchmark_RELEASE")])
    assert result.exit_code == 0, result.output
    assert "0 problem(s) found." in result.output


def test_each_problem_names_its_file(synth_copy):
    voc = synth_copy / "VOCdevkit" / "VOC2012"
    ids = (voc / "ImageSets/Segmentation/train.txt").read_text().split()
    (voc / "JPEGImages" / f"{ids[0]}.jpg").unlink()                                 # missing image
    (voc / "JPEGImages" / f"{ids[1]}.jpg").write_bytes(b"garbage")                  # unreadable image
    (voc / "SegmentationClass" / f"{ids[2]}.png").unlink()                          # missing mask
    write_palette_png(np.zeros((10, 10), np.uint8), voc / "SegmentationClass" / f"{ids[3]}.png")  # size
    bad = np.array(Image.open(voc / "SegmentationClass" / f"{ids[4]}.png"))
    bad[0, 0] = 42
    write_palette_png(bad, voc / "SegmentationClass" / f"{ids[4]}.png")             # value 42
    rgb = np.array(voc_palette(), np.uint8).reshape(256, 3)[bad.clip(0, 20)]
    Image.fromarray(rgb).save(voc / "SegmentationClass" / f"{ids[5]}.png")         # RGB mask
    problems = {p.path.name: p.message for p in check_dataset(roots_of(synth_copy)).problems}
    assert problems[f"{ids[0]}.jpg"] == "image is missing"
    assert problems[f"{ids[1]}.jpg"].startswith("image cannot be read")
    assert problems[f"{ids[2]}.png"] == "mask is missing"
    assert problems[f"{ids[3]}.png"].startswith("mask is 10×10 but its image is")
    assert problems[f"{ids[4]}.png"] == "mask has values [42] outside 0..20 and 255 (the dataset has 21 classes)"
    assert "is an RGB image" in problems[f"{ids[5]}.png"]
    result = runner.invoke(app, ["check-data", "--voc", str(voc), "--sbd", str(synth_copy / "benchmark_RELEASE")])
    assert result.exit_code == 1
    assert "6 problem(s) found; fix them and run check-data again." in result.output


def test_missing_voc_folder_is_one_sentence(tmp_path):
    result = runner.invoke(app, ["check-data", "--voc", str(tmp_path / "nowhere")])
    assert result.exit_code == 2
    assert result.output.strip().startswith(f"Error: VOC2012 folder {tmp_path / 'nowhere'} was not found")
    assert "Traceback" not in result.output


def test_show_batch_writes_both_grids(synth_root, tmp_path, monkeypatch):
    import fastseg.evaluate.figures
    drawn, draw = {}, fastseg.evaluate.figures.plot_batch

    def record(x, y, path, title, palette=None):
        drawn[path.name] = (x.shape, y.shape)
        return draw(x, y, path, title, palette)
    monkeypatch.setattr(fastseg.evaluate.figures, "plot_batch", record)
    data = ["--voc", str(synth_root / "VOCdevkit"), "--sbd", str(synth_root / "benchmark_RELEASE")]
    result = runner.invoke(app, ["show-batch", *data, "--crop", "64", "--n", "4", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert drawn["train_batch.png"] == ((4, 3, 64, 64), (4, 64, 64))  # --n samples, --crop crops
    (n, _, h, w), _ = drawn["valid_batch.png"]
    assert n == 4 and h % 32 == 0 and w % 32 == 0 and (h, w) != (64, 64)  # whole images, padded to 32
    for name in ("train_batch.png", "valid_batch.png"):
        image = Image.open(tmp_path / name)
        assert image.size[0] > 400 and len(set(image.convert("RGB").getdata())) > 50


def voc_of(root):
    return root / "VOCdevkit" / "VOC2012"


def ids_of(root, name="train"):
    return (voc_of(root) / f"ImageSets/Segmentation/{name}.txt").read_text().split()


def data_args(root):
    return ["--voc", str(voc_of(root)), "--sbd", str(root / "benchmark_RELEASE" / "dataset")]


def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 5])


def mask_path(root, sample_id):
    return voc_of(root) / "SegmentationClass" / f"{sample_id}.png"


def set_mask_value(path, value):
    mask = np.array(Image.open(path))
    mask[0, 0] = value
    write_palette_png(mask, path)


FAULTS = {
    "truncated": (lambda p: truncate(p), "image is truncated"),
    "zero-byte": (lambda p: p.write_bytes(b""), "image is empty (0 bytes)"),
    "random-bytes": (lambda p: p.write_bytes(os.urandom(2000)),
                     "image cannot be read (it is not an image file Pillow can read)"),
    "missing": (lambda p: p.unlink(), "image is missing"),
}


@pytest.mark.parametrize("fault", FAULTS)
def test_check_data_finds_each_damaged_jpeg(synth_copy, fault):
    damage, message = FAULTS[fault]
    image = voc_of(synth_copy) / "JPEGImages" / f"{ids_of(synth_copy)[0]}.jpg"
    damage(image)
    result = runner.invoke(app, ["check-data", *data_args(synth_copy)])
    assert result.exit_code == 1
    assert f"{image}: {message}" in result.output
    assert result.output.count(str(image)) == 1  # each path printed once
    assert "1 problem(s) found; fix them and run check-data again." in result.output
    assert len(result.output.strip().splitlines()) == 2  # the problem and the count: no tables burying them


def test_empty_and_repeated_id_lists_are_problems(synth_copy):
    lists = voc_of(synth_copy) / "ImageSets/Segmentation"
    (lists / "train.txt").write_text("")
    val = (lists / "val.txt").read_text().split()
    (lists / "val.txt").write_text("\n".join(val + [val[0]]) + "\n")
    report = check_dataset(roots_of(synth_copy))
    assert {str(p) for p in report.problems} == {f"{lists / 'train.txt'}: id list is empty",
                                                 f"{lists / 'val.txt'}: id list names {val[0]} 2 times"}
    assert report.counts["voc12-train"] == 0 and report.counts["voc12-val"] == len(val)  # counted once


def test_decompression_bomb_is_a_problem_not_a_crash(synth_copy, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    image = voc_of(synth_copy) / "JPEGImages" / f"{ids_of(synth_copy)[0]}.jpg"
    assert checks.stored_image(image) == "image is larger than Pillow's limit of 100 pixels"


def preflight_of(root, names=("voc12-train", "voc12-val"), skip_bad=False, log=print):
    roots = roots_of(root)
    return preflight({n: build_split(n, roots) for n in names}, roots, skip_bad, log)


def test_preflight_refuses_with_one_sentence_naming_the_file(synth_copy):
    mask = mask_path(synth_copy, ids_of(synth_copy, "val")[0])
    set_mask_value(mask, 77)
    with pytest.raises(FastsegError) as err:
        preflight_of(synth_copy)
    assert str(err.value) == (f"{mask}: mask has values [77] outside 0..20 and 255 (the dataset has 21 "
                              "classes); fix or remove it, or pass --skip-bad to leave bad samples out.")


def test_preflight_size_mismatch_in_validation(synth_copy):
    mask = mask_path(synth_copy, ids_of(synth_copy, "val")[1])
    write_palette_png(np.zeros((10, 12), np.uint8), mask)
    truncate(voc_of(synth_copy) / "JPEGImages" / f"{ids_of(synth_copy)[0]}.jpg")
    with pytest.raises(FastsegError) as err:
        preflight_of(synth_copy)
    assert "(2 bad files in all; `fastseg check-data` lists them)" in str(err.value)
    assert str(err.value).startswith(f"{voc_of(synth_copy) / 'JPEGImages'}/{ids_of(synth_copy)[0]}.jpg: image is "
                                     "truncated") or f"{mask}: mask is 12×10 but its image is" in str(err.value)


def test_preflight_refuses_an_empty_split(synth_copy):
    (voc_of(synth_copy) / "ImageSets/Segmentation/val.txt").write_text("\n")
    with pytest.raises(FastsegError, match=r"^Split voc12-val has no images to use \(read from .*val.txt\); add "
                                           r"ids to the list or choose another split\.$"):
        preflight_of(synth_copy)


def test_skip_bad_leaves_bad_samples_out_with_a_warning(synth_copy):
    bad = ids_of(synth_copy)[2]
    image = voc_of(synth_copy) / "JPEGImages" / f"{bad}.jpg"
    image.write_bytes(b"")
    lines = []
    kept = preflight_of(synth_copy, skip_bad=True, log=lines.append)
    assert bad not in [s.id for s in kept["voc12-train"]]
    assert len(kept["voc12-train"]) == len(ids_of(synth_copy)) - 1
    assert lines == [f"--skip-bad: leaving out 1 bad file(s): {image}: image is empty (0 bytes)"]


def test_a_passed_check_is_cached_and_a_change_is_seen(synth_copy, monkeypatch):
    calls = []
    real = checks.check_sample
    monkeypatch.setattr(checks, "check_sample", lambda s, n: calls.append(s) or real(s, n))
    preflight_of(synth_copy)
    first = len(calls)
    assert first == len(ids_of(synth_copy)) + len(ids_of(synth_copy, "val"))
    preflight_of(synth_copy)
    assert len(calls) == first  # the second run decodes nothing
    truncate(voc_of(synth_copy) / "JPEGImages" / f"{ids_of(synth_copy)[0]}.jpg")
    with pytest.raises(FastsegError, match="image is truncated"):
        preflight_of(synth_copy)


def test_read_only_data_folder_falls_back_silently(synth_copy):
    devkit = voc_of(synth_copy).parent
    mode = devkit.stat().st_mode
    devkit.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    try:
        if os.access(devkit, os.W_OK):
            pytest.skip("running as a user who can write anywhere")
        preflight_of(synth_copy)
        preflight_of(synth_copy)
        assert not (devkit / "fastseg-cache").exists()
    finally:
        devkit.chmod(mode)


def test_the_preflight_cache_notices_a_changed_mask(synth_copy):
    preflight_of(synth_copy)
    mask_path = voc_of(synth_copy) / "SegmentationClass" / f"{ids_of(synth_copy, 'val')[0]}.png"
    with Image.open(mask_path) as img:
        mask = np.array(img)
    mask[0, 0] = 40
    write_palette_png(mask, mask_path)
    with pytest.raises(FastsegError) as err:
        preflight_of(synth_copy)
    assert str(err.value) == (f"{mask_path}: mask has values [40] outside 0..20 and 255 (the dataset has 21 "
                              "classes); fix or remove it, or pass --skip-bad to leave bad samples out.")


def test_check_data_counts_leaks_between_each_training_and_evaluation_split(synth_copy):
    lists = voc_of(synth_copy) / "ImageSets" / "Segmentation"
    leaked = ids_of(synth_copy, "val")[:2]
    (lists / "train.txt").write_text((lists / "train.txt").read_text() + "".join(f"{i}\n" for i in leaked))
    ticks = []
    report = check_dataset(roots_of(synth_copy), progress=lambda: ticks.append(1))
    assert ("voc12-train", "voc12-val", 2) in report.leaks
    assert [(t, e) for t, e, _ in report.leaks] == [(t, e) for t in ("train-aug", "voc12-train")
                                                    for e in ("seg11valid", "voc12-val", "voc12-val-a", "voc12-val-b")]
    assert len(ticks) == 12 + 12 + 10  # each file pair once: VOC train, VOC val, SBD-only
    assert report.classes.names == VOC.names


def test_check_data_without_sbd_says_why_sbd_splits_are_missing(synth_root, tmp_path):
    report = check_dataset(DataRoots(voc_of(synth_root)))
    assert isinstance(report.counts["voc12-train"], int)
    assert report.counts["train-aug"] == "Split train-aug needs SBD; pass --sbd DIR (benchmark_RELEASE/dataset)."
    with pytest.raises(FastsegError, match="SBD"):
        check_dataset(DataRoots(voc_of(synth_root), tmp_path / "no-sbd"))


def test_orientation_problems_by_hand():
    """Every branch of `orientation_problems`, its sentences written out: an upright fit, a mismatch (with the
    stored size when the image is rotated), a rotation the mask fits both ways, and one it fits one way."""
    from pathlib import Path

    from fastseg.data.samples import Sample
    sample = Sample("a", Path("img/a.jpg"), Path("masks/a.png"))
    assert checks.orientation_problems(sample, (30, 40), (30, 40), 1) == []
    mismatch, = checks.orientation_problems(sample, (30, 41), (30, 40), 1)
    assert (mismatch.path, mismatch.message, mismatch.note) == (sample.mask, "mask is 41×30 but its image is 40×30",
                                                                 False)
    rotated_mismatch, = checks.orientation_problems(sample, (31, 40), (30, 40), 6)
    assert rotated_mismatch.message == "mask is 40×31 but its image is 30×40 as shown (40×30 stored)"
    both, = checks.orientation_problems(sample, (30, 30), (30, 30), 6)
    assert both.path == sample.image and not both.note
    assert both.message == ("image is rotated when shown (EXIF orientation 6) and its mask fits both the stored and "
                            "the shown orientation, so which one it follows is unknown; save the image upright without "
                            "the EXIF orientation (e.g. with exiftool -Orientation= or any editor's export)")
    for mask, fit in (((40, 30), "shown"), ((30, 40), "stored")):
        note, = checks.orientation_problems(sample, mask, (30, 40), 8)
        assert (note.path, note.note) == (sample.image, True)
        assert note.message == (f"image is rotated when shown (EXIF orientation 8); its mask matches the {fit} "
                                "orientation, so both are used as shown")


def test_mask_array_names_what_is_wrong_in_the_preflights_words(tmp_path, monkeypatch):
    (tmp_path / "empty.png").write_bytes(b"")
    assert checks.mask_array(tmp_path / "empty.png") == "mask is empty (0 bytes)"
    assert checks.mask_array(tmp_path / "none.png") == "mask is missing"
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    reason = checks.mask_array(tmp_path / "bad.png")
    assert reason.startswith("cannot be read as an image (") and reason.endswith(")")
    write_palette_png(np.zeros((20, 20), np.uint8), tmp_path / "big.png")
    assert checks.mask_array(tmp_path / "big.png").shape == (20, 20)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 400 pixels: over twice the limit, an error
    assert checks.mask_array(tmp_path / "big.png") == "mask is larger than Pillow's limit of 100 pixels"
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 300)  # over the limit, under twice it: Pillow only warns
    assert checks.mask_array(tmp_path / "big.png") == "mask is larger than Pillow's limit of 300 pixels"


def id_list(root, name="train"):
    """The VOC id list `name`.txt of the synthetic tree at `root`."""
    return voc_of(root) / "ImageSets" / "Segmentation" / f"{name}.txt"


def small_folder(tmp_path, **kw):
    """A 4-class folder dataset of 4 training and 2 validation 32-px images (`kw`: generate_folder's options)."""
    from fastseg.config import SynthConfig
    from fastseg.data.synthetic import generate_folder
    return generate_folder(tmp_path / "f", SynthConfig(n_train=4, n_val=2, size=32, seed=1), num_classes=4, **kw)


def refusal_of(root, names) -> str:
    """The sentence the preflight of splits `names` of the synthetic tree at `root` refuses with."""
    with pytest.raises(FastsegError) as err:
        preflight_of(root, names=names)
    return str(err.value)


# --- issue 26: what the preflight and check-data say, decided from files written here -----------------------

def test_mask_array_reads_colour_masks_with_colours_and_names_them_without(tmp_path):
    colours = [((0, 0, 0), 0), ((200, 10, 10), 1)]
    rgb = np.zeros((2, 3, 3), np.uint8)
    rgb[0, 1] = (200, 10, 10)
    Image.fromarray(rgb).save(tmp_path / "c.png")
    assert checks.mask_array(tmp_path / "c.png", colours).tolist() == [[0, 1, 0], [0, 0, 0]]
    assert checks.mask_array(tmp_path / "c.png") == (
        "is an RGB image; fastseg needs class indices (a palette or single-channel index PNG), or colours for every "
        "class in the classes file to convert RGB masks")


def test_a_colour_mask_sample_of_a_folder_dataset_passes_check_sample(tmp_path):
    root = small_folder(tmp_path, colour_masks=True)
    sample = build_split("train", DataRoots(None, folder=root))[0]
    with Image.open(sample.mask) as img:
        assert img.mode == "RGB"
    assert checks.check_sample(sample, 4) == []


def test_mask_values_are_listed_up_to_eight(synth_copy):
    mask = mask_path(synth_copy, ids_of(synth_copy)[0])
    values = np.arange(30, 41, dtype=np.uint8)  # 11 values outside 0..20
    with Image.open(mask) as img:
        write_palette_png(np.resize(values, np.array(img).shape), mask)
    sample, = [s for s in build_split("voc12-train", roots_of(synth_copy)) if s.mask == mask]
    problem, = checks.check_sample(sample, 21)
    assert str(problem) == (f"{mask}: mask has values [30, 31, 32, 33, 34, 35, 36, 37] outside 0..20 and 255 (the "
                            "dataset has 21 classes)")


def test_a_bad_file_two_samples_share_is_reported_once(synth_copy):
    from fastseg.data.samples import Sample
    images = sorted((voc_of(synth_copy) / "JPEGImages").glob("*.jpg"))[:2]
    missing = synth_copy / "gone.png"
    problems = checks.check_samples([Sample("a", images[0], missing), Sample("b", images[1], missing)])
    assert [str(p) for p in problems] == [f"{missing}: mask is missing"]


def rotated_jpeg_with_its_stored_mask(root):
    """Store the first training image cropped to H×W with H ≠ W and EXIF orientation 6 (shown W×H), its mask
    cropped alike (the stored orientation): a note, not a problem. Returns (the image's path, (H, W))."""
    sample_id = ids_of(root)[0]
    image = voc_of(root) / "JPEGImages" / f"{sample_id}.jpg"
    with Image.open(image) as img:
        pixels = np.array(img)
    h, w = pixels.shape[0], pixels.shape[1] - 1 if pixels.shape[1] - 1 != pixels.shape[0] else pixels.shape[1] - 2
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(pixels[:, :w]).save(image, exif=exif.tobytes())
    with Image.open(mask_path(root, sample_id)) as img:
        write_palette_png(np.array(img)[:, :w], mask_path(root, sample_id))
    return image, (h, w)


def test_stored_image_gives_the_stored_size_and_the_orientation(synth_copy):
    image, stored = rotated_jpeg_with_its_stored_mask(synth_copy)
    assert checks.stored_image(image) == (stored, 6)


def test_check_data_reports_a_rotation_the_mask_resolves_as_a_note(synth_copy):
    image, _ = rotated_jpeg_with_its_stored_mask(synth_copy)
    report = check_dataset(roots_of(synth_copy))
    assert report.problems == []
    assert [str(n) for n in report.notes] == [f"{image}: image is rotated when shown (EXIF orientation 6); its mask "
                                              "matches the stored orientation, so both are used as shown"]


def test_the_fingerprint_tells_a_missing_file_from_a_present_one(tmp_path):
    path = tmp_path / "m.png"
    missing = checks.fingerprint([path])
    path.write_bytes(b"x")
    assert len(missing) == 64 and missing != checks.fingerprint([path])
    path.unlink()
    assert checks.fingerprint([path]) == missing
    other = tmp_path / "other.png"
    other.write_bytes(b"y")
    assert checks.fingerprint([path, other]) != checks.fingerprint([other])  # a missing file still counts


def test_the_preflight_refuses_a_repeated_id_in_the_training_list(synth_copy):
    train = id_list(synth_copy)
    repeated = ids_of(synth_copy)[1]
    train.write_text(train.read_text() + f"{repeated}\n")
    assert refusal_of(synth_copy, ("voc12-train",)) == (
        f"{train}: id list names {repeated} 2 times; fix or remove it, or pass --skip-bad to leave bad samples out.")


def test_an_empty_training_list_is_named(synth_copy):
    train = id_list(synth_copy)
    train.write_text("\n")
    assert refusal_of(synth_copy, ("voc12-train",)) == (
        f"Split voc12-train has no images to use (read from {train}); add ids to the list or choose another split.")


def test_an_empty_split_of_several_lists_names_each_list(synth_copy):
    lists = [id_list(synth_copy, n) for n in ("train", "val")]
    lists += [synth_copy / "benchmark_RELEASE" / "dataset" / f"{n}.txt" for n in ("train", "val")]
    for path in lists:
        path.write_text("\n")
    assert refusal_of(synth_copy, ("train-aug",)) == (
        f"Split train-aug has no images to use (read from {', '.join(map(str, lists))}); add ids to the list or "
        "choose another split.")


def test_an_empty_folder_split_says_why(tmp_path):
    root = small_folder(tmp_path)
    (root / "val.txt").unlink()
    (root / "train.txt").write_text("".join(f"{p.stem}\n" for p in sorted((root / "images").iterdir())))
    roots = DataRoots(None, folder=root)
    with pytest.raises(FastsegError) as err:
        preflight({"val": build_split("val", roots)}, roots)
    assert str(err.value) == (f"Split val has no images: {root / 'train.txt'} lists every image of {root / 'images'} "
                              f"and there is no {root / 'val.txt'}; leave some out of train.txt or write val.txt.")


def test_skip_bad_lists_every_bad_file_and_refuses_a_split_it_empties(synth_copy):
    val = id_list(synth_copy, "val")
    first, second = ids_of(synth_copy, "val")[:2]
    val.write_text(f"{first}\n{second}\n")
    images = [voc_of(synth_copy) / "JPEGImages" / f"{i}.jpg" for i in (first, second)]
    for image in images:
        image.write_bytes(b"")
    lines = []
    with pytest.raises(FastsegError) as err:
        preflight_of(synth_copy, names=("voc12-val",), skip_bad=True, log=lines.append)
    assert lines == [f"--skip-bad: leaving out 2 bad file(s): {images[0]}: image is empty (0 bytes); "
                     f"{images[1]}: image is empty (0 bytes)"]
    assert str(err.value) == (f"Split voc12-val has no images to use (read from {val}); add ids to the list or "
                              "choose another split.")


def test_the_preflight_cache_notices_a_changed_classes_file(tmp_path):
    root = small_folder(tmp_path)
    roots = DataRoots(None, folder=root)
    preflight({"train": build_split("train", roots)}, roots)
    lines = (root / "classes.txt").read_text().splitlines()
    (root / "classes.txt").write_text("\n".join(lines[:3] + lines[4:]) + "\n")  # class 3 is gone
    with pytest.raises(FastsegError, match=r"mask has values \[3\] outside 0\.\.2 and 255 \(the dataset has 3 "):
        preflight({"train": build_split("train", roots)}, roots)


def test_each_passed_check_leaves_its_own_cache_file(synth_copy):
    cache = voc_of(synth_copy).parent / "fastseg-cache"
    shutil.rmtree(cache, ignore_errors=True)  # the shared tree's own passes came with the copy
    preflight_of(synth_copy, names=("voc12-val",))
    assert len(sorted(cache.glob("preflight-*.ok"))) == 1
    image = voc_of(synth_copy) / "JPEGImages" / f"{ids_of(synth_copy, 'val')[0]}.jpg"
    os.utime(image, ns=(image.stat().st_atime_ns, image.stat().st_mtime_ns + 10**9))  # same bytes, new mtime
    preflight_of(synth_copy, names=("voc12-val",))
    assert len(sorted(cache.glob("preflight-*.ok"))) == 2


def test_the_preflight_shows_one_progress_step_per_file_pair(synth_copy, monkeypatch):
    from contextlib import contextmanager
    bars = []

    @contextmanager
    def spy(description, total=None):
        bars.append([description, total, 0])
        yield lambda steps=1: bars[-1].__setitem__(2, bars[-1][2] + steps)
    monkeypatch.setattr(checks, "progress_bar", spy)
    preflight_of(synth_copy, names=("voc12-val",))
    n = len(ids_of(synth_copy, "val"))
    assert bars == [["checking files", n, n]]
