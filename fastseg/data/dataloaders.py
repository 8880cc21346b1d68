"""The fastai DataBlock over named splits: training crops, validation at native resolution."""

from dataclasses import dataclass
from pathlib import Path

from fastai.vision.all import (
    DataBlock,
    DataLoaders,
    ImageBlock,
    IndexSplitter,
    MaskBlock,
    Normalize,
    PILImage,
    PILMask,
)

from fastseg.constants import IMAGENET_MEAN, IMAGENET_STD, MIN_SIZE, VOC_CLASSES
from fastseg.data.masks import read_mask
from fastseg.data.samples import Sample
from fastseg.data.splits import DataRoots, LeakageReport, build_split, check_leakage
from fastseg.data.transforms import DEFAULT_CROP, AlbumentationsTransform, build_augmentation, pad_batch
from fastseg.errors import FastsegError


@dataclass(frozen=True)
class DataConfig:
    """What to load and how; saved into every run directory."""

    voc: str
    sbd: str | None = None
    voc11: str | None = None
    train_split: str = "train-aug"   # the SegNet seed's training set
    valid_split: str = "seg11valid"  # the SegNet seed's validation set
    crop: int = DEFAULT_CROP
    augment: str = "light"
    bs: int = 32
    val_bs: int | None = None        # None: same as bs
    num_workers: int = 0
    cache: bool = False              # keep decoded images and masks in memory after their first read

    def validate(self) -> None:
        """Raises FastsegError naming the first option out of range."""
        if self.crop < MIN_SIZE:
            raise FastsegError(f"--crop {self.crop} is too small; use at least {MIN_SIZE} pixels.")
        if self.bs < 1:
            raise FastsegError(f"--bs {self.bs} must be at least 1.")

    @property
    def roots(self) -> DataRoots:
        return DataRoots(Path(self.voc), Path(self.sbd) if self.sbd else None,
                         Path(self.voc11) if self.voc11 else None)


def sample_image(sample: Sample):
    return sample.image


def sample_mask(sample: Sample) -> PILMask:
    return PILMask.create(read_mask(sample.mask))


def decoded_image(sample: Sample) -> PILImage:
    """The sample's RGB image, decoded (H×W×3) as ImageBlock would decode `sample_image`'s path."""
    return PILImage.create(sample.image)


def decoded_once(read):
    """`read(sample)` memoised per sample, for datasets that fit in memory (the synthetic demo's
    images are ~40 kB decoded; VOC train-aug would need ~8 GB, and each loader worker process keeps
    its own copy). Nothing downstream writes into the cached images and masks: albumentations and
    fastai's ToTensor copy them."""
    store = {}

    def get(sample: Sample):
        if sample not in store:
            store[sample] = read(sample)
        return store[sample]
    return get


def segmentation_block(crop: int, augment: str, splitter, cache: bool = False) -> DataBlock:
    """`ImageBlock` + `MaskBlock(VOC classes)` over Sample lists; `splitter` is a fastai splitter
    (items → (train indices, valid indices)); only the training split is augmented. With `cache`,
    each image and mask is decoded once and then served from memory."""
    return DataBlock(
        blocks=(ImageBlock, MaskBlock(codes=list(VOC_CLASSES))),
        get_x=decoded_once(decoded_image) if cache else sample_image,
        get_y=decoded_once(sample_mask) if cache else sample_mask, splitter=splitter,
        item_tfms=[AlbumentationsTransform(build_augmentation(augment, crop))],
        batch_tfms=[Normalize.from_stats(IMAGENET_MEAN, IMAGENET_STD)],
    )


def paired_splits(cfg: DataConfig, log=print) -> tuple[list[Sample], list[Sample], LeakageReport]:
    """Build the training and validation splits and run (and print) the leakage check."""
    train = build_split(cfg.train_split, cfg.roots)
    valid = build_split(cfg.valid_split, cfg.roots)
    report = check_leakage(train, valid, cfg.train_split, cfg.valid_split)
    log(report.summary())
    return train, valid, report


def build_dataloaders(cfg: DataConfig, device=None, log=print) -> DataLoaders:
    """fastai DataLoaders: shuffled training crops, validation padded per batch to a multiple of 32.

    Batches: images N×3×H×W float (ImageNet-normalised), masks N×H×W long with 255 for void.
    """
    cfg.validate()
    train, valid, _ = paired_splits(cfg, log)
    if cfg.bs > len(train):
        raise FastsegError(f"--bs {cfg.bs} is larger than the training split {cfg.train_split} "
                           f"({len(train)} images); use a batch size of at most {len(train)}.")
    block = segmentation_block(cfg.crop, cfg.augment, IndexSplitter(list(range(len(train), len(train) + len(valid)))),
                               cfg.cache)
    pin = device is not None and str(device).startswith("cuda")
    return block.dataloaders(train + valid, bs=cfg.bs, val_bs=cfg.val_bs or cfg.bs,
                             num_workers=cfg.num_workers, before_batch=pad_batch, device=device,
                             drop_last=True, pin_memory=pin, persistent_workers=cfg.num_workers > 0)
