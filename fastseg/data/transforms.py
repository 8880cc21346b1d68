"""Augmentation presets (albumentations, image and mask together) and validation padding.

Masks always use nearest-neighbour interpolation and are padded with IGNORE_INDEX, so void
stays void and padding is never scored.
"""

import random

import albumentations as A
import cv2
import numpy as np
import torch
from fastai.vision.all import ItemTransform, TensorImage, TensorMask

from fastseg.config import PRESETS
from fastseg.constants import DEFAULT_CROP, IGNORE_INDEX, padded_size
from fastseg.errors import FastsegError


def _pad_and_crop(crop: int) -> list:
    return [A.PadIfNeeded(min_height=crop, min_width=crop, border_mode=cv2.BORDER_CONSTANT,
                          fill=0, fill_mask=IGNORE_INDEX),
            A.RandomCrop(crop, crop)]


def build_augmentation(preset: str, crop: int = DEFAULT_CROP) -> A.Compose:
    """The training augmentation of a preset, ending in a crop×crop random crop.

    light: the SegNet seed's list. heavy: the skip-model seed's (flip, rotation, translation,
    scaling, Gaussian blur, colour jitter, brightness/contrast). none: pad and crop only.
    """
    if preset == "light":
        ops = [A.HorizontalFlip(), A.VerticalFlip(), A.RandomBrightnessContrast(),
               A.RandomScale(scale_limit=(-0.5, 1.0), p=1.0)]
    elif preset == "heavy":
        ops = [A.HorizontalFlip(),
               A.Affine(rotate=(-20, 20), translate_percent=(-0.1, 0.1), scale=(0.75, 1.25),
                        border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=IGNORE_INDEX, p=0.8),
               A.GaussianBlur(blur_limit=(3, 5), p=0.3), A.ColorJitter(p=0.5),
               A.RandomBrightnessContrast()]
    elif preset == "none":
        ops = []
    else:
        raise FastsegError(f"Unknown augmentation preset '{preset}'; choose one of: {', '.join(PRESETS)}.")
    return A.Compose(ops + _pad_and_crop(crop))


class AlbumentationsTransform(ItemTransform):
    """fastai item transform running one albumentations pipeline on (image, mask) of the training set.

    In: (PILImage H×W×3, PILMask H×W). Out: (TensorImage 3×crop×crop uint8, TensorMask crop×crop).
    Each item reseeds the pipeline from Python's `random`, which fastai seeds per worker and
    fastseg per epoch: albumentations' own generators would repeat across worker processes.
    """

    split_idx = 0  # training set only; validation keeps native resolution

    def __init__(self, aug: A.Compose):
        super().__init__()
        self.aug = aug

    def encodes(self, x):
        img, mask = x
        seed = random.getrandbits(63)
        self.aug.set_random_state(np.random.default_rng(seed), random.Random(seed))
        out = self.aug(image=np.asarray(img), mask=np.asarray(mask))
        image = TensorImage(torch.from_numpy(np.ascontiguousarray(out["image"])).permute(2, 0, 1))
        return image, TensorMask(torch.from_numpy(np.ascontiguousarray(out["mask"])))


def pad_batch(items: list) -> list:
    """fastai `before_batch`: pad each (image 3×H×W, mask H×W) to one common size divisible by 32.

    Images are padded with 0 and masks with IGNORE_INDEX at the bottom and right, so the original
    pixels keep their coordinates and padding is never scored.
    """
    h, w = padded_size([tuple(item[1].shape[-2:]) for item in items])
    return [(_pad(img, h, w, 0), _pad(mask, h, w, IGNORE_INDEX), *rest) for img, mask, *rest in items]


def _pad(t: torch.Tensor, h: int, w: int, value: int) -> torch.Tensor:
    if t.shape[-2:] == (h, w):
        return t
    out = t.new_full((*t.shape[:-2], h, w), value)
    out[..., : t.shape[-2], : t.shape[-1]] = t
    return out
