import numpy as np
from PIL import Image

from fastseg.data.synthetic import OBJECT_COLOURS, SHADE, draw_image, save_jpeg


def object_levels(img: np.ndarray, region: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean RGB of the bright and the dark pixels of one object."""
    pix = img[region].astype(np.float64)
    lum = pix.mean(axis=1)
    dark = lum < (lum.min() + lum.max()) / 2
    return pix[~dark].mean(axis=0), pix[dark].mean(axis=0)


def test_objects_draw_their_texture_as_a_dark_shade_of_a_shared_pool_colour():
    rng = np.random.default_rng(3)
    classes_per_colour: dict[int, set[int]] = {}
    for _ in range(40):
        img, labels = draw_image(rng, 96, 80)
        for class_id in np.unique(labels[labels > 0]):
            region = labels == class_id
            if region.sum() < 300:  # mostly hidden under a later object
                continue
            bright, dark = object_levels(img, region)
            colour = int(np.argmin(np.abs(OBJECT_COLOURS - bright).sum(axis=1)))
            np.testing.assert_allclose(bright, OBJECT_COLOURS[colour], atol=8)
            np.testing.assert_allclose(dark, OBJECT_COLOURS[colour] * SHADE, atol=8)
            classes_per_colour.setdefault(colour, set()).add(int(class_id))
    assert len(classes_per_colour) == len(OBJECT_COLOURS)
    assert min(len(c) for c in classes_per_colour.values()) >= 3  # no colour belongs to a class


def test_images_are_saved_near_lossless_with_full_colour_resolution(tmp_path):
    img, _ = draw_image(np.random.default_rng(0), 112, 112)
    save_jpeg(img, tmp_path / "x.jpg")
    back = np.asarray(Image.open(tmp_path / "x.jpg").convert("RGB")).astype(int)
    # On this image, quality 92 with Pillow's default 4:2:0 errs by 10.2 per channel on average,
    # quality 92 at 4:4:4 by 4.4, and quality 98 at 4:4:4 by 1.4.
    assert np.abs(back - img).mean() < 2.5


def test_generated_files_do_not_depend_on_the_number_of_worker_processes(tmp_path):
    from fastseg.config import SynthConfig
    from fastseg.data.masks import read_mask
    from fastseg.data.synthetic import generate
    cfg = SynthConfig(n_train=4, n_val=3, n_sbd_only=3, size=48, seed=5)
    one, two = generate(tmp_path / "one", cfg, workers=0), generate(tmp_path / "two", cfg, workers=2)
    files = sorted(p.relative_to(one) for p in one.rglob("*") if p.is_file())
    assert len(files) == 34  # 7 VOC ids × (jpg, png), 7 SBD ids × (jpg, mat), 6 id lists
    for rel in files:
        if rel.suffix == ".mat":  # the .mat header holds its creation time
            np.testing.assert_array_equal(read_mask(one / rel), read_mask(two / rel))
        else:
            assert (one / rel).read_bytes() == (two / rel).read_bytes(), rel
