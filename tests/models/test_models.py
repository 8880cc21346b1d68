import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fastseg.models import cli_archs, create_model
from fastseg.models.blocks import Unpool, scatter_unpool
from fastseg.models.segnet import SegNet

SEGNET_PARAMS = 29_492_181  # 21 classes; the paper reports 29.5 M
SKIP_PARAMS = 25_789_845


def n_params(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("arch", cli_archs())
def test_small_width_shape_backward_no_nan(arch):
    torch.manual_seed(0)
    model = create_model(arch, num_classes=21, width=0.125)
    x = torch.randn(2, 3, 45, 67)
    logits = model(x)
    assert logits.shape == (2, 21, 45, 67)
    assert torch.isfinite(logits).all()
    logits.mean().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("arch,expected", [("segnet", SEGNET_PARAMS), ("skip", SKIP_PARAMS)])
def test_full_width_parameter_count_and_forward(arch, expected):
    model = create_model(arch).eval()
    assert n_params(model) == expected
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 21, 64, 64)


def test_segnet_parameter_count_matches_paper():
    # the SegNet paper reports 29.5 M parameters for the VGG16 SegNet (with BN: 29.46 M for 21 classes)
    assert round(n_params(create_model("segnet")) / 1e6, 1) == 29.5


@settings(max_examples=25, deadline=None)
@given(h=st.integers(32, 140), w=st.integers(32, 140), arch=st.sampled_from(cli_archs()))
def test_any_size_gives_same_size_logits(h, w, arch):
    model = create_model(arch, num_classes=5, width=0.0625).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, h, w)).shape == (1, 5, h, w)


def test_unknown_arch_lists_valid_ones():
    with pytest.raises(ValueError, match="Unknown arch 'unet'; choose one of: segnet, skip."):
        create_model("unet")


def test_unpool_puts_values_at_recorded_argmax():
    x = torch.tensor([[[[1., 9., 2., 3., 0.],
                        [4., 5., 8., 1., 0.],
                        [7., 0., 1., 6., 0.],
                        [2., 3., 4., 5., 0.],
                        [1., 1., 1., 1., 1.]]]])
    pooled, indices = torch.nn.MaxPool2d(2, 2, return_indices=True)(x)
    out = Unpool()(pooled, indices, x.shape)
    expected = torch.zeros_like(x)
    for (r, c) in [(0, 1), (1, 2), (2, 0), (2, 3)]:
        expected[0, 0, r, c] = x[0, 0, r, c]
    assert torch.equal(out, expected)
    assert torch.equal(scatter_unpool(pooled, indices, x.shape), expected)


def record_pooling(model: SegNet, x):
    """Encoder pool indices per stage and, per decoder stage, the indices it got and its unpool output."""
    encoder_indices, decoder_calls = [], []
    hooks = [m.register_forward_hook(lambda _m, _i, out: encoder_indices.append(out[1]))
             for m in model.encoder.features if isinstance(m, torch.nn.MaxPool2d)]
    hooks += [stage.unpool.register_forward_hook(lambda _m, inp, out: decoder_calls.append((inp[1], out)))
              for stage in model.decoder]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return encoder_indices, decoder_calls


def test_each_decoder_stage_unpools_with_its_own_encoder_stage():
    torch.manual_seed(0)
    model = SegNet(num_classes=3, width=0.125).eval()
    x = torch.zeros(1, 3, 70, 90)
    x[:, :, 10:30, 20:60] = 3.0  # a hand-built bright box gives sparse, distinct argmaxes per stage
    encoder_indices, decoder_calls = record_pooling(model, x)
    assert len(decoder_calls) == 5
    for d, (given_indices, out) in enumerate(decoder_calls):
        own = encoder_indices[4 - d]
        assert torch.equal(given_indices, own)
        n, c = out.shape[:2]
        nonzero = out.flatten(2) != 0
        allowed = torch.zeros_like(nonzero)
        allowed.scatter_(2, own.flatten(2), True)
        assert not (nonzero & ~allowed).any(), f"decoder stage {d} wrote outside its encoder's argmaxes"
        assert nonzero.any()
