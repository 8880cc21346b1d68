import numpy as np

from fastseg.data.synthetic import OBJECT_COLOURS, SHADE, draw_image


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
