import random

import numpy as np
import pytest
import torch
from fastai.vision.all import PILImage, PILMask

from fastseg.constants import padded_size
from fastseg.data.transforms import PRESETS, AlbumentationsTransform, build_augmentation, pad_batch


def checker_pair(h=150, w=130, block=16):
    """A black/white checkerboard and the mask computed from it (1 = white), void stripes every 12 px."""
    yy, xx = np.mgrid[:h, :w]
    white = ((yy // block) + (xx // block)) % 2 == 0
    image = np.repeat(np.where(white, 255, 0).astype(np.uint8)[..., None], 3, axis=2)
    mask = white.astype(np.uint8)
    mask[(yy % 12) < 2] = 255
    return image, mask


def augment(preset, seed, crop=96):
    random.seed(seed)
    image, mask = checker_pair()
    tfm = AlbumentationsTransform(build_augmentation(preset, crop))
    out_img, out_mask = tfm.encodes((PILImage.create(image), PILMask.create(mask)))
    return out_img.numpy().transpose(1, 2, 0), out_mask.numpy()


@pytest.mark.parametrize("preset", PRESETS)
def test_void_survives_every_preset(preset):
    for seed in range(6):
        _, mask = augment(preset, seed)
        assert mask.shape == (96, 96)
        assert set(np.unique(mask).tolist()) <= {0, 1, 255}, "masks use nearest neighbour only"
        assert (mask == 255).any()


@pytest.mark.parametrize("preset", PRESETS)
def test_image_and_mask_stay_aligned(preset):
    for seed in range(6):
        image, mask = augment(preset, seed)
        grey = image.astype(float).mean(axis=2)
        labelled = mask != 255
        if labelled.sum() < 500:
            continue
        threshold = (grey[labelled & (mask == 1)].mean() + grey[labelled & (mask == 0)].mean()) / 2
        recomputed = (grey > threshold).astype(np.uint8)
        agreement = (recomputed[labelled] == mask[labelled]).mean()
        assert agreement > 0.9, (preset, seed, agreement)


def test_unknown_preset():
    from fastseg.errors import FastsegError
    with pytest.raises(FastsegError, match="Unknown augmentation preset 'wild'; choose one of: light, heavy, none."):
        build_augmentation("wild")


def test_validation_padding_keeps_pixels_and_voids_the_rest():
    a = (torch.ones(3, 45, 70, dtype=torch.uint8), torch.zeros(45, 70, dtype=torch.long))
    b = (torch.ones(3, 64, 33, dtype=torch.uint8), torch.ones(64, 33, dtype=torch.long))
    (img_a, mask_a), (img_b, mask_b) = pad_batch([a, b])
    assert padded_size([(45, 70), (64, 33)]) == (64, 96)
    assert img_a.shape == (3, 64, 96) and mask_b.shape == (64, 96)
    assert (mask_a[:45, :70] == 0).all() and (mask_a[45:] == 255).all() and (mask_a[:, 70:] == 255).all()
    assert (img_a[:, 45:] == 0).all() and (mask_b[:, 33:] == 255).all()
