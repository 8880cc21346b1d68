"""The training step's input path and deterministic mode, on the CPU."""

import json

import torch
import torch.nn.functional as F
from fastai.callback.core import Callback
from fastai.torch_core import TensorImage

from fastseg.devices.transfer import to_device_async
from fastseg.models.blocks import Unpool, scatter_unpool
from fastseg.train.fastpath import InputPath, deterministic_mode
from fastseg.train.fit import fit
from tests.conftest import cli_fit, tiny_config


class SeenByModel(Callback):
    """Records the type and memory format of what the model is handed, after every other callback."""

    order = 50

    def __init__(self):
        self.seen = []

    def before_batch(self):
        x, y = self.xb[0], self.yb[0]
        self.seen.append((type(x), x.is_contiguous(memory_format=torch.channels_last), type(y),
                          torch.are_deterministic_algorithms_enabled()))


def test_the_model_gets_plain_channels_last_tensors(synth_root, tmp_path):
    probe = SeenByModel()
    fit(tiny_config(synth_root, tmp_path, "cl", epochs=1, channels_last=True), extra_cbs=[probe])
    assert probe.seen and all(s[:3] == (torch.Tensor, True, torch.Tensor) for s in probe.seen)


def test_input_path_keeps_nchw_without_channels_last():
    cb = InputPath(channels_last=False)
    cb.learn = type("L", (), {"xb": (TensorImage(torch.randn(2, 3, 8, 8)),), "yb": (torch.zeros(2, 8, 8).long(),)})()
    cb.before_batch()
    assert type(cb.learn.xb[0]) is torch.Tensor and cb.learn.xb[0].is_contiguous()


def test_batches_are_copied_without_blocking_to_cuda():
    calls = []

    class Recorder(torch.Tensor):
        def to(self, *args, **kwargs):
            calls.append((args, kwargs))
            return self
    batch = (torch.zeros(1).as_subclass(Recorder), [torch.ones(1).as_subclass(Recorder)])
    to_device_async(batch, "cuda")
    to_device_async(batch, "cpu")
    assert [k["non_blocking"] for _, k in calls] == [True, True, False, False]


def test_deterministic_unpool_is_max_unpool_values_and_gradients():
    for h, w in ((8, 8), (9, 7), (33, 20)):
        x = torch.randn(2, 3, h, w, generator=torch.Generator().manual_seed(h))
        pooled, idx = F.max_pool2d(x, 2, return_indices=True)
        a, b = pooled.clone().requires_grad_(), pooled.clone().requires_grad_()
        eager = Unpool()(a, idx, x.shape)
        with deterministic_mode(True):
            scattered = Unpool()(b, idx, x.shape)
        grad = torch.randn_like(eager)
        eager.backward(grad)
        scattered.backward(grad)
        assert torch.equal(eager, scattered) and torch.equal(a.grad, b.grad)
        assert torch.equal(scatter_unpool(pooled, idx, x.shape), eager.detach())


def test_deterministic_mode_is_restored_after_use():
    with deterministic_mode(True):
        assert torch.are_deterministic_algorithms_enabled()
    assert not torch.are_deterministic_algorithms_enabled()


def test_fit_deterministic_takes_effect_and_is_recorded(synth_root, tmp_path, monkeypatch):
    import fastseg.train.fit as fit_module
    probe, original = SeenByModel(), fit_module._train

    def train_with_probe(*args):
        return original(*args[:-1], [*(args[-1] or []), probe])
    monkeypatch.setattr(fit_module, "_train", train_with_probe)
    result = cli_fit(synth_root, tmp_path, "--name", "d", "--deterministic")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "d" / "config.json").read_text())["deterministic"] is True
    assert probe.seen and all(s[3] for s in probe.seen)
    assert not torch.are_deterministic_algorithms_enabled()
