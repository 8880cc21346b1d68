"""Class statistics: pixel counts from masks on disk (void never counted), median-frequency weights by
hand, the cache beside the data and class-weight files."""

import hashlib
import json

import numpy as np
import pytest

import fastseg.data.stats as stats
from fastseg.data.masks import write_palette_png
from fastseg.data.samples import Sample
from fastseg.data.stats import cached_class_pixels, class_pixel_counts, median_frequency_weights, read_weights_file
from fastseg.errors import FastsegError

MASKS = [np.array([[0, 0, 255], [1, 1, 255]], np.uint8), np.array([[1, 1], [2, 255]], np.uint8)]


def mask_samples(folder) -> list[Sample]:
    """Two palette-PNG masks with void pixels, each beside a grey JPEG of its size."""
    from PIL import Image
    samples = []
    for i, mask in enumerate(MASKS):
        write_palette_png(mask, folder / f"m{i}.png")
        Image.new("RGB", mask.shape[::-1], (128, 128, 128)).save(folder / f"m{i}.jpg")
        samples.append(Sample(f"m{i}", folder / f"m{i}.jpg", folder / f"m{i}.png"))
    return samples


def test_pixel_counts_leave_void_out_of_each_images_size(tmp_path):
    ticks = []
    pixels, image_pixels = class_pixel_counts(mask_samples(tmp_path), 4, progress=lambda: ticks.append(1))
    assert pixels.tolist() == [2, 4, 1, 0]
    assert image_pixels.tolist() == [4, 4 + 3, 3, 0]  # image 0 has 4 non-void pixels, image 1 has 3
    assert pixels.dtype == image_pixels.dtype == np.int64 and ticks == [1, 1]


def test_median_frequency_weights_by_hand():
    weights = median_frequency_weights(np.array([2, 4, 1, 0]), np.array([4, 7, 3, 0]))
    # f = 1/2, 4/7, 1/3 (class 3 never seen); median 1/2
    assert weights.tolist() == pytest.approx([1.0, 0.5 / (4 / 7), 1.5, 0.0])
    # a class seen only in a one-pixel image: f = 1 and 1/2, median 3/4
    assert median_frequency_weights(np.array([1, 2, 0]), np.array([1, 4, 0])).tolist() == pytest.approx([0.75, 1.5, 0])


def test_the_cache_is_written_once_and_read_back(tmp_path, monkeypatch):
    samples = mask_samples(tmp_path)
    ticks = []
    first = cached_class_pixels(samples, tmp_path / "a" / "cache", 4, progress=lambda: ticks.append(1))
    assert ticks == [1, 1]
    [cache] = (tmp_path / "a" / "cache").iterdir()
    listing = "\n".join(str(s.mask) for s in samples) + "\n4 classes"  # VOC's 21 classes add no line
    assert cache.name == f"class-pixels-{hashlib.sha1(listing.encode()).hexdigest()[:16]}.json"
    assert json.loads(cache.read_text()) == {"pixels": [2, 4, 1, 0], "image_pixels": [4, 7, 3, 0]}
    monkeypatch.setattr(stats, "class_pixel_counts", lambda *a, **k: pytest.fail("recounted"))
    again = cached_class_pixels(samples, tmp_path / "a" / "cache", 4)
    assert [a.tolist() for a in again] == [f.tolist() for f in first] and again[0].dtype == np.int64


def test_the_cache_key_follows_the_masks_the_class_count_and_the_colours(tmp_path):
    samples = mask_samples(tmp_path)
    cached_class_pixels(samples, tmp_path / "cache", 4)
    cached_class_pixels(samples[:1], tmp_path / "cache", 4)
    cached_class_pixels(samples, tmp_path / "cache", 5)
    coloured = [Sample(s.id, s.image, s.mask, (((0, 0, 0), 0),)) for s in samples]
    cached_class_pixels(coloured, tmp_path / "cache", 4)
    cached_class_pixels(coloured[:1], tmp_path / "cache", 4)
    cached_class_pixels(samples, tmp_path / "cache", 21)
    [voc] = [p for p in (tmp_path / "cache").iterdir() if p.read_text().count(",") == 41]
    listing = "\n".join(str(s.mask) for s in samples)
    assert voc.name == f"class-pixels-{hashlib.sha1(listing.encode()).hexdigest()[:16]}.json"
    assert len(list((tmp_path / "cache").iterdir())) == 6


def test_an_unwritable_cache_folder_only_costs_a_recount(tmp_path):
    (tmp_path / "file").write_text("")
    pixels, _ = cached_class_pixels(mask_samples(tmp_path), tmp_path / "file" / "cache", 4)
    assert pixels.tolist() == [2, 4, 1, 0]


@pytest.mark.parametrize(("text", "values"), [("[1, 0.5, 2]", [1, 0.5, 2]), ("1\n0.5\n2\n", [1, 0.5, 2]),
                                              ("  [0, 0, 0]", [0, 0, 0])])
def test_weights_files_as_json_or_lines(tmp_path, text, values):
    (tmp_path / "w.txt").write_text(text)
    weights = read_weights_file(tmp_path / "w.txt", 3)
    assert weights.tolist() == values and weights.dtype == np.float64


@pytest.mark.parametrize(("text", "message"), [
    ("[1, 2]", "has 2 values; give 3 non-negative numbers, one per class."),
    ("1\n-1\n2", "has 3 values; give 3 non-negative numbers, one per class."),
    ("1\nx\n2", "could not be read (could not convert string to float: 'x'); give 3 numbers, one per line or as "
                "a JSON list.")])
def test_bad_weights_files_are_one_sentence(tmp_path, text, message):
    (tmp_path / "w.txt").write_text(text)
    with pytest.raises(FastsegError) as err:
        read_weights_file(tmp_path / "w.txt", 3)
    assert str(err.value) == f"Class weights file {tmp_path / 'w.txt'} {message}"


def test_training_class_pixels_of_a_voc_split_are_cached_beside_the_data(synth_copy):
    from PIL import Image

    from fastseg.config import DataConfig
    from fastseg.data.stats import class_stats_dir, training_class_pixels
    voc = synth_copy / "VOCdevkit" / "VOC2012"
    data = DataConfig(voc=str(voc), train_split="voc12-train")
    pixels, image_pixels = np.zeros(21, np.int64), np.zeros(21, np.int64)
    for image_id in (voc / "ImageSets" / "Segmentation" / "train.txt").read_text().split():
        mask = np.asarray(Image.open(voc / "SegmentationClass" / f"{image_id}.png"))
        counts = np.bincount(mask[mask != 255], minlength=256)[:21]
        pixels += counts
        image_pixels += np.where(counts > 0, (mask != 255).sum(), 0)
    got = training_class_pixels(data)
    assert [a.tolist() for a in got] == [pixels.tolist(), image_pixels.tolist()]
    assert class_stats_dir(data) == synth_copy / "VOCdevkit" / "fastseg-cache"
    assert len(list(class_stats_dir(data).glob("class-pixels-*.json"))) == 1


def test_training_class_pixels_of_a_folder_dataset_count_its_own_classes_under_a_bar(tmp_path, monkeypatch):
    """A 3-class folder dataset is counted in 3 classes (not VOC's 21), and the bar named "class
    frequencies" moves once per mask up to the number of training images."""
    import contextlib

    from PIL import Image

    from fastseg.config import DataConfig, SynthConfig
    from fastseg.data.stats import training_class_pixels
    from fastseg.data.synthetic import generate_folder
    bars = []

    @contextlib.contextmanager
    def fake_bar(description, total=None):
        bars.append([description, total, 0])
        yield lambda steps=1: bars[-1].__setitem__(2, bars[-1][2] + steps)
    monkeypatch.setattr(stats, "progress_bar", fake_bar)
    root = generate_folder(tmp_path / "shapes", SynthConfig(n_train=5, n_val=2, size=40, seed=2), num_classes=3)
    data = DataConfig(data=str(root))
    masks = [np.asarray(Image.open(p)) for p in sorted((root / "masks").glob("*.png"))
             if p.stem in (root / "train.txt").read_text().split()]
    pixels = sum(np.bincount(m[m != 255], minlength=3)[:3] for m in masks)
    got = training_class_pixels(data, 3)
    assert got[0].tolist() == pixels.tolist() and len(got[1]) == 3
    assert bars == [["class frequencies", len(masks), len(masks)]] and len(masks) == 5
