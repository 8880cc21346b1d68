"""The folder dataset (--data DIR): class files, pairing, splits, RGB colour masks, the checks."""

import math
import re

import numpy as np
import pytest
from PIL import Image

from fastseg.classes import VOC, ClassSet, read_classes, write_classes
from fastseg.config import SynthConfig
from fastseg.data.checks import check_dataset, preflight
from fastseg.data.folder import VAL_SHARE, folder_split, seeded_split, split_note
from fastseg.data.masks import read_mask
from fastseg.data.samples import sample_mask_array
from fastseg.data.splits import DataRoots, build_split, dataset_classes
from fastseg.data.synthetic import folder_classes, generate_folder
from fastseg.errors import FastsegError

TINY = SynthConfig(n_train=8, n_val=3, size=48, seed=5)


@pytest.fixture
def folder(tmp_path):
    return generate_folder(tmp_path / "shapes", TINY, num_classes=4)


@pytest.fixture
def colour_folder(tmp_path):
    return generate_folder(tmp_path / "rgb", TINY, num_classes=4, colour_masks=True)


def test_classes_file_reads_names_colours_and_the_void_line(tmp_path):
    path = tmp_path / "classes.txt"
    path.write_text("# a comment\n\nbackground 0 0 0\nroad sign 128 64 128\ncar 0 0 142\n"
                    "void: unlabelled 255 255 255\n")
    classes = read_classes(path)
    assert classes.names == ("background", "road sign", "car")
    assert classes.colours == ((0, 0, 0), (128, 64, 128), (0, 0, 142))
    assert (classes.void, classes.void_colour) == ("unlabelled", (255, 255, 255))
    assert classes.colour_ids()[-1] == ((255, 255, 255), 255)
    assert classes.palette()[3:6] == [128, 64, 128] and classes.palette()[765:] == [255, 255, 255]
    write_classes(classes, tmp_path / "again.txt")
    assert read_classes(tmp_path / "again.txt") == classes


def test_classes_file_edge_cases_a_user_writes(tmp_path):
    path = tmp_path / "classes.txt"
    path.write_bytes("\ufeffbackground\nroad\nvoid: 9 9 9\n".encode())  # a BOM, and the void colour alone
    classes = read_classes(path)
    assert classes.names == ("background", "road") and classes.background
    assert (classes.void, classes.void_colour) == ("void", (9, 9, 9))
    path.write_text("background\nvoid 255 255 255\n")  # a void label written without the colon
    with pytest.raises(FastsegError, match=r"line 2 names a class 'void'; write 'void: NAME \[R G B\]'"):
        read_classes(path)
    path.write_bytes(b"background\n\xff\xferoad\n")
    with pytest.raises(FastsegError, match="could not be read \\(not UTF-8 text\\)"):
        read_classes(path)


def test_classes_without_colours_use_the_voc_colour_map():
    classes = ClassSet(("sky", "tree"))
    assert classes.colour_ids() is None and classes.palette() == VOC.palette()
    assert not classes.background and VOC.background


@pytest.mark.parametrize("text, message", [
    ("background\n", "names 1 class(es); a dataset needs at least 2"),
    ("a\nb\na\n", "names 'a' twice; class names must be unique"),
    ("a 1 2 3\nb\n", "gives colours for some classes only"),
    ("a 1 2 3\nb 1 2 3\n", "gives colour 1 2 3 twice"),
    ("a 1 2 300\nb 4 5 6\n", "line 1: colour 1 2 300 is outside 0..255"),
])
def test_a_malformed_classes_file_is_one_sentence_naming_it(tmp_path, text, message):
    path = tmp_path / "classes.txt"
    path.write_text(text)
    with pytest.raises(FastsegError, match=re.escape(message)) as err:
        read_classes(path)
    assert str(path) in str(err.value)


def test_the_folder_splits_come_from_the_lists_or_the_seeded_90_10_split(folder):
    assert [s.id for s in folder_split("train", folder)] == [f"img_{i:04d}" for i in range(8)]
    assert [s.id for s in folder_split("val", folder)] == [f"img_{i:04d}" for i in range(8, 11)]
    assert split_note(folder) is None
    (folder / "val.txt").unlink()  # train.txt alone: val is every other stem
    assert [s.id for s in folder_split("val", folder)] == ["img_0008", "img_0009", "img_0010"]
    assert split_note(folder) == (f"Splits: train from {folder / 'train.txt'}, val the images of "
                                  f"{folder / 'images'} it does not list.")
    (folder / "train.txt").unlink()
    train, val = folder_split("train", folder), folder_split("val", folder)
    stems = sorted(p.stem for p in (folder / "images").iterdir())
    assert [s.id for s in val] == ["img_0008", "img_0009"]  # random.Random(0) shuffles the 11 sorted stems
    assert [s.id for s in train] == [s for s in stems if s not in ("img_0008", "img_0009")]
    assert len(val) == math.ceil(len(stems) * VAL_SHARE)
    assert seeded_split(list(reversed(stems))) == ([s.id for s in train], [s.id for s in val])  # disk order is moot
    assert split_note(folder) == (f"Splits: {folder} has no train.txt or val.txt, so 10% of its images (chosen with "
                                  "seed 0, the same on every machine) are val and the rest train; write the lists "
                                  "to choose.")


def test_images_of_any_suffix_pair_with_their_masks(folder):
    suffixes = {s.image.suffix for s in folder_split("train", folder)}
    assert suffixes == {".jpg", ".png"}  # the generator writes every fifth image as a PNG


def test_an_image_without_a_mask_is_named(folder):
    (folder / "masks" / "img_0003.png").unlink()
    with pytest.raises(FastsegError, match=r"img_0003\.\w+ has no partner .*masks/img_0003\.png"):
        folder_split("train", folder)


def test_a_list_naming_a_missing_stem_is_named(folder):
    (folder / "val.txt").write_text("img_0008\nnot_there\n")
    with pytest.raises(FastsegError, match=r"val\.txt names not_there, which .*images does not hold"):
        folder_split("val", folder)


def test_colour_masks_convert_exactly_to_the_index_masks(tmp_path, folder, colour_folder):
    index = build_split("train", DataRoots(None, folder=folder))
    colour = build_split("train", DataRoots(None, folder=colour_folder))
    assert colour[0].colours is not None and index[0].colours is not None  # both classes.txt give colours
    for a, b in zip(index, colour, strict=True):
        np.testing.assert_array_equal(sample_mask_array(a), sample_mask_array(b))
    assert 255 in sample_mask_array(colour[0])  # the outline colour is void


def test_an_unknown_colour_names_file_pixel_and_colour(colour_folder):
    sample = build_split("train", DataRoots(None, folder=colour_folder))[0]
    rgb = np.array(Image.open(sample.mask))
    rgb[2, 5] = (1, 2, 3)
    Image.fromarray(rgb).save(sample.mask)
    with pytest.raises(FastsegError, match=r"has colour 1 2 3 at pixel x=5, y=2, which no class"):
        sample_mask_array(sample)


def test_rgb_masks_without_colours_are_refused(colour_folder):
    mask = next((colour_folder / "masks").iterdir())
    with pytest.raises(FastsegError, match="colours for every class in the classes file"):
        read_mask(mask)


def test_check_data_counts_a_folder_dataset_and_flags_values_beyond_its_classes(folder):
    roots = DataRoots(None, folder=folder)
    report = check_dataset(roots)
    assert report.counts == {"train": 8, "val": 3} and report.leaks == [("train", "val", 0)] and not report.problems
    mask_path = folder / "masks" / "img_0001.png"
    mask = np.array(Image.open(mask_path))
    mask[0, 0] = 4  # the dataset has classes 0..3
    Image.fromarray(mask, mode="L").save(mask_path)
    problems = check_dataset(roots).problems
    assert [(p.path, p.message) for p in problems] == [
        (mask_path, "mask has values [4] outside 0..3 and 255 (the dataset has 4 classes)")]
    with pytest.raises(FastsegError, match=r"img_0001\.png: mask has values \[4\] outside 0\.\.3"):
        preflight({"train": build_split("train", roots)}, roots)


def test_a_voc_layout_dataset_takes_a_classes_file(roots, tmp_path):
    path = tmp_path / "mine.txt"
    write_classes(ClassSet(tuple(f"c{i}" for i in range(21))), path)
    mine = DataRoots(roots.voc, roots.sbd, classes=path)
    assert dataset_classes(mine).names[3] == "c3" and dataset_classes(roots) == VOC
    write_classes(ClassSet(("background", "thing")), path)  # two classes: the synthetic masks hold 0..20
    assert any("outside 0..1 and 255" in p.message for p in check_dataset(mine).problems)


def test_the_synthetic_folder_classes_are_distinct_and_named():
    classes = folder_classes(21)
    assert len(set(classes.names)) == 21 and len(set(classes.colours)) == 21
    assert classes.names[0] == "background" and classes.void_colour not in classes.colours
