"""The fastai DataBlock over named splits: training crops, validation at native resolution."""

import functools
import os
import signal
from pathlib import Path

from fastai.vision.all import (
    DataBlock,
    DataLoaders,
    ImageBlock,
    IndexSplitter,
    MaskBlock,
    PILImage,
    PILMask,
    TfmdDL,
)

from fastseg.config import DataConfig
from fastseg.constants import VOC_CLASSES, padded_size
from fastseg.data.folder import split_note
from fastseg.data.images import read_image, shown_size
from fastseg.data.samples import Sample, sample_mask_array
from fastseg.data.splits import build_split, check_leakage, dataset_classes
from fastseg.data.transforms import AlbumentationsTransform, Normalise, build_augmentation, pad_batch
from fastseg.devices.transfer import NonBlockingLoader
from fastseg.errors import FastsegError


def sample_mask(sample: Sample) -> PILMask:
    return PILMask.create(sample_mask_array(sample))


def decoded_image(sample: Sample) -> PILImage:
    """The sample's image as shown, H×W×3 RGB (`fastseg.data.images.read_image`: EXIF orientation applied,
    16-bit and other modes converted)."""
    return PILImage.create(read_image(sample.image))


def segmentation_block(crop: int, augment: str, splitter, cache: bool = False,
                       codes: tuple[str, ...] = VOC_CLASSES) -> DataBlock:
    """`ImageBlock` + `MaskBlock(codes)` (the dataset's class names) over Sample lists; `splitter` is a
    fastai splitter (items → (train indices, valid indices)); only the training split is augmented.
    With `cache`, each image and mask is decoded once and then served from memory (for datasets that
    fit in it: the synthetic demo's images are ~40 kB decoded; VOC train-aug would need ~8 GB, and
    each loader worker process keeps its own copy). Nothing downstream writes into the cached images
    and masks: albumentations and fastai's ToTensor copy them."""
    return DataBlock(
        blocks=(ImageBlock, MaskBlock(codes=list(codes))),
        get_x=functools.cache(decoded_image) if cache else decoded_image,
        get_y=functools.cache(sample_mask) if cache else sample_mask, splitter=splitter,
        item_tfms=[AlbumentationsTransform(build_augmentation(augment, crop))],
        batch_tfms=[Normalise()],
    )


def paired_splits(cfg: DataConfig, log=print) -> tuple[list[Sample], list[Sample]]:
    """Build the training and validation splits, run (and print) the leakage check, then the preflight
    of every file they name; the validation samples come sorted by padded size (see `by_padded_size`)."""
    from fastseg.data.checks import preflight
    train = build_split(cfg.train_split, cfg.roots)
    valid = build_split(cfg.valid_split, cfg.roots)
    log(check_leakage(train, valid, cfg.train_split, cfg.valid_split).summary())
    note = split_note(cfg.roots.folder) if cfg.roots.folder is not None else None
    if note:
        log(note)
    splits = preflight({cfg.train_split: train, cfg.valid_split: valid}, cfg.roots, cfg.skip_bad, log)
    return splits[cfg.train_split], by_padded_size(splits[cfg.valid_split])


def header_size(path: Path) -> tuple[int, int]:
    """(H, W) of an image file as shown, from its header."""
    return shown_size(path)


def by_padded_size(samples: list[Sample]) -> list[Sample]:
    """`samples` ordered by the size their images are padded to (then by id), so that validation
    batches of one padded size (`SizeGroupedDL`) are as full as the batch size allows."""
    return sorted(samples, key=lambda s: (padded_size([header_size(s.image)]), s.id))


def size_groups(items, bs: int, size=lambda item: tuple(item[1].shape[-2:])):
    """The one batching rule of unshuffled loaders (validation, evaluation) and of evaluate's shards:
    consecutive `items` in batches of at most `bs` that share one padded size (`size(item)`: its
    (H, W); by default of an (image, mask, ...) item's mask).

    A score must not depend on the batch size: an image padded further than its own next multiple
    of 32 gets different predictions near its edges, so no image is padded for another's sake."""
    batch, key = [], None
    for item in items:
        padded = padded_size([size(item)])
        if batch and (padded != key or len(batch) == bs):
            yield batch
            batch = []
        batch.append(item)
        key = padded
    if batch:
        yield batch


def size_batches(sizes: list[tuple[int, int]], bs: int) -> list[list[int]]:
    """Sample indices ordered by padded size (then index), in `size_groups`' batches: the batches
    `SizeGroupedDL` forms from the samples in that order."""
    order = sorted(range(len(sizes)), key=lambda i: (padded_size([sizes[i]]), i))
    return list(size_groups(order, bs, size=sizes.__getitem__))


def sharded_batches(sizes: list[tuple[int, int]], bs: int, rank: int, world: int) -> list[list[int]]:
    """Process `rank` of `world`'s batches: batches rank, rank + world, ... of `size_batches`, so each
    process scores whole batches, as one process would, and every sample exactly once."""
    return size_batches(sizes, bs)[rank::world]


class SizeGroupedDL(NonBlockingLoader, TfmdDL):
    """fastai's TfmdDL whose unshuffled loaders (validation, evaluation) batch only images of one
    padded size, in order; shuffled (training) loaders batch as usual. Batches are copied to the
    device asynchronously from pinned memory (`NonBlockingLoader`); `shard` gives one process of
    several its whole batches."""

    shard_of: tuple[int, int] | None = None  # (rank, world size) of a sharded loader

    def wif(self):
        """In each loader worker process: Ctrl-C (SIGINT to the terminal's process group) is left to
        the training process, which stops after the current batch; a worker it killed would fail
        the batches still to come."""
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    def chunkify(self, b):
        if self.shuffle or self.prebatched:
            return super().chunkify(b)
        return size_groups(b, self.bs)

    def shard(self, rank: int, world: int) -> "SizeGroupedDL":
        """This unshuffled loader for process `rank` of `world`: batches rank, rank + world, ... of
        the batches one process forms (`sharded_batches`), so every sample is scored once, in the batch
        a single process would put it in, and nothing is repeated to even the shards out."""
        dl = self.new()
        dl.shard_of = (rank, world)
        dl.batches = sharded_batches([header_size(s.image) for s in self.items], self.bs, rank, world)
        return dl

    def get_idxs(self):
        idxs = super().get_idxs()
        if self.shard_of is None:
            return idxs
        return [idxs[i] for batch in self.batches for i in batch]

    def __len__(self):
        return len(self.batches) if self.shard_of is not None else super().__len__()


def loader_workers(cfg: DataConfig, cuda: bool) -> int:
    """cfg.num_workers, or for None: min(8, CPU count) loader processes on CUDA, 0 (the main process) on the CPU."""
    if cfg.num_workers is not None:
        return cfg.num_workers
    return min(8, os.cpu_count() or 1) if cuda else 0


def build_dataloaders(cfg: DataConfig, device=None, log=print) -> DataLoaders:
    """fastai DataLoaders: shuffled training crops; validation batches of equal padded size (each image
    padded to its own next multiple of 32), so validation scores do not depend on the batch size.

    Batches: images N×3×H×W float (ImageNet-normalised), masks N×H×W long with 255 for void.
    """
    train, valid = paired_splits(cfg, log)
    if cfg.bs > len(train):
        raise FastsegError(f"--bs {cfg.bs} is larger than the training split {cfg.train_split} "
                           f"({len(train)} images); use a batch size of at most {len(train)}.")
    block = segmentation_block(cfg.crop, cfg.augment, IndexSplitter(list(range(len(train), len(train) + len(valid)))),
                               cfg.cache, dataset_classes(cfg.roots).names)
    pin = device is not None and str(device).startswith("cuda")
    workers = loader_workers(cfg, pin)
    return block.dataloaders(train + valid, bs=cfg.bs, val_bs=cfg.val_bs or cfg.bs,
                             num_workers=workers, before_batch=pad_batch, device=device, dl_type=SizeGroupedDL,
                             drop_last=True, pin_memory=pin, persistent_workers=False)  # see devices.transfer
