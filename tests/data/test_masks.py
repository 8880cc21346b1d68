import numpy as np
import pytest
from PIL import Image

from fastseg.constants import voc_palette
from fastseg.data.masks import label_edges, read_mask, write_palette_png, write_sbd_mat
from fastseg.errors import FastsegError


def sample_mask():
    mask = np.zeros((7, 9), np.uint8)
    mask[1:4, 2:6] = 15
    mask[5, :] = 255
    mask[6, 8] = 20
    return mask


def test_palette_matches_voc_colour_map():
    palette = np.array(voc_palette()).reshape(256, 3)
    assert tuple(palette[1]) == (128, 0, 0)
    assert tuple(palette[2]) == (0, 128, 0)
    assert tuple(palette[15]) == (192, 128, 128)
    assert tuple(palette[255]) == (224, 224, 192)


def test_palette_png_round_trip_keeps_void(tmp_path):
    mask = sample_mask()
    write_palette_png(mask, tmp_path / "m.png")
    assert Image.open(tmp_path / "m.png").mode == "P"
    out = read_mask(tmp_path / "m.png")
    assert out.dtype == np.uint8 and np.array_equal(out, mask)


def test_single_channel_index_png(tmp_path):
    mask = sample_mask()
    Image.fromarray(mask, mode="L").save(tmp_path / "aug.png")
    assert np.array_equal(read_mask(tmp_path / "aug.png"), mask)


def test_sbd_mat_with_sparse_boundaries(tmp_path):
    mask = sample_mask()
    mask[mask == 255] = 0  # SBD has no void band
    write_sbd_mat(mask, tmp_path / "x.mat")
    import scipy.io
    gt = scipy.io.loadmat(tmp_path / "x.mat")["GTcls"]
    boundary = gt[0]["Boundaries"][0][14, 0]
    assert hasattr(boundary, "toarray")  # loaded as a sparse matrix, as in the real files
    assert np.array_equal(read_mask(tmp_path / "x.mat"), mask)


def test_rgb_mask_is_refused(tmp_path):
    palette = np.array(voc_palette(), np.uint8).reshape(256, 3)
    Image.fromarray(palette[sample_mask()], mode="RGB").save(tmp_path / "rgb.png")
    with pytest.raises(FastsegError, match=r"rgb\.png is an RGB image; fastseg needs class indices"):
        read_mask(tmp_path / "rgb.png")


def test_missing_and_broken_files(tmp_path):
    with pytest.raises(FastsegError, match="does not exist"):
        read_mask(tmp_path / "none.png")
    (tmp_path / "bad.mat").write_bytes(b"not a mat file")
    with pytest.raises(FastsegError, match="is not an SBD cls .mat file"):
        read_mask(tmp_path / "bad.mat")


def test_rgb_mask_with_class_colours_in_no_particular_order(tmp_path):
    colours = (((200, 0, 0), 1), ((0, 0, 0), 0), ((255, 255, 255), 255), ((0, 0, 90), 3), ((10, 200, 10), 2))
    ids = np.array([[1, 0, 255, 3], [2, 2, 1, 0]], np.uint8)
    lookup = {i: rgb for rgb, i in colours}
    Image.fromarray(np.array([[lookup[i] for i in row] for row in ids], np.uint8)).save(tmp_path / "c.png")
    got = read_mask(tmp_path / "c.png", colours)
    assert got.dtype == np.uint8 and np.array_equal(got, ids)
    rgba = np.dstack([np.array([[lookup[i] for i in row] for row in ids], np.uint8), np.full((2, 4), 255, np.uint8)])
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    assert np.array_equal(read_mask(tmp_path / "a.png", colours), ids)


def test_an_unknown_colour_names_its_first_pixel(tmp_path):
    colours = (((200, 0, 0), 1), ((0, 0, 0), 0))
    rgb = np.zeros((3, 4, 3), np.uint8)
    rgb[1, 2] = (255, 255, 254)
    rgb[2, 0] = (1, 0, 0)
    Image.fromarray(rgb).save(tmp_path / "c.png")
    with pytest.raises(FastsegError) as err:
        read_mask(tmp_path / "c.png", colours)
    assert str(err.value) == (f"Mask file {tmp_path / 'c.png'} has colour 255 255 254 at pixel x=2, y=1, which no "
                              "class in the classes file has; add it to the classes file or fix the mask.")


def test_16_bit_and_unreadable_masks(tmp_path):
    Image.fromarray(np.array([[3, 255], [0, 7]], np.uint16)).save(tmp_path / "i16.png")
    assert read_mask(tmp_path / "i16.png").tolist() == [[3, 255], [0, 7]]
    Image.fromarray(np.array([[3, 256]], np.uint16)).save(tmp_path / "big.png")
    with pytest.raises(FastsegError, match="is an I;16 image|is an I image"):
        read_mask(tmp_path / "big.png")
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    with pytest.raises(FastsegError, match=r"bad\.png cannot be read as an image"):
        read_mask(tmp_path / "bad.png")


def edges_by_hand(labels):
    """Pixels with a 4-neighbour of another value, one pixel at a time (the reference for `label_edges`)."""
    h, w = labels.shape
    out = np.zeros((h, w), bool)
    for y in range(h):
        for x in range(w):
            for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
                if 0 <= y + dy < h and 0 <= x + dx < w and labels[y + dy, x + dx] != labels[y, x]:
                    out[y, x] = True
    return out


def test_label_edges_marks_both_sides_of_every_change_and_nothing_at_the_border():
    labels = np.array([[0, 0, 0, 0],
                       [0, 3, 3, 0],
                       [0, 0, 0, 0],
                       [5, 5, 5, 5]], np.uint8)
    expected = np.array([[0, 1, 1, 0],
                         [1, 1, 1, 1],
                         [1, 1, 1, 1],
                         [1, 1, 1, 1]], bool)
    assert np.array_equal(label_edges(labels), expected)
    rng = np.random.default_rng(0)
    for shape in ((1, 6), (6, 1), (9, 13)):
        labels = rng.integers(0, 3, shape)
        assert np.array_equal(label_edges(labels), edges_by_hand(labels))


def test_sbd_mat_holds_what_sbds_files_hold(tmp_path):
    """GTcls.Segmentation, CategoriesPresent (the classes 1..20 present, as a column) and Boundaries (20×1,
    class c's edge pixels in row c-1, empty for absent classes), read back with scipy itself."""
    import scipy.io
    mask = np.zeros((7, 9), np.uint8)
    mask[1:4, 2:6] = 15
    mask[6, 7:] = 20
    mask[0, 0] = 255
    write_sbd_mat(mask, tmp_path / "x.mat")
    gt = scipy.io.loadmat(tmp_path / "x.mat")["GTcls"][0, 0]
    assert gt["Segmentation"].dtype == np.uint8 and np.array_equal(gt["Segmentation"], mask)
    assert gt["CategoriesPresent"].tolist() == [[15], [20]]
    boundaries = gt["Boundaries"]
    assert boundaries.shape == (20, 1)
    for c in range(1, 21):
        region = mask == c
        expected = region & edges_by_hand(region)
        assert np.array_equal(boundaries[c - 1, 0].toarray(), expected), c
        assert boundaries[c - 1, 0].shape == mask.shape
    assert boundaries[14, 0].toarray().sum() == 10  # the 3×4 block's ring
    assert read_mask(tmp_path / "x.mat").tolist() == mask.tolist()


@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
def test_colour_masks_convert_with_colours_and_are_refused_without(tmp_path, mode):
    colours = [((10, 20, 30), 0), ((200, 0, 0), 1), ((0, 0, 0), 255)]
    ids = np.array([[0, 1, 255], [1, 1, 0]], np.uint8)
    lookup = {i: c for c, i in colours}
    rgb = np.array([[lookup[i] for i in row] for row in ids], np.uint8)
    pixels = rgb if mode == "RGB" else np.dstack([rgb, np.full(ids.shape, 77, np.uint8)])
    Image.fromarray(pixels, mode=mode).save(tmp_path / "c.png")
    assert read_mask(tmp_path / "c.png", colours).tolist() == ids.tolist()
    with pytest.raises(FastsegError, match=rf"c\.png is an {mode} image; fastseg needs class indices"):
        read_mask(tmp_path / "c.png")


def test_masks_in_other_pixel_modes_are_refused_naming_the_mode(tmp_path):
    Image.fromarray(np.array([[0.5, 1.0]], np.float32), mode="F").save(tmp_path / "f.tif")
    with pytest.raises(FastsegError, match=r"f\.tif is an F image; fastseg needs class indices \(a palette or "
                                           r"single-channel index PNG\), or colours for every class"):
        read_mask(tmp_path / "f.tif", [((0, 0, 0), 0)])
    Image.fromarray(np.array([[1, 0]], bool)).save(tmp_path / "one_bit.png")
    with pytest.raises(FastsegError, match="is an 1 image"):
        read_mask(tmp_path / "one_bit.png")
    Image.fromarray(np.array([[2, 255], [0, 1]], np.int32), mode="I").save(tmp_path / "i32.tif")
    got = read_mask(tmp_path / "i32.tif")
    assert got.dtype == np.uint8 and got.tolist() == [[2, 255], [0, 1]]


def test_an_unknown_colour_in_an_rgba_mask_is_named_by_its_rgb(tmp_path):
    """The alpha plane is dropped before the colours are looked up, in the error sentence too."""
    rgba = np.zeros((2, 3, 4), np.uint8)
    rgba[..., 3] = 255
    rgba[1, 2] = (9, 8, 7, 255)
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    with pytest.raises(FastsegError) as err:
        read_mask(tmp_path / "a.png", [((0, 0, 0), 0)])
    assert str(err.value) == (f"Mask file {tmp_path / 'a.png'} has colour 9 8 7 at pixel x=2, y=1, which no class in "
                              "the classes file has; add it to the classes file or fix the mask.")


def test_an_sbd_segmentation_saved_as_double_reads_as_uint8(tmp_path):
    """MATLAB saves doubles unless told otherwise: a GTcls written with scipy as float64 still reads as ids."""
    import scipy.io
    segmentation = np.array([[0.0, 15.0], [255.0, 3.0]])
    scipy.io.savemat(tmp_path / "d.mat", {"GTcls": {"Segmentation": segmentation}})
    got = read_mask(tmp_path / "d.mat")
    assert got.dtype == np.uint8 and got.tolist() == [[0, 15], [255, 3]]


def test_masks_from_argmax_int64_are_written_as_uint8_files(tmp_path):
    """predict's masks come from an argmax (int64): the PNG holds the same ids, the .mat a uint8 Segmentation
    and uint8 CategoriesPresent (class 1 included)."""
    import scipy.io
    ids = np.array([[1, 0, 255], [20, 1, 0]], np.int64)
    write_palette_png(ids, tmp_path / "m.png")
    with Image.open(tmp_path / "m.png") as img:
        assert img.mode == "P" and np.asarray(img).tolist() == ids.tolist()
    write_sbd_mat(ids, tmp_path / "m.mat")
    gt = scipy.io.loadmat(tmp_path / "m.mat")["GTcls"][0, 0]
    assert gt["Segmentation"].dtype == np.uint8 and gt["Segmentation"].tolist() == ids.tolist()
    assert gt["CategoriesPresent"].dtype == np.uint8 and gt["CategoriesPresent"].tolist() == [[1], [20]]
    write_sbd_mat(np.zeros((2, 2), np.int64), tmp_path / "background.mat")  # no class present: still uint8
    present = scipy.io.loadmat(tmp_path / "background.mat")["GTcls"][0, 0]["CategoriesPresent"]
    assert present.dtype == np.uint8 and present.size == 0
