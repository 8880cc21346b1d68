"""Each `fit` option takes effect: tiny runs (width 0.0625, crop 48, bs 4) checked against what the
option promises, not only that the run finishes."""

import json

import numpy as np
import pytest
import torch
from fastai.callback.core import Callback
from fastai.callback.schedule import combined_cos

from fastseg.io.runs import read_metrics_csv
from fastseg.io.serialize import read_meta
from fastseg.train.fit import fit
from fastseg.train.schedule import POLY_POWER
from tests.conftest import tiny_config


class BatchCount(Callback):
    """Records the training batches per epoch (`n`)."""

    def before_train(self):
        self.n = len(self.dl)


def test_poly_schedule_decays_lr_as_one_minus_pct_to_the_0_9(synth_root, tmp_path):
    count = BatchCount()
    run, _ = fit(tiny_config(synth_root, tmp_path, "poly", epochs=2, sched="poly"), extra_cbs=[count])
    rows = read_metrics_csv(run / "metrics.csv")
    total = 2 * count.n
    for row in rows:  # the column holds the rate of each epoch's last batch
        pct = (row["epoch"] * count.n - 1) / total
        assert row["lr"] == pytest.approx(1e-2 * (1 - pct) ** POLY_POWER, rel=1e-6)
    assert rows[1]["lr"] < rows[0]["lr"] < 1e-2


def test_flat_schedule_keeps_lr_constant(synth_root, tmp_path):
    run, _ = fit(tiny_config(synth_root, tmp_path, "flat", epochs=2, sched="flat"))
    assert [r["lr"] for r in read_metrics_csv(run / "metrics.csv")] == [1e-2, 1e-2]


class Hypers(Callback):
    """Records the last parameter group's momentum at every training batch."""

    order = 60  # after ParamScheduler (order 60 too, added before extra callbacks) has set it

    def __init__(self):
        self.moms = []

    def after_batch(self):
        if self.training:
            self.moms.append(self.opt.hypers[-1]["mom"])


@pytest.mark.parametrize("mom", [0.9, 0.8])
def test_one_cycle_uses_mom_as_its_upper_momentum(synth_root, tmp_path, mom):
    seen = Hypers()
    run, _ = fit(tiny_config(synth_root, tmp_path, "m", epochs=1, opt="sgd", mom=mom), extra_cbs=[seen])
    config = json.loads((run / "config.json").read_text())
    assert config["moms"] == pytest.approx([mom, mom * 0.85 / 0.95, mom])
    cycle = combined_cos(0.25, *config["moms"])  # fastai's one-cycle momentum curve over the fit
    n = len(seen.moms)
    assert seen.moms == pytest.approx([cycle(i / n) for i in range(n)])
    assert seen.moms[0] == pytest.approx(mom) and min(seen.moms) < mom - 0.05  # starts at mom, then dips


def test_flat_schedule_keeps_mom_constant(synth_root, tmp_path):
    seen = Hypers()
    run, _ = fit(tiny_config(synth_root, tmp_path, "m", epochs=1, opt="sgd", mom=0.7, sched="flat"),
                 extra_cbs=[seen])
    assert set(seen.moms) == {0.7}
    assert json.loads((run / "config.json").read_text())["moms"] == [0.7, 0.7, 0.7]


class Autocast(Callback):
    """Records, at each training forward, whether CPU autocast was on and the predictions' dtype."""

    order = 5  # after_pred before the precision callback (order 10) casts predictions to fp32

    def __init__(self):
        self.seen, self.batch_losses = set(), []

    def after_pred(self):
        if self.training:
            self.seen.add((torch.is_autocast_enabled("cpu"), self.pred.dtype))

    def after_loss(self):
        if self.training:
            self.batch_losses.append(float(self.loss.detach()))


def test_bf16_trains_under_cpu_autocast_with_fp32_weights(synth_root, tmp_path):
    seen = Autocast()
    run, rows = fit(tiny_config(synth_root, tmp_path, "bf16", epochs=2, amp="bf16", device="cpu"),
                    extra_cbs=[seen])
    assert seen.seen == {(True, torch.bfloat16)}
    assert np.mean(seen.batch_losses[-3:]) < np.mean(seen.batch_losses[:3])
    assert json.loads((run / "config.json").read_text())["amp"] == "bf16"
    from fastseg.io.serialize import load_state
    assert {v.dtype for v in load_state(run / "last.safetensors")["model"].values() if v.is_floating_point()} \
        == {torch.float32}


def test_auto_precision_on_cpu_is_fp32_and_recorded_as_off(synth_root, tmp_path):
    seen = Autocast()
    run, _ = fit(tiny_config(synth_root, tmp_path, "auto", epochs=1, device="cpu"), extra_cbs=[seen])
    assert seen.seen == {(False, torch.float32)}
    config = json.loads((run / "config.json").read_text())
    assert config["amp"] == "off" and config["channels_last"] is False


def test_fp16_on_cpu_is_refused(synth_root, tmp_path):
    from tests.conftest import cli_fit
    result = cli_fit(synth_root, tmp_path, "--amp", "fp16", "--device", "cpu")
    assert result.exit_code == 2
    assert ("Error: --amp fp16 needs a CUDA device (its gradient scaler is CUDA-only); on cpu use --amp bf16 "
            "or --amp off.") in " ".join(result.output.split())
    assert not any(tmp_path.iterdir())


def test_bf16_on_a_cpu_without_bf16_instructions_warns(synth_root, tmp_path, monkeypatch):
    import fastseg.devices.precision
    from tests.conftest import cli_fit
    monkeypatch.setattr(fastseg.devices.precision, "cpu_has_bf16", lambda: False)
    result = cli_fit(synth_root, tmp_path, "--amp", "bf16", "--device", "cpu", "--name", "w")
    assert result.exit_code == 0, result.output
    warning = [line for line in result.output.splitlines() if line.startswith("Warning:")]
    assert warning == ["Warning: this CPU has no native bf16 instructions (avx512_bf16/amx_bf16); --amp bf16 "
                       "will be much slower than --amp off."]


def test_cpu_bf16_detection_reads_the_cpu_flags(tmp_path):
    from fastseg.devices.precision import cpu_has_bf16
    info = tmp_path / "cpuinfo"
    info.write_text("flags\t\t: fpu sse avx2 avx512f\n")
    assert not cpu_has_bf16(info)
    info.write_text("flags\t\t: fpu sse avx2 avx512f amx_bf16\n")
    assert cpu_has_bf16(info)


class FinalPredictions(Callback):
    """After the fit, the trained (possibly compiled, channels_last) model's argmax on a fixed batch."""

    order = 100

    def __init__(self, x):
        self.x = x

    def after_fit(self):
        self.learn.model.eval()
        fmt = torch.channels_last if self.learn.model.encoder.features[0].weight.is_contiguous(
            memory_format=torch.channels_last) else torch.contiguous_format
        with torch.no_grad():
            self.argmax = self.learn.model(self.x.to(memory_format=fmt)).argmax(1)


def fit_then_load_everywhere(synth_root, tmp_path, **options):
    """Fit one epoch with `options`; evaluate, predict and export its weights; returns (argmax of the
    trained model, argmax of the eagerly loaded weights) on one fixed batch."""
    from fastseg.evaluate.export import export_onnx
    from fastseg.evaluate.predict import predict_files
    from fastseg.evaluate.scoring import evaluate_run
    from fastseg.models.weights import load_model
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    final = FinalPredictions(x)
    run, _ = fit(tiny_config(synth_root, tmp_path, "r", epochs=1, device="cpu", **options), extra_cbs=[final])
    weights = run / "best.safetensors"
    _, metrics = evaluate_run(run)
    assert 0 <= metrics["miou"] <= 1
    image = sorted((synth_root / "VOCdevkit" / "VOC2012" / "JPEGImages").glob("*.jpg"))[0]
    assert len(predict_files(load_model(weights)[0], [image], tmp_path / "masks", "cpu").written) == 1
    assert export_onnx(weights, tmp_path / "m.onnx").is_file()
    with torch.no_grad():
        eager = load_model(weights)[0](x).argmax(1)
    return final.argmax, eager


def test_channels_last_run_loads_everywhere_and_agrees_with_eager(synth_root, tmp_path):
    trained, eager = fit_then_load_everywhere(synth_root, tmp_path, channels_last=True)
    assert json.loads((tmp_path / "r" / "config.json").read_text())["channels_last"] is True
    assert (trained == eager).float().mean() >= 0.999


@pytest.mark.slow
def test_compiled_run_loads_everywhere_and_agrees_with_eager(synth_root, tmp_path):
    from safetensors import safe_open
    trained, eager = fit_then_load_everywhere(synth_root, tmp_path, compile=True)
    with safe_open(str(tmp_path / "r" / "best.safetensors"), "pt") as f:
        assert not any(k.startswith("_orig_mod") for k in f.keys())
    assert (trained == eager).float().mean() >= 0.999


def test_bare_model_unwraps_compile_and_ddp():
    from fastseg.train.callbacks import bare_model
    model = torch.nn.Conv2d(3, 4, 1)
    compiled = torch.compile(model)
    assert bare_model(compiled) is model
    assert list(bare_model(compiled).state_dict()) == ["weight", "bias"]

    class Wrapper(torch.nn.Module):  # DistributedDataParallel keeps the model as .module
        def __init__(self, module):
            super().__init__()
            self.module = module
    assert bare_model(Wrapper(compiled)) is model


def write_lr_find(folder, arch, valley):
    folder.mkdir(parents=True)
    (folder / "lr_find.json").write_text(json.dumps({"valley": valley, "arch": arch}))


def test_lr_auto_prefers_the_run_folder_then_the_newest_of_the_same_arch(tmp_path):
    from fastseg.train.lr_find import resolve_lr
    cfg = tiny_config(tmp_path, tmp_path / "runs", "mine", lr="auto")
    write_lr_find(tmp_path / "runs" / "old", "segnet", 1e-3)
    write_lr_find(tmp_path / "runs" / "other-arch", "skip", 2e-3)
    assert resolve_lr(cfg, tmp_path / "runs" / "mine") == 1e-3
    write_lr_find(tmp_path / "runs" / "mine", "segnet", 3e-3)
    assert resolve_lr(cfg, tmp_path / "runs" / "mine") == 3e-3


def test_lr_auto_says_where_it_looked(tmp_path):
    from fastseg.errors import FastsegError
    from fastseg.train.lr_find import resolve_lr
    runs = tmp_path / "runs"
    write_lr_find(runs / "other-arch", "skip", 2e-3)
    with pytest.raises(FastsegError) as err:
        resolve_lr(tiny_config(tmp_path, runs, "mine", lr="auto"), runs / "mine")
    assert str(err.value) == (f"--lr auto found no lr_find result with a valley in {runs / 'mine' / 'lr_find.json'} "
                              f"nor in any {runs / '*' / 'lr_find.json'} of arch segnet; run `fastseg find-lr "
                              f"--arch segnet --runs-dir {runs}` first or pass a number.")


@pytest.mark.parametrize("voc", ["", "VOCdevkit", "VOCdevkit/VOC2012"])
def test_median_frequency_cache_lies_beside_the_data(synth_copy, tmp_path, voc):
    from dataclasses import replace

    from fastseg.data.stats import median_frequency_weights, training_class_pixels
    from fastseg.train.learner import class_weights
    cfg = tiny_config(synth_copy, tmp_path / "runs", "cw", class_weights="median-freq")
    cfg = replace(cfg, data=replace(cfg.data, voc=str(synth_copy / voc)))
    weights = class_weights(cfg, training_class_pixels(cfg.data))
    caches = list((synth_copy / "VOCdevkit" / "fastseg-cache").glob("class-pixels-*.json"))
    assert len(caches) == 1
    saved = json.loads(caches[0].read_text())
    cached = median_frequency_weights(np.array(saved["pixels"]), np.array(saved["image_pixels"]))
    assert cached == pytest.approx(weights.tolist())
    assert not (synth_copy.parent / "fastseg-cache").exists() and not (synth_copy / "fastseg-cache").exists()


def test_class_weights_scale_each_pixel_loss():
    from fastseg.train.losses import segmentation_loss
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]]).T.reshape(1, 2, 1, 3)  # N×C×H×W, 3 pixels
    target = torch.tensor([[[0, 1, 255]]])  # the third pixel is void
    per_pixel = torch.nn.functional.cross_entropy(logits, target, ignore_index=255, reduction="none")[0, 0]
    l0, l1 = float(per_pixel[0]), float(per_pixel[1])
    assert float(segmentation_loss()(logits, target)) == pytest.approx((l0 + l1) / 2)
    weighted = segmentation_loss(torch.tensor([1.0, 3.0]))(logits, target)
    assert float(weighted) == pytest.approx((l0 + 3 * l1) / 4)


@pytest.mark.parametrize("form", ["median-freq", "file"])
def test_class_weights_reach_the_learners_loss(synth_copy, tmp_path, form):
    from fastseg.data.dataloaders import build_dataloaders
    from fastseg.train.learner import build_learner
    expected = np.linspace(0.5, 2.5, 21)
    if form == "file":
        (tmp_path / "w.txt").write_text("\n".join(str(v) for v in expected))
        option = str(tmp_path / "w.txt")
    else:
        option = "median-freq"
    cfg = tiny_config(synth_copy, tmp_path, "cw", class_weights=option)  # the cache is written beside it
    if form == "median-freq":
        from fastseg.data.splits import build_split
        from fastseg.data.stats import class_pixel_counts, median_frequency_weights
        expected = median_frequency_weights(*class_pixel_counts(build_split(cfg.data.train_split, cfg.data.roots)))
    from fastseg.data.stats import training_class_pixels
    dls = build_dataloaders(cfg.data, device="cpu", log=lambda _: None)
    learn = build_learner(cfg, dls, tmp_path, torch.device("cpu"), training_class_pixels(cfg.data))
    assert learn.loss_func.func.weight.tolist() == pytest.approx(expected.tolist())


class EncoderWatch(Callback):
    """Copies of an encoder and a decoder conv weight at the start and after every epoch, and the
    per-group learning rates of each training batch."""

    def before_fit(self):
        self.enc_w, self.dec_w, self.group_lrs = [self._encoder()], [self._decoder()], set()

    def _encoder(self):
        return self.learn.model.encoder.features[0].weight.detach().clone()

    def _decoder(self):
        return self.learn.model.head.weight.detach().clone()

    def after_batch(self):
        if self.training:
            self.group_lrs.add(tuple(h["lr"] for h in self.opt.hypers))

    def after_epoch(self):
        self.enc_w.append(self._encoder())
        self.dec_w.append(self._decoder())


@pytest.fixture(scope="module")
def frozen_run(synth_root, tmp_path_factory):
    watch = EncoderWatch()
    fit(tiny_config(synth_root, tmp_path_factory.mktemp("runs"), "frz", epochs=2, sched="flat", freeze_epochs=1,
                    lr_min=1e-4), extra_cbs=[watch])
    return watch


def test_freeze_epochs_keep_the_encoder_fixed_then_train_it(frozen_run):
    enc, dec = frozen_run.enc_w, frozen_run.dec_w
    assert torch.equal(enc[1], enc[0]) and not torch.equal(dec[1], dec[0])  # epoch 1: decoder only
    assert not torch.equal(enc[2], enc[1]) and not torch.equal(dec[2], dec[1])  # epoch 2: everything


def test_lr_min_gives_the_encoder_group_its_own_rate(frozen_run):
    assert frozen_run.group_lrs == {(1e-4, 1e-2)}  # slice(lr_min, lr) over (encoder, decoder + head)


def test_patience_stops_after_that_many_epochs_without_a_better_miou(synth_root, tmp_path, monkeypatch):
    import fastseg.train.recorder
    scripted = iter([0.1, 0.3, 0.2, 0.25, 0.9, 0.95])  # best at epoch 2; epochs 3 and 4 are worse
    original = fastseg.train.recorder.RunRecorder.epoch_row
    monkeypatch.setattr(fastseg.train.recorder.RunRecorder, "epoch_row", lambda self: {**original(self),
                                                                                "miou": next(scripted)})
    run, rows = fit(tiny_config(synth_root, tmp_path, "p", epochs=6, patience=2, sched="flat"))
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    assert read_meta(run / "best.safetensors")["epoch"] == 2


def test_track_best_follows_the_monitored_metric():
    from fastseg.train.recorder import track_best
    history = [{"epoch": 1, "miou": 0.1, "iou_cat": 0.5}, {"epoch": 2, "miou": 0.4, "iou_cat": 0.2},
               {"epoch": 3, "miou": 0.3, "iou_cat": float("nan")}]  # nan: no cat pixel seen, never "best"
    for monitor, epoch, wait in (("miou", 2, 1), ("iou:cat", 1, 2)):
        tracker = {"best": -1.0, "best_epoch": 0, "wait": 0}
        improved = [track_best(tracker, row, monitor) for row in history]
        assert (tracker["best_epoch"], tracker["wait"]) == (epoch, wait)
        assert improved == [True, monitor == "miou", False]


def test_monitor_picks_best_and_drives_patience_and_survives_resume(synth_root, tmp_path, monkeypatch):
    import fastseg.train.recorder
    from fastseg.train.fit import resume_fit
    miou = iter([0.1, 0.5, 0.2, 0.3, 0.25, 0.2, 0.1])  # by mIoU: best at 2, patience 2 stops after 4
    cat = iter([0.1, 0.2, 0.6, 0.3, 0.4, 0.7, 0.1])    # by cat IoU: best at 3, stops after 5
    original = fastseg.train.recorder.RunRecorder.epoch_row
    monkeypatch.setattr(fastseg.train.recorder.RunRecorder, "epoch_row",
                        lambda self: {**original(self), "miou": next(miou), "iou_cat": next(cat)})
    run, rows = fit(tiny_config(synth_root, tmp_path, "m", epochs=7, patience=2, sched="flat", monitor="iou:cat"))
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4, 5]
    best = read_meta(run / "best.safetensors")
    assert (best["epoch"], best["monitor"]) == (3, "iou:cat")
    assert json.loads((run / "config.json").read_text())["monitor"] == "iou:cat"
    run, rows = resume_fit(run)  # the checkpoint after epoch 5: cat's 0.7 at epoch 6 is the new best
    assert read_meta(run / "best.safetensors")["epoch"] == 6


def test_an_unknown_monitor_is_one_sentence(synth_root, tmp_path):
    from tests.conftest import cli_fit
    result = cli_fit(synth_root, tmp_path, "--monitor", "iou:unicorn")
    assert result.exit_code == 2
    assert " ".join(result.output.split()).startswith("Error: Unknown --monitor 'iou:unicorn'; choose one of: miou, "
                                                      "fg_miou, pixel_acc or iou:CLASS with CLASS one of background,")


class GradNorms(Callback):
    """Total gradient norm at `before_step`, for an `order` before or after GradientClip (11)."""

    def __init__(self, order):
        self.order, self.norms = order, []

    def before_step(self):
        grads = [p.grad.flatten() for p in self.learn.model.parameters() if p.grad is not None]
        self.norms.append(float(torch.cat(grads).norm()))


def test_clip_bounds_the_gradient_norm(synth_root, tmp_path):
    before, after = GradNorms(order=5), GradNorms(order=20)
    fit(tiny_config(synth_root, tmp_path, "clip", epochs=1, clip=0.05), extra_cbs=[before, after])
    assert min(before.norms) > 0.05  # the bound binds on every step
    assert max(after.norms) == pytest.approx(0.05, rel=1e-4)


class HeadBias(Callback):
    """Keeps the head's biases as the fit starts (before any step)."""

    order = 100

    def before_fit(self):
        self.bias = self.learn.model.head.bias.detach().clone()


@pytest.mark.parametrize("head_prior", [True, False])
def test_head_prior_starts_the_model_at_the_training_class_shares(synth_root, tmp_path, head_prior):
    from fastseg.data.masks import read_mask
    from fastseg.data.splits import build_split
    cfg = tiny_config(synth_root, tmp_path, "prior", epochs=1, head_prior=head_prior)
    seen = HeadBias()
    fit(cfg, extra_cbs=[seen])
    counts = sum(np.bincount(m[m != 255].ravel(), minlength=21)
                 for m in (read_mask(s.mask) for s in build_split("train-aug", cfg.data.roots)))
    shares = torch.tensor(counts / counts.sum())
    predicted = seen.bias.double().softmax(0)
    if head_prior:
        present = shares > 0
        assert torch.allclose(predicted[present], shares[present], rtol=1e-4)
        assert shares[0] > 0.5 and predicted.argmax() == 0  # background holds most pixels
    else:
        assert torch.equal(seen.bias, torch.zeros(21))  # he_init's zero biases
    assert json.loads((tmp_path / "prior" / "config.json").read_text())["head_prior"] is head_prior
