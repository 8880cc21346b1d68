"""Augmentation presets (albumentations, image and mask together), and the one input rule that
fit's validation, evaluate and predict share: pad the uint8 image with black (0) at the bottom and
right to the next multiple of 32 (`pad_to`, `pad_batch`), then scale to [0, 1], then normalise by
ImageNet's mean and std (`normalise`, `Normalise`); `model_input` does all three for one image.

Masks always use nearest-neighbour interpolation and are padded with IGNORE_INDEX, so void
stays void and padding is never scored.
"""

import random

import albumentations as A
import cv2
import numpy as np
import torch
from fastai.vision.all import ItemTransform, TensorImage, TensorMask, Transform

from fastseg.config import PRESETS
from fastseg.constants import DEFAULT_CROP, IGNORE_INDEX, IMAGENET_MEAN, IMAGENET_STD, padded_size
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
    """fastai `before_batch`: pad each (image 3×H×W uint8, mask H×W) to one common size divisible by 32.

    Images are padded with 0 (black, before normalisation) and masks with IGNORE_INDEX at the bottom
    and right, so the original pixels keep their coordinates and padding is never scored.
    """
    h, w = padded_size([tuple(item[1].shape[-2:]) for item in items])
    return [(pad_to(img, h, w, 0), pad_to(mask, h, w, IGNORE_INDEX), *rest) for img, mask, *rest in items]


def pad_to(t: torch.Tensor, h: int, w: int, value: int) -> torch.Tensor:
    """`t` (…×H'×W', H' ≤ h, W' ≤ w) padded with `value` at the bottom and right to …×h×w."""
    if t.shape[-2:] == (h, w):
        return t
    out = t.new_full((*t.shape[:-2], h, w), value)
    out[..., : t.shape[-2], : t.shape[-1]] = t
    return out


def _stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """ImageNet's mean and std as 3×1×1 tensors on `x`'s device, in its dtype."""
    def as_tensor(values):
        return torch.tensor(values, device=x.device, dtype=x.dtype).view(3, 1, 1)
    return as_tensor(IMAGENET_MEAN), as_tensor(IMAGENET_STD)


def normalise(x: torch.Tensor) -> torch.Tensor:
    """…×3×H×W float RGB in [0, 1] → (x - mean) / std with ImageNet's statistics."""
    mean, std = _stats(x)
    return (x - mean) / std


def denormalise(x: torch.Tensor) -> torch.Tensor:
    """Inverse of `normalise`: …×3×H×W normalised → RGB in [0, 1] (not clamped)."""
    mean, std = _stats(x)
    return x * std + mean


class Normalise(Transform):
    """fastai batch transform: `normalise` the images (N×3×H×W float in [0, 1], after fastai's
    IntToFloatTensor), leaving the masks alone."""

    order = 99  # after IntToFloatTensor (10), where fastai's Normalize runs

    def encodes(self, x: TensorImage):
        return normalise(x)

    def decodes(self, x: TensorImage):
        return denormalise(x)


def model_input(image: np.ndarray, device=None) -> torch.Tensor:
    """H×W×3 uint8 image → 1×3×H'×W' float model input, H' and W' the next multiples of 32: padded with
    black, scaled to [0, 1] and normalised, exactly as `evaluate` feeds its batches (a copy: the
    array may be read-only)."""
    x = torch.from_numpy(np.array(image)).to(device).permute(2, 0, 1)
    h, w = padded_size([tuple(x.shape[-2:])])
    return normalise(pad_to(x, h, w, 0).float().div(255)).unsqueeze(0)
