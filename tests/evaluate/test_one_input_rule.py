"""evaluate and predict feed a model one way (fastseg.data.transforms): what predict writes for an
image is exactly what evaluate scored for it."""

import numpy as np
import torch

import fastseg.evaluate.scoring as scoring
from fastseg.data.dataloaders import header_size, sharded_batches
from fastseg.data.images import read_image
from fastseg.data.splits import build_split
from fastseg.data.transforms import model_input, normalise
from fastseg.evaluate.predict import predict_image
from fastseg.models import create_model


def test_predict_writes_for_every_validation_image_the_prediction_evaluate_scored(roots, monkeypatch):
    torch.manual_seed(0)
    model = create_model("segnet", width=0.125).eval()
    samples = build_split("voc12-val", roots)
    scored = []  # evaluate's class ids, batch by batch (N×H'×W', padded)
    real = scoring.predict_outputs
    monkeypatch.setattr(scoring, "predict_outputs", lambda *a: scored.append(real(*a)[0]) or real(*a))
    scoring.evaluate_samples(model, samples, torch.device("cpu"), bs=4)
    sizes = [header_size(s.image) for s in samples]
    order = [i for batch in sharded_batches(sizes, 4, 0, 1) for i in batch]
    evaluated = [p for batch in scored for p in batch]
    assert len(evaluated) == len(samples) and len({padded.shape for padded in evaluated}) > 1  # several sizes
    for i, padded in zip(order, evaluated, strict=True):
        h, w = sizes[i]
        mask = predict_image(model, read_image(samples[i].image), torch.device("cpu"))
        assert np.array_equal(mask, padded[:h, :w].numpy()), samples[i].id


def test_model_input_pads_with_black_before_normalising():
    image = np.full((40, 50, 3), 200, np.uint8)
    x = model_input(image)
    assert x.shape == (1, 3, 64, 64)
    black, grey = (normalise(torch.full((3, 1, 1), v))[:, 0, 0] for v in (0.0, 200 / 255))
    assert torch.equal(x[0, :, 63, 63], black) and torch.equal(x[0, :, 39, 49], grey)
