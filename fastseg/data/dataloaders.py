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
    TfmdDL,
)
from PIL import Image

from fastseg.constants import IMAGENET_MEAN, IMAGENET_STD, MIN_SIZE, VOC_CLASSES
from fastseg.data.masks import read_mask
from fastseg.data.samples import Sample
from fastseg.data.splits import DataRoots, LeakageReport, build_split, check_leakage
from fastseg.data.transforms import DEFAULT_CROP, AlbumentationsTransform, build_augmentation, pad_batch, padded_size
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
    skip_bad: bool = False           # leave out samples whose files fail the preflight (with a warning)

    def validate(self) -> None:
        """Raises FastsegError naming the first option out of range."""
        checks = [(self.crop >= MIN_SIZE, f"--crop {self.crop} is too small; use at least {MIN_SIZE} pixels."),
                  (self.bs >= 1, f"--bs {self.bs} must be at least 1."),
                  (self.val_bs is None or self.val_bs >= 1, f"--bs {self.val_bs} must be at least 1."),
                  (self.num_workers >= 0, f"--workers {self.num_workers} must be 0 (load in the main process) "
                                          "or more.")]
        for ok, message in checks:
            if not ok:
                raise FastsegError(message)

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
    """Build the training and validation splits, run (and print) the leakage check, then the preflight
    of every file they name; the validation samples come sorted by padded size (see `by_padded_size`)."""
    from fastseg.data.checks import preflight
    train = build_split(cfg.train_split, cfg.roots)
    valid = build_split(cfg.valid_split, cfg.roots)
    report = check_leakage(train, valid, cfg.train_split, cfg.valid_split)
    log(report.summary())
    splits = preflight({cfg.train_split: train, cfg.valid_split: valid}, cfg.roots, cfg.skip_bad, log)
    return splits[cfg.train_split], by_padded_size(splits[cfg.valid_split]), report


def header_size(path: Path) -> tuple[int, int]:
    """(H, W) of an image file, from its header."""
    with Image.open(path) as img:
        return img.size[1], img.size[0]


def by_padded_size(samples: list[Sample]) -> list[Sample]:
    """`samples` ordered by the size their images are padded to (then by id), so that validation
    batches of one padded size (`SizeGroupedDL`) are as full as the batch size allows."""
    return sorted(samples, key=lambda s: (padded_size([header_size(s.image)]), s.id))


def size_groups(items, bs: int):
    """Consecutive (image, mask, ...) items in batches of at most `bs` that share one padded size.

    A score must not depend on the batch size: an image padded further than its own next multiple
    of 32 gets different predictions near its edges, so no image is padded for another's sake."""
    batch, key = [], None
    for item in items:
        size = padded_size([tuple(item[1].shape[-2:])])
        if batch and (size != key or len(batch) == bs):
            yield batch
            batch = []
        batch.append(item)
        key = size
    if batch:
        yield batch


class SizeGroupedDL(TfmdDL):
    """fastai's TfmdDL whose unshuffled loaders (validation, evaluation) batch only images of one
    padded size, in order; shuffled (training) loaders batch as usual."""

    def chunkify(self, b):
        if self.shuffle or self.prebatched:
            return super().chunkify(b)
        return size_groups(b, self.bs)


def build_dataloaders(cfg: DataConfig, device=None, log=print) -> DataLoaders:
    """fastai DataLoaders: shuffled training crops; validation batches of equal padded size (each image
    padded to its own next multiple of 32), so validation scores do not depend on the batch size.

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
                             num_workers=cfg.num_workers, before_batch=pad_batch, device=device, dl_type=SizeGroupedDL,
                             drop_last=True, pin_memory=pin, persistent_workers=cfg.num_workers > 0)
