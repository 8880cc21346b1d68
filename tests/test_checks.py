import numpy as np
from PIL import Image
from typer.testing import CliRunner

from fastseg.cli import app
from fastseg.constants import voc_palette
from fastseg.data.checks import check_dataset
from fastseg.data.masks import write_palette_png
from fastseg.data.splits import DataRoots

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
    assert "does not exist" in problems[f"{ids[2]}.png"]
    assert problems[f"{ids[3]}.png"].startswith("mask is 10×10 but its image is")
    assert problems[f"{ids[4]}.png"] == "mask has values [42] outside 0..20 and 255"
    assert "is an RGB image" in problems[f"{ids[5]}.png"]
    result = runner.invoke(app, ["check-data", "--voc", str(voc), "--sbd", str(synth_copy / "benchmark_RELEASE")])
    assert result.exit_code == 1
    assert "6 problem(s) found." in result.output


def test_missing_voc_folder_is_one_sentence(tmp_path):
    result = runner.invoke(app, ["check-data", "--voc", str(tmp_path / "nowhere")])
    assert result.exit_code == 2
    assert result.output.strip().startswith(f"Error: VOC2012 folder {tmp_path / 'nowhere'} was not found")
    assert "Traceback" not in result.output


def test_show_batch_writes_both_grids(synth_root, tmp_path, monkeypatch):
    import fastseg.plots
    drawn, draw = {}, fastseg.plots.plot_batch

    def record(x, y, path, title):
        drawn[path.name] = (x.shape, y.shape)
        return draw(x, y, path, title)
    monkeypatch.setattr(fastseg.plots, "plot_batch", record)
    data = ["--voc", str(synth_root / "VOCdevkit"), "--sbd", str(synth_root / "benchmark_RELEASE")]
    result = runner.invoke(app, ["show-batch", *data, "--crop", "64", "--n", "4", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert drawn["train_batch.png"] == ((4, 3, 64, 64), (4, 64, 64))  # --n samples, --crop crops
    (n, _, h, w), _ = drawn["valid_batch.png"]
    assert n == 4 and h % 32 == 0 and w % 32 == 0 and (h, w) != (64, 64)  # whole images, padded to 32
    for name in ("train_batch.png", "valid_batch.png"):
        image = Image.open(tmp_path / name)
        assert image.size[0] > 400 and len(set(image.convert("RGB").getdata())) > 50
