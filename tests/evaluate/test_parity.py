"""ONNX parity measured against the ONNX model itself: its numbers equal a numpy computation over
ONNX Runtime's and PyTorch's outputs on the validation split, and a model that differs fails the
threshold `test_export` holds exports to."""

import numpy as np
import onnxruntime as ort
import pytest
import torch
from PIL import Image

from fastseg.classes import VOC
from fastseg.data.masks import read_mask
from fastseg.data.splits import build_split
from fastseg.evaluate.export import Normalised, export_onnx, onnx_parity
from fastseg.io.runs import save_config
from fastseg.models import create_model
from fastseg.models.weights import model_metadata, save_model
from tests.conftest import tiny_config

AGREEMENT = 0.999  # the share of pixels test_export asks of an export


def numpy_miou(preds: list[np.ndarray], masks: list[np.ndarray], c: int = 21) -> float:
    """mIoU over classes present in truth or prediction, void (255) left out."""
    cm = np.zeros((c, c), np.int64)
    for pred, mask in zip(preds, masks, strict=True):
        keep = mask != 255
        np.add.at(cm, (mask[keep], pred[keep]), 1)
    tp = np.diag(cm).astype(float)
    union = cm.sum(0) + cm.sum(1) - tp
    return float(np.mean(tp[union > 0] / union[union > 0]))


def runtime_input(sample) -> np.ndarray:
    """A sample's image as the exported graph takes it: 1×3×H×W float32 RGB in [0, 1]."""
    return np.asarray(Image.open(sample.image).convert("RGB"), np.float32).transpose(2, 0, 1)[None] / 255


@pytest.fixture(scope="module")
def onnx_run(synth_root, tmp_path_factory):
    """A run folder (config only) on the synthetic data and an ONNX export of a random 1/16 SegNet."""
    folder = tmp_path_factory.mktemp("parity")
    cfg = tiny_config(synth_root, folder, "r")
    save_config(cfg, folder / "config.json")
    torch.manual_seed(0)
    model = create_model("segnet", width=0.0625).eval()
    weights = save_model(model, folder / "m.safetensors", model_metadata("segnet", VOC, 0.0625))
    onnx = export_onnx(weights, folder / "m.onnx", normalise=True)
    return folder, model, onnx, build_split(cfg.data.valid_split, cfg.data.roots)


def test_parity_numbers_come_from_onnx_runtime_and_pytorch(onnx_run):
    folder, model, onnx, samples = onnx_run
    parity = onnx_parity(Normalised(model).eval(), onnx, folder, device="cpu")
    session = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
    ort_preds, torch_preds, masks, worst = [], [], [], 0.0
    for sample in samples:
        x = runtime_input(sample)
        got = session.run(None, {"image": x})[0]
        with torch.no_grad():
            ref = Normalised(model)(torch.from_numpy(x)).numpy()
        worst = max(worst, float(np.abs(got - ref).max()))
        ort_preds.append(got.argmax(1)[0])
        torch_preds.append(ref.argmax(1)[0])
        masks.append(read_mask(sample.mask))
    assert (parity["split"], parity["images"], parity["torch_device"]) == ("seg11valid", len(samples), "cpu")
    assert parity["miou_onnxruntime"] == pytest.approx(numpy_miou(ort_preds, masks), abs=1e-12)
    assert parity["miou_pytorch"] == pytest.approx(numpy_miou(torch_preds, masks), abs=1e-12)
    assert parity["miou_difference"] == pytest.approx(parity["miou_onnxruntime"] - parity["miou_pytorch"])
    agree = sum(int((a == b).sum()) for a, b in zip(ort_preds, torch_preds, strict=True))
    assert parity["pixel_agreement"] == pytest.approx(agree / sum(m.size for m in masks), abs=1e-12)
    assert parity["pixel_agreement"] >= AGREEMENT
    assert parity["max_abs_logit_difference"] == pytest.approx(worst, abs=1e-5)
    assert parity["onnxruntime"] == ort.__version__ and parity["torch"] == torch.__version__
    assert sorted(parity) == ["images", "max_abs_logit_difference", "miou_difference", "miou_onnxruntime",
                              "miou_pytorch", "onnxruntime", "pixel_agreement", "split", "torch", "torch_device"]


def test_a_model_other_than_the_onnx_one_fails_the_threshold(onnx_run):
    folder, model, onnx, samples = onnx_run
    other = create_model("segnet", width=0.0625).eval()
    with torch.no_grad():
        for a, b in zip(other.parameters(), model.parameters(), strict=True):
            a.copy_(b + 0.05 * torch.randn_like(b))
    parity = onnx_parity(Normalised(other).eval(), onnx, folder, device="cpu")
    assert parity["pixel_agreement"] < AGREEMENT
    assert parity["max_abs_logit_difference"] > 0.01
    session = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
    agree = total = 0
    for sample in samples:
        x = runtime_input(sample)
        with torch.no_grad():
            ours = Normalised(other)(torch.from_numpy(x)).numpy().argmax(1)
        agree, total = agree + int((session.run(None, {"image": x})[0].argmax(1) == ours).sum()), total + ours.size
    assert parity["pixel_agreement"] == pytest.approx(agree / total, abs=1e-12)


def test_parity_scores_a_model_of_more_classes_than_voc_in_its_own_classes(onnx_run, tmp_path):
    """A folder dataset's model may have more than VOC's 21 classes: its mIoUs count every one of them."""
    from fastseg.classes import ClassSet
    folder, _, _, samples = onnx_run
    torch.manual_seed(1)
    model = create_model("segnet", num_classes=25, width=0.0625).eval()
    classes = ClassSet(tuple(f"c{i}" for i in range(25)))
    onnx = export_onnx(save_model(model, tmp_path / "m.safetensors", model_metadata("segnet", classes, 0.0625)),
                       tmp_path / "m.onnx", normalise=True)
    parity = onnx_parity(Normalised(model).eval(), onnx, folder, device="cpu")
    session = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
    preds = [session.run(None, {"image": runtime_input(s)})[0].argmax(1)[0] for s in samples]
    assert max(int(p.max()) for p in preds) >= 21  # some pixels predicted in a class beyond VOC's
    assert parity["miou_onnxruntime"] == pytest.approx(numpy_miou(preds, [read_mask(s.mask) for s in samples], 25),
                                                       abs=1e-12)
