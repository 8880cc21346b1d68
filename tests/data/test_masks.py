import numpy as np
import pytest
from PIL import Image

from fastseg.constants import voc_palette
from fastseg.data.masks import read_mask, write_palette_png, write_sbd_mat
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
