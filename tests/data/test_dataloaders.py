import shutil
from dataclasses import replace

import torch
from fastai.torch_core import set_seed

from fastseg.config import DataConfig
from fastseg.data.dataloaders import build_dataloaders


def _loaders(root, cache: bool):
    set_seed(0)  # fastai's loaders draw their shuffling generator when built
    cfg = DataConfig(voc=str(root / "VOCdevkit" / "VOC2012"), sbd=str(root / "benchmark_RELEASE" / "dataset"),
                     crop=48, bs=4, augment="light")
    return build_dataloaders(replace(cfg, cache=cache), device="cpu", log=lambda _: None)


def _epochs(dls) -> list[torch.Tensor]:
    """Every image and mask tensor of the next training epoch and of the validation set, in order."""
    return [t.clone() for dl in (dls.train, dls.valid) for batch in dl for t in batch]


def _same(got: list[torch.Tensor], want: list[torch.Tensor]) -> bool:
    return len(got) == len(want) and all(torch.equal(a, b) for a, b in zip(got, want, strict=True))


def test_cache_serves_the_same_batches_without_rereading_the_files(synth_copy):
    plain = _loaders(synth_copy, cache=False)
    first, second = _epochs(plain), _epochs(plain)
    cached = _loaders(synth_copy, cache=True)
    assert _same(_epochs(cached), first)
    for folder in ("JPEGImages", "SegmentationClass"):
        shutil.rmtree(synth_copy / "VOCdevkit" / "VOC2012" / folder)
    for folder in ("img", "cls"):  # the SBD-only ids' images and masks
        shutil.rmtree(synth_copy / "benchmark_RELEASE" / "dataset" / folder)
    assert _same(_epochs(cached), second)
