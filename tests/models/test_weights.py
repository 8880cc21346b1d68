import json
import pickle

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torchvision
from safetensors.torch import save_file

from fastseg.classes import VOC
from fastseg.errors import FastsegError
from fastseg.evaluate.export import export_onnx
from fastseg.io.serialize import read_meta
from fastseg.models import create_model
from fastseg.models.pretrained import IMAGENET_FILE
from fastseg.models.weights import load_model, model_metadata, save_model, set_temperature


@pytest.fixture(scope="module")
def vgg_state():
    torch.manual_seed(1)
    return torchvision.models.vgg16_bn().state_dict()


def decoder_equal(a, b):
    pairs = zip(a.decoder.state_dict().values(), b.decoder.state_dict().values(), strict=True)
    return all(torch.equal(x, y) for x, y in pairs)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_local_pretrained_file_loads_encoder_only(tmp_path, vgg_state, suffix):
    path = tmp_path / f"vgg{suffix}"
    if suffix == ".pth":
        torch.save(vgg_state, path)
    else:
        save_file({k: v.contiguous() for k, v in vgg_state.items()}, str(path))
    torch.manual_seed(5)
    scratch = create_model("segnet")
    torch.manual_seed(5)
    loaded = create_model("segnet", pretrained=str(path))
    for key, value in loaded.encoder.features.state_dict().items():
        assert torch.equal(value, vgg_state[f"features.{key}"])
    assert decoder_equal(loaded, scratch)


def test_imagenet_from_torch_cache(tmp_path, vgg_state, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(vgg_state, tmp_path / "hub" / "checkpoints" / IMAGENET_FILE)
    model = create_model("skip", pretrained="imagenet")
    assert torch.equal(model.encoder.features[0].weight, vgg_state["features.0.weight"])


def test_imagenet_offline_message(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")  # refused at once: offline
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    with pytest.raises(FastsegError, match=rf"put {IMAGENET_FILE} in .*hub/checkpoints or pass --pretrained none"):
        create_model("segnet", pretrained="imagenet")


def test_pretrained_needs_full_width(tmp_path):
    with pytest.raises(FastsegError, match=r"Pretrained weights need --width 1.0 \(got 0.5\)"):
        create_model("segnet", pretrained="imagenet", width=0.5)


def test_pretrained_file_of_wrong_model(tmp_path):
    save_file({"features.0.weight": torch.zeros(3)}, str(tmp_path / "w.safetensors"))
    with pytest.raises(FastsegError, match="do not fit the VGG16-BN encoder"):
        create_model("segnet", pretrained=str(tmp_path / "w.safetensors"))


def test_save_load_round_trip(tmp_path):
    model = create_model("skip", width=0.125).eval()
    path = save_model(model, tmp_path / "m.safetensors", model_metadata("skip", VOC, 0.125))
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # the metadata is in the header
    meta = read_meta(path)
    assert meta["arch"] == "skip" and meta["width"] == 0.125 and meta["classes"][15] == "person"
    assert meta["mean"] == [0.485, 0.456, 0.406] and "fastseg_version" in meta
    loaded, _ = load_model(path)
    x = torch.randn(1, 3, 40, 50)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


def test_load_refuses_pickle_and_missing_sidecar(tmp_path):
    model = create_model("segnet", width=0.125)
    save_model(model, tmp_path / "m.safetensors", model_metadata("segnet", VOC, 0.125))
    (tmp_path / "m.safetensors").write_bytes(pickle.dumps(model.state_dict()))
    with pytest.raises(FastsegError, match="is not a safetensors file"):
        load_model(tmp_path / "m.safetensors")
    save_file(model.state_dict(), str(tmp_path / "m.safetensors"))  # no metadata in it, no sidecar beside it
    with pytest.raises(FastsegError, match="has no metadata file .*m.json and no metadata inside"):
        load_model(tmp_path / "m.safetensors")


def test_unknown_arch_in_the_sidecar_is_one_sentence(tmp_path):
    model = create_model("segnet", width=0.125)
    save_model(model, tmp_path / "m.safetensors", model_metadata("unet", VOC, 0.125))
    with pytest.raises(FastsegError) as err:
        load_model(tmp_path / "m.safetensors")
    assert str(err.value) == (f"Metadata file {tmp_path / 'm.safetensors'} names a model fastseg cannot build "
                              "(Unknown arch 'unet'; choose one of: segnet, skip.); pass weights written by fastseg.")


def test_legacy_weights_with_a_sidecar_still_load_and_become_one_file(tmp_path):
    model = create_model("segnet", width=0.125).eval()
    meta = model_metadata("segnet", VOC, 0.125)
    save_file(model.state_dict(), str(tmp_path / "m.safetensors"))  # as fastseg wrote weights before 0.x
    (tmp_path / "m.json").write_text(json.dumps(meta))
    loaded, back = load_model(tmp_path / "m.safetensors")
    assert back == meta and torch.equal(loaded.head.weight, model.head.weight)
    set_temperature(tmp_path / "m.safetensors", 2.0)  # a rewrite: migrated to one file
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]
    assert read_meta(tmp_path / "m.safetensors") == meta | {"temperature": 2.0}


@pytest.mark.parametrize("arch", ["segnet", "skip"])
def test_onnx_matches_pytorch_on_two_sizes(tmp_path, arch):
    torch.manual_seed(0)
    model = create_model(arch, width=0.25).eval()
    for m in model.modules():  # non-trivial BN statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    weights = save_model(model, tmp_path / "m.safetensors", model_metadata(arch, VOC, 0.25))
    session = ort.InferenceSession(str(export_onnx(weights, tmp_path / "m.onnx")))
    for shape in [(1, 3, 75, 101), (2, 3, 64, 96)]:
        x = torch.randn(*shape)
        with torch.no_grad():
            expected = model(x).numpy()
        got = session.run(None, {"image": x.numpy()})[0]
        assert got.shape == expected.shape
        assert np.abs(got - expected).max() <= 1e-3
        assert (got.argmax(1) == expected.argmax(1)).mean() >= 0.999
