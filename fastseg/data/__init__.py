"""VOC / SBD data: readers, named splits, augmentation, the fastai DataBlock, synthetic data, downloads."""

from fastseg.data.masks import read_mask

__all__ = ["read_mask"]
