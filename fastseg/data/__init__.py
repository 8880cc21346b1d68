"""The data wing: the one image reader (images: EXIF orientation, pixel modes), VOC / SBD readers
and mask formats (voc, sbd, masks, samples), the folder dataset
of a user's own images and classes (folder), the named splits, the dataset's classes and their
leakage check (splits), file checks (checks), training-split statistics such as class
pixel counts and median-frequency weights (stats), albumentations presets (transforms), the fastai
DataBlock (dataloaders), the synthetic dataset (synthetic) and the official downloads (download).

May import: fastseg's base modules (classes, config, console, constants, errors), fastseg.io and
fastseg.devices.transfer (the device copy of batches). Never models, train or evaluate.
"""
