"""Options that must change what training does, watched inside a real (tiny) fit: Adam's momentum
under a flat schedule, the channels-last layout, fine-tuning with --freeze-epochs 0, the leakage
check and the NaN guard's exit code."""

import json
from dataclasses import replace

import pytest
import torch
from fastai.callback.core import Callback

from fastseg.classes import VOC
from fastseg.errors import FastsegError
from fastseg.models import create_model
from fastseg.models.weights import model_metadata, save_model
from fastseg.train.fit import fit
from tests.conftest import tiny_config


class Watch(Callback):
    """At each training batch: the optimizer's momentum and Adam's beta2 per group, the memory format of
    the images and of a conv weight; the encoder's first weight before and after the fit."""

    order = 60

    def before_fit(self):
        self.moms, self.layouts = set(), set()
        self.encoder = [self._encoder()]

    def _encoder(self):
        return self.learn.model.encoder.features[0].weight.detach().clone()

    def after_batch(self):
        if self.training:
            self.moms.add(tuple(h["mom"] for h in self.opt.hypers))
            weight = self.learn.model.encoder.features[0].weight
            self.layouts.add((self.xb[0].is_contiguous(memory_format=torch.channels_last),
                              weight.is_contiguous(memory_format=torch.channels_last)))

    def after_fit(self):
        self.encoder.append(self._encoder())


@pytest.fixture(scope="module")
def fine_tuned(synth_root, tmp_path_factory):
    """One epoch of Adam with --mom 0.8 on a flat schedule, channels-last, fine-tuning fastseg weights
    with --freeze-epochs 0."""
    runs = tmp_path_factory.mktemp("runs")
    torch.manual_seed(0)
    weights = save_model(create_model("segnet", width=0.0625), runs / "start.safetensors",
                         model_metadata("segnet", VOC, 0.0625))
    watch = Watch()
    run, _ = fit(tiny_config(synth_root, runs, "ft", epochs=1, opt="adam", mom=0.8, sched="flat", channels_last=True,
                             pretrained=str(weights), freeze_epochs=0), extra_cbs=[watch])
    return run, watch


def test_adam_takes_mom_as_its_momentum_on_a_flat_schedule(fine_tuned):
    run, watch = fine_tuned
    assert watch.moms == {(0.8, 0.8)}  # both parameter groups, every batch
    assert json.loads((run / "config.json").read_text())["moms"] == [0.8, 0.8, 0.8]


def test_channels_last_sets_the_layout_of_images_and_weights(fine_tuned):
    run, watch = fine_tuned
    assert watch.layouts == {(True, True)}
    assert json.loads((run / "config.json").read_text())["channels_last"] is True


def test_freeze_epochs_0_trains_the_encoder_of_fine_tuned_weights(fine_tuned):
    _, watch = fine_tuned
    before, after = watch.encoder
    assert not torch.equal(before, after)


def test_without_channels_last_the_layout_is_the_usual_one(synth_root, tmp_path):
    watch = Watch()
    fit(tiny_config(synth_root, tmp_path, "cf", epochs=1, channels_last=False), extra_cbs=[watch])
    assert watch.layouts == {(False, False)}


def test_a_fit_on_leaking_splits_is_refused(synth_copy, tmp_path):
    lists = synth_copy / "VOCdevkit" / "VOC2012" / "ImageSets" / "Segmentation"
    leaked = (lists / "val.txt").read_text().split()[0]
    (lists / "train.txt").write_text((lists / "train.txt").read_text() + f"{leaked}\n")
    cfg = tiny_config(synth_copy, tmp_path / "runs", "leak", epochs=1)
    cfg = replace(cfg, data=replace(cfg.data, train_split="voc12-train", valid_split="voc12-val"))
    with pytest.raises(FastsegError, match=f"{leaked}; evaluation images must not be trained on, so pick another "
                                           "pair of splits."):
        fit(cfg)
    assert not (tmp_path / "runs" / "leak" / "best.safetensors").exists()


class PoisonBatch(Callback):
    """Makes the third training batch's predictions NaN."""

    order = 0

    def after_pred(self):
        if self.training and self.iter == 2:
            self.learn.pred = self.pred * float("nan")


def test_a_nan_loss_exits_1(synth_root, tmp_path):
    with pytest.raises(FastsegError, match="loss became NaN at epoch 1, batch 3") as err:
        fit(tiny_config(synth_root, tmp_path, "nan", epochs=1), extra_cbs=[PoisonBatch()])
    assert err.value.exit_code == 1
