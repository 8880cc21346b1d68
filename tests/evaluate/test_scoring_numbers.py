"""The numbers `evaluate` writes, against independent references: numpy confusion matrices and
quantiles, hand-built matrices and masks on disk. Batches reach the sizes users score with (16+)."""

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from fastseg.classes import VOC, ClassSet
from fastseg.constants import IMAGENET_MEAN, IMAGENET_STD
from fastseg.data.masks import read_mask
from fastseg.data.splits import build_split
from fastseg.errors import FastsegError
from fastseg.evaluate.metrics import confusion_matrix, scores
from fastseg.evaluate.scoring import (
    BOOTSTRAP_SAMPLES,
    EvalResult,
    Gallery,
    bootstrap_miou,
    boundary_band,
    check_scales,
    confused_pairs,
    evaluate_samples,
    gather_rows,
    load_per_image,
    mean_entropy,
    miou_rows,
    paired_gain,
    resample_counts,
    result_json,
    save_per_image,
)
from fastseg.models.dropout import MCDropout


def numpy_cm(pred: np.ndarray, target: np.ndarray, c: int) -> np.ndarray:
    """C×C counts of (truth, prediction) over non-void pixels, by np.add.at."""
    keep = target != 255
    cm = np.zeros((c, c), np.int64)
    np.add.at(cm, (target[keep], pred[keep]), 1)
    return cm


def numpy_miou(cm: np.ndarray) -> float:
    """Mean IoU over classes present in truth or prediction."""
    tp = np.diag(cm).astype(float)
    union = cm.sum(0) + cm.sum(1) - tp
    return float(np.mean(tp[union > 0] / union[union > 0]))


def test_per_image_matrices_of_a_batch_of_16_ignore_void():
    rng = np.random.default_rng(1)
    target = rng.integers(0, 21, size=(18, 9, 11))
    target[rng.random(target.shape) < 0.3] = 255
    pred = rng.integers(0, 21, size=target.shape)
    cms = confusion_matrix(torch.from_numpy(pred), torch.from_numpy(target), 21, per_sample=True)
    assert cms.shape == (18, 21, 21)
    for i in range(18):
        assert np.array_equal(cms[i].numpy(), numpy_cm(pred[i], target[i], 21)), i


def test_miou_rows_and_class_iou_by_hand():
    cms = torch.tensor([[[2, 1, 0], [0, 3, 0], [0, 0, 0]], [[0, 0, 0], [1, 1, 0], [0, 2, 4]]])
    # image 0: IoU 2/3, 3/4, class 2 absent; image 1: class 0 0/1, class 1 1/4, class 2 4/6
    assert miou_rows(cms).tolist() == pytest.approx([(2 / 3 + 3 / 4) / 2, (0 + 1 / 4 + 4 / 6) / 3])


def test_resample_counts_draw_every_image_uniformly_n_times():
    counts = resample_counts(7)
    assert counts.shape == (BOOTSTRAP_SAMPLES, 7) and counts.dtype == torch.float64
    assert torch.equal(counts, counts.round()) and bool((counts >= 0).all())
    assert counts.sum(1).tolist() == [7.0] * BOOTSTRAP_SAMPLES
    assert counts.mean(0).numpy() == pytest.approx(np.ones(7), abs=0.12)  # the last image too
    assert counts.max() >= 4  # with replacement: an image can be drawn several times


def test_resample_counts_follow_the_seeded_generator():
    picks = torch.randint(0, 5, (BOOTSTRAP_SAMPLES, 5), generator=torch.Generator().manual_seed(0)).numpy()
    expected = np.stack([np.bincount(row, minlength=5) for row in picks])
    assert np.array_equal(resample_counts(5).numpy(), expected)
    assert np.array_equal(resample_counts(5, seed=3).numpy(), resample_counts(5, seed=3).numpy())
    assert not np.array_equal(resample_counts(5, seed=3).numpy(), expected)
    assert resample_counts(5, samples=40).shape == (40, 5)


def test_bootstrap_interval_is_the_2_5_and_97_5_percentiles():
    rng = np.random.default_rng(2)
    per_image = rng.integers(0, 30, size=(9, 4, 4))
    counts = resample_counts(9).numpy()
    mious = [numpy_miou(np.einsum("n,nij->ij", row, per_image)) for row in counts]
    low, high = bootstrap_miou(torch.from_numpy(per_image))
    assert low == pytest.approx(np.quantile(mious, 0.025), abs=1e-12)
    assert high == pytest.approx(np.quantile(mious, 0.975), abs=1e-12)
    assert low < high
    seeded = [numpy_miou(np.einsum("n,nij->ij", row, per_image)) for row in resample_counts(9, seed=3).numpy()]
    assert bootstrap_miou(torch.from_numpy(per_image), seed=3) == pytest.approx(
        (np.quantile(seeded, 0.025), np.quantile(seeded, 0.975)), abs=1e-12)


@pytest.mark.parametrize("seed", [None, 3])
def test_paired_gain_is_the_mious_difference_with_the_interval_of_paired_resamples(seed):
    """compare's and TTA's gain: mIoU of one set of matrices minus another's over the same images, and the
    2.5/97.5 percentiles of that difference over resamples that draw the same images for both."""
    rng = np.random.default_rng(4)
    ours, baseline = rng.integers(0, 30, size=(2, 9, 4, 4))
    counts = resample_counts(9, seed=seed or 0).numpy()  # the default seed is 0
    diffs = [numpy_miou(np.einsum("n,nij->ij", row, ours)) - numpy_miou(np.einsum("n,nij->ij", row, baseline))
             for row in counts]
    args = (torch.from_numpy(ours), torch.from_numpy(baseline))
    out = paired_gain(*args) if seed is None else paired_gain(*args, seed=seed)
    assert out["gain"] == pytest.approx(numpy_miou(ours.sum(0)) - numpy_miou(baseline.sum(0)), abs=1e-12)
    assert out["gain_ci95"] == pytest.approx([np.quantile(diffs, 0.025), np.quantile(diffs, 0.975)], abs=1e-12)
    assert out["gain_ci95"][0] < out["gain_ci95"][1]


def test_boundary_band_marks_pixels_near_a_change_of_label():
    target = torch.zeros(1, 4, 12, dtype=torch.long)
    target[..., 5:] = 3
    band = boundary_band(target, width=2)
    assert band.shape == (1, 4, 12)
    assert band[0, 0].nonzero().flatten().tolist() == [3, 4, 5, 6, 7]
    assert torch.equal(band[0, 0], band[0, 3])
    across = boundary_band(target.transpose(1, 2), width=1)[0]  # the change between rows 4 and 5
    assert across[:, 0].nonzero().flatten().tolist() == [4, 5, 6]
    assert all(torch.equal(across[:, 0], across[:, j]) for j in range(4))  # in every column
    assert not boundary_band(torch.ones(1, 6, 6, dtype=torch.long)).any()
    padded = torch.full((2, 4, 6), 255)
    padded[0, :3, :4], padded[1, :2, :5] = 1, 2  # two images of one class each, padded to 4×6 with void
    assert boundary_band(padded, width=1).any()  # taken alone, the padding is a change of label
    assert not boundary_band(padded, width=1, sizes=[(3, 4), (2, 5)]).any()


def test_confused_pairs_are_the_largest_shares_of_each_true_class():
    cm = torch.tensor([[6, 3, 1], [0, 10, 0], [5, 4, 1]])
    pairs = confused_pairs(cm, ("a", "b", "c"))
    assert pairs == [{"truth": "c", "predicted": "a", "fraction": 0.5},
                     {"truth": "c", "predicted": "b", "fraction": 0.4},
                     {"truth": "a", "predicted": "b", "fraction": 0.3},
                     {"truth": "a", "predicted": "c", "fraction": 0.1}]
    assert confused_pairs(cm, ("a", "b", "c"), top=1) == pairs[:1]
    assert len(confused_pairs(torch.ones(5, 5, dtype=torch.long) + torch.eye(5, dtype=torch.long) * 3, "abcde")) == 10


def test_gallery_keeps_the_best_worst_and_random_images():
    gallery = Gallery({1}, k=2)
    for index, score in enumerate([0.5, 0.1, math.nan, 0.9, 0.3, 0.7]):
        if gallery.wants(index, score):
            gallery.offer(index, score, f"item{index}")
    assert [e[1] for e in gallery.best] == [3, 5]
    assert [e[1] for e in gallery.worst] == [1, 4]
    assert [e[1] for e in gallery.random] == [1]
    assert [e[0] for e in gallery.uncertain] == [0.0, 0.0]  # offered without an entropy: 0
    assert not gallery.wants(2, math.nan) and gallery.wants(7, 0.95) and gallery.wants(8, 0.05)
    assert not gallery.wants(9, 0.5)
    assert Gallery(set(), k=1).wants(0, 0.5)


def test_gallery_wants_what_would_enter_each_list_and_nothing_else():
    """`wants` gates the copying of an image's pixels: it must say yes to whatever `offer` would keep."""
    gallery = Gallery(set(), k=3)
    for index, (score, ent) in enumerate([(0.9, 3.0), (0.7, 2.0), (0.5, 1.0), (0.1, 1.0), (0.2, 1.0), (0.3, 1.0)]):
        gallery.offer(index, score, f"item{index}", ent)
    assert [e[0] for e in gallery.best] == [0.9, 0.7, 0.5] and [e[0] for e in gallery.worst] == [0.1, 0.2, 0.3]
    assert [e[0] for e in gallery.uncertain] == [3.0, 2.0, 1.0]
    assert gallery.wants(6, 0.6, 0.0)       # third best
    assert gallery.wants(6, 0.25, 0.0)      # third worst
    assert gallery.wants(6, 0.4, 1.5)       # third most uncertain
    assert not gallery.wants(6, 0.4, 1.0)   # none of them


def test_offer_hands_each_image_its_index_score_entropy_and_pixels_at_its_size():
    offered = []

    class Spy(Gallery):
        def wants(self, index, score, entropy=0.0):
            offered.append(("wants", index, score, entropy))
            return index == 2

        def offer(self, index, score, item, entropy=0.0):
            offered.append(("offer", index, score, entropy, [part.shape for part in item]))

    x, y = torch.zeros(2, 3, 4, 6), torch.ones(2, 4, 6, dtype=torch.long)
    from fastseg.evaluate.scoring import _offer
    _offer(Spy(set()), [1, 2], [(9, 9), (3, 5), (2, 4)], (x, y, y * 2), torch.tensor([0.5, 0.25]),
           torch.tensor([1.0, 2.0]))
    assert offered == [("wants", 1, 0.5, 1.0), ("wants", 2, 0.25, 2.0), ("offer", 2, 0.25, 2.0, [(2, 4, 3), (2, 4),
                                                                                              (2, 4)])]


def test_gather_rows_puts_rows_in_sample_order():
    rows = torch.tensor([[20], [0], [10]])
    assert gather_rows([2, 0, 1], rows, 4).tolist() == [[0], [10], [20], [0]]


def test_mean_entropy_averages_each_images_non_void_pixels_by_hand():
    probs = torch.tensor([[[[1.0, 0.5], [0.9, 0.2]], [[0.0, 0.5], [0.1, 0.8]]],   # image 0: four pixels
                          [[[0.5, 0.3], [1.0, 1.0]], [[0.5, 0.7], [0.0, 0.0]]],   # image 1: one non-void
                          [[[0.5, 0.5], [0.5, 0.5]], [[0.5, 0.5], [0.5, 0.5]]]])  # image 2: all void
    target = torch.tensor([[[0, 1], [0, 255]], [[255, 1], [255, 255]], [[255, 255], [255, 255]]])

    def h(p):
        return -sum(q * math.log(q) for q in (p, 1 - p) if q > 0)
    expected = [(h(1.0) + h(0.5) + h(0.9)) / 3, h(0.3), 0.0]
    assert mean_entropy(probs, target).tolist() == pytest.approx(expected, abs=1e-6)


def test_check_scales_refuses_a_scale_below_the_smallest_image():
    check_scales([], (1.0,))  # no image (a process without a batch): nothing to refuse
    check_scales([(72, 90), (40, 200)], (0.5, 1.0))  # 40 px pads to 64: 0.5 gives 32 px
    with pytest.raises(FastsegError) as err:
        check_scales([(72, 90), (40, 200)], (1.0, 0.4))
    assert str(err.value) == ("--tta-scales 0.4 would shrink the smallest image (64 px once padded) below 32 "
                              "pixels; use scales of at least 0.50.")


def hand_result(plain: dict | None) -> EvalResult:
    cm = torch.tensor([[5, 1], [2, 4]])
    per_image = torch.stack([torch.tensor([[5, 0], [0, 0]]), torch.tensor([[0, 1], [2, 4]])])
    classes = ClassSet(("background", "cat"))
    s = scores(cm)
    plain_per_image = torch.stack([torch.tensor([[4, 1], [0, 0]]), torch.tensor([[0, 1], [3, 3]])])
    return EvalResult(classes, ["a", "b"], cm, per_image, s, (0.25, 0.75), {"miou": 0.1}, {"miou": 0.9},
                      plain, Gallery(set()), plain_per_image=plain_per_image if plain else None)


def test_result_json_headline_interval_and_tta_gain():
    out = result_json(hand_result({"miou": 0.5}), "val", "w.safetensors", {"flip": True, "scales": [1.0]})
    assert out["miou"] == pytest.approx((5 / 8 + 4 / 7) / 2)
    assert out["fg_miou"] == pytest.approx(4 / 7)
    assert out["pixel_acc"] == pytest.approx(9 / 12)
    assert (out["images"], out["miou_ci95"], out["boundary_miou"], out["interior_miou"]) == (2, [0.25, 0.75], 0.1, 0.9)
    assert out["per_class"]["cat"] == {"iou": pytest.approx(4 / 7), "acc": pytest.approx(4 / 6)}
    assert out["miou_without_tta"] == 0.5 and out["tta_gain"] == pytest.approx(out["miou"] - 0.5)
    assert "tta_gain" not in result_json(hand_result(None), "val", "w", {})
    assert (out["split"], out["weights"], out["tta"]) == ("val", "w.safetensors", {"flip": True, "scales": [1.0]})
    assert (out["bootstrap_samples"], out["boundary_band_px"]) == (1000, 5)
    assert out["fg_miou_note"] == "classes 1..1: without background"
    assert out["confused_pairs"] == [{"truth": "cat", "predicted": "background", "fraction": pytest.approx(2 / 6)},
                                     {"truth": "background", "predicted": "cat", "fraction": pytest.approx(1 / 6)}]
    assert sorted(out) == sorted(["split", "weights", "images", "tta", "miou", "fg_miou", "pixel_acc", "mean_acc",
                                  "fw_iou", "fg_miou_note", "miou_ci95", "bootstrap_samples", "per_class",
                                  "confused_pairs", "boundary_band_px", "boundary_miou", "interior_miou",
                                  "miou_without_tta", "tta_gain", "tta_gain_ci95"])
    low, high = out["tta_gain_ci95"]
    assert low <= high


def test_fg_miou_note_names_the_classes_it_averages():
    from fastseg.evaluate.scoring import fg_miou_note
    assert fg_miou_note(VOC) == "classes 1..20: without background"


def test_per_image_file_round_trips(tmp_path):
    result = hand_result(None)
    save_per_image(result, "val", tmp_path / "per_image.safetensors")
    split, ids, cm = load_per_image(tmp_path / "per_image.safetensors")
    assert (split, ids) == ("val", ["a", "b"]) and torch.equal(cm, result.per_image)


class PixelModel(nn.Module):
    """Per-pixel (1×1) model: its prediction of a pixel does not depend on padding or batching; with
    `dropout`, Bayesian SegNet's MCDropout on its logits (off in eval mode, sampled by Monte Carlo dropout)."""

    def __init__(self, classes: int = 21, dropout: float = 0.0):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Conv2d(3, classes, 1)
        self.drop = MCDropout(dropout) if dropout else nn.Identity()

    def forward(self, x):
        return self.drop(self.net(x))


def numpy_logits(model: PixelModel, path) -> np.ndarray:
    """H×W×C logits of one image file by hand: normalise with numpy, apply the 1×1 conv as a matmul."""
    from PIL import Image
    rgb = np.asarray(Image.open(path).convert("RGB"), np.float64) / 255
    x = (rgb - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    w = model.net.weight.detach().double().numpy()[:, :, 0, 0]
    return x @ w.T + model.net.bias.detach().double().numpy()


def numpy_prediction(model: PixelModel, path) -> np.ndarray:
    """Class ids of one image file by hand (`numpy_logits`' argmax)."""
    return numpy_logits(model, path).argmax(-1)


def beyond_16(roots) -> list:
    """The 24 samples of voc12-train and voc12-val: a batch of 16 and more."""
    samples = build_split("voc12-train", roots) + build_split("voc12-val", roots)
    assert len(samples) == 24
    return samples


def test_counts_stay_integers_and_band_and_interior_split_every_pixel(roots, monkeypatch):
    """Confusion counts are int64 throughout (float32 counts lose pixels past 2**24, which VOC's
    background reaches), and the boundary band and interior matrices, summed over every batch, share
    out each scored pixel: together they are the whole matrix."""
    from fastseg.evaluate import scoring
    scored, real = [], scoring.scores
    monkeypatch.setattr(scoring, "scores", lambda cm, bg: scored.append(cm) or real(cm, bg))
    samples = beyond_16(roots)
    result = evaluate_samples(PixelModel(), samples, torch.device("cpu"), bs=16)
    whole, band, interior = scored
    assert result.per_image.dtype == whole.dtype == band.dtype == interior.dtype == torch.int64
    assert torch.equal(band + interior, whole) and torch.equal(whole, result.cm)
    assert 0 < int(band.sum()) < int(whole.sum())
    for got, cm in ((result.band_scores, band), (result.interior_scores, interior)):
        assert json.dumps(got) == json.dumps(real(cm, VOC.background))  # as text: NaN ≠ NaN


@pytest.mark.parametrize("temperature", [None, 2.5])
def test_calibration_nll_is_that_of_the_models_softmax_and_no_pixels_are_kept_unasked(roots, temperature):
    """NLL of softmax(logits / T) over every non-void pixel: T = 1 unless given."""
    samples = beyond_16(roots)
    model = PixelModel()
    given = {} if temperature is None else {"temperature": temperature}
    result = evaluate_samples(model, samples, torch.device("cpu"), bs=16, **given)
    nll, pixels = 0.0, 0
    for sample in samples:
        logits, mask = numpy_logits(model, sample.image) / (temperature or 1.0), read_mask(sample.mask)
        keep = mask != 255
        z = logits[keep] - logits[keep].max(1, keepdims=True)
        log_p = z - np.log(np.exp(z).sum(1, keepdims=True))
        nll -= log_p[np.arange(keep.sum()), mask[keep]].sum()
        pixels += int(keep.sum())
    assert result.calibration["pixels"] == pixels
    assert result.calibration["nll"] == pytest.approx(nll / pixels, rel=1e-5)
    assert result.pixels == [] and result.temperature == (temperature or 1.0)


def test_calibration_pixels_are_shared_out_by_batch_and_seeded(roots):
    samples, model = beyond_16(roots), PixelModel()
    least = evaluate_samples(model, samples, torch.device("cpu"), bs=16, calibration_pixels=1)
    assert len(least.pixels) >= 2 and {len(t) for _, t in least.pixels} == {1}  # at least one pixel a batch
    kept = [evaluate_samples(model, samples, torch.device("cpu"), bs=16, calibration_pixels=1200) for _ in range(2)]
    assert sum(len(t) for _, t in kept[0].pixels) == 1200  # 1200 × batch size // 24: 50 a sample
    for (logits, target), (again, target_again) in zip(kept[0].pixels, kept[1].pixels, strict=True):
        assert torch.equal(logits, again) and torch.equal(target, target_again)
        assert logits.shape == (len(target), 21) and bool((target != 255).all())


def test_the_random_gallery_is_drawn_with_the_seed(roots):
    samples = beyond_16(roots)
    for seed in (None, 3):
        options = {} if seed is None else {"seed": seed}
        result = evaluate_samples(PixelModel(), samples, torch.device("cpu"), bs=16, **options)
        expected = np.random.default_rng(seed or 0).choice(len(samples), size=5, replace=False)
        assert sorted(e[1] for e in result.gallery.random) == sorted(expected.tolist())


def test_an_image_of_one_class_has_no_boundary_band_whatever_its_padding(tmp_path, monkeypatch):
    """The band is about changes of true label inside the image: the padding added to reach a multiple
    of 32 (void in the batch's truth) is no boundary, so no strip along the right and bottom edges."""
    from fastseg.data.masks import write_palette_png
    from fastseg.data.samples import Sample
    from fastseg.evaluate import scoring
    scored, real = [], scoring.scores
    monkeypatch.setattr(scoring, "scores", lambda cm, bg: scored.append(cm) or real(cm, bg))
    samples = []
    for i, (h, w) in enumerate([(40, 50), (64, 64), (33, 70)]):
        Image.fromarray(np.full((h, w, 3), 90, np.uint8)).save(tmp_path / f"{i}.jpg")
        write_palette_png(np.full((h, w), 1, np.uint8), tmp_path / f"{i}.png")
        samples.append(Sample(str(i), tmp_path / f"{i}.jpg", tmp_path / f"{i}.png"))
    result = evaluate_samples(PixelModel(), samples, torch.device("cpu"), bs=2)
    whole, band, interior = scored
    assert int(band.sum()) == 0 and torch.equal(interior, whole)
    assert int(whole.sum()) == 40 * 50 + 64 * 64 + 33 * 70
    assert math.isnan(result.band_scores["miou"])


def test_the_gallery_holds_the_best_worst_and_most_uncertain_images_with_their_pixels(roots):
    """The best and worst 5 images by their own mIoU, the 5 of highest mean entropy (numpy, from the
    model's logits), each with its image, truth and prediction at the image's size."""
    samples, model = beyond_16(roots), PixelModel()
    gallery = evaluate_samples(model, samples, torch.device("cpu"), bs=16).gallery
    mious, entropies = [], []
    for sample in samples:
        logits, mask = numpy_logits(model, sample.image), read_mask(sample.mask)
        mious.append(numpy_miou(numpy_cm(logits.argmax(-1), mask, 21)))
        p = np.exp(logits - logits.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        entropies.append(float((-(p * np.log(p)).sum(-1))[mask != 255].mean()))
    ranked = sorted(mious)
    assert [e[0] for e in gallery.best] == pytest.approx(ranked[::-1][:5], abs=1e-3)
    assert [e[0] for e in gallery.worst] == pytest.approx(ranked[:5], abs=1e-3)
    assert [e[0] for e in gallery.uncertain] == pytest.approx(sorted(entropies)[::-1][:5], rel=1e-4)
    assert [entropies[e[1]] for e in gallery.uncertain] == pytest.approx([e[0] for e in gallery.uncertain], rel=1e-4)
    for _, index, (image, truth, pred) in gallery.best + gallery.worst + gallery.random:
        sample = samples[index]
        assert np.array_equal(truth, read_mask(sample.mask))
        assert image.shape == (*truth.shape, 3) and image.dtype == np.uint8
        assert np.abs(image.astype(int) - np.asarray(Image.open(sample.image).convert("RGB"))).max() <= 1
        assert (pred != numpy_prediction(model, sample.image)).sum() <= 2


def test_mc_dropout_samples_with_the_seed_and_keeps_the_deterministic_pass_as_baseline(roots, monkeypatch):
    from fastseg.evaluate import scoring
    made, real = [], scoring.MonteCarlo
    monkeypatch.setattr(scoring, "MonteCarlo", lambda model, n, seed: made.append((n, seed)) or real(model, n, seed))
    samples, model = beyond_16(roots), PixelModel(dropout=0.5)
    plain = evaluate_samples(model, samples, torch.device("cpu"), bs=16)
    assert made == [] and plain.mc == 0 and plain.plain_scores is None
    mc = evaluate_samples(model, samples, torch.device("cpu"), bs=16, mc=3, seed=5)
    assert made == [(3, 5)] and mc.mc == 3
    assert mc.plain_scores == plain.scores and torch.equal(mc.plain_per_image, plain.per_image)
    assert not torch.equal(mc.per_image, plain.per_image)  # dropout's samples moved predictions


class RampModel(PixelModel):
    """PixelModel whose class-1 logit rises from the left edge to the right: a flip changes its prediction."""

    def forward(self, x):
        logits = self.net(x)
        logits[:, 1] += torch.linspace(-3, 3, x.shape[-1])
        return self.drop(logits)


def test_the_baseline_of_tta_is_the_plain_pass_and_that_of_mc_keeps_the_tta(roots):
    """TTA alone is measured against the model without TTA; --mc with --flip or --scales against the
    model without dropout under the same TTA, so the gain reported is Monte Carlo dropout's own. The
    bootstrap interval follows the seed."""
    samples, model, cpu = beyond_16(roots), RampModel(dropout=0.5), torch.device("cpu")
    plain = evaluate_samples(model, samples, cpu, bs=4)
    flipped = evaluate_samples(model, samples, cpu, bs=4, flip=True)
    assert torch.equal(flipped.plain_per_image, plain.per_image)
    assert not torch.equal(flipped.per_image, plain.per_image)
    mc = evaluate_samples(model, samples, cpu, bs=4, flip=True, mc=2)
    assert torch.equal(mc.plain_per_image, flipped.per_image) and mc.plain_scores == flipped.scores
    scaled = evaluate_samples(model, samples, cpu, bs=4, scales=(1.0, 0.75))
    mc = evaluate_samples(model, samples, cpu, bs=4, scales=(1.0, 0.75), mc=2)
    assert torch.equal(mc.plain_per_image, scaled.per_image)
    assert not torch.equal(scaled.per_image, flipped.per_image)
    assert evaluate_samples(model, samples, cpu, bs=4, seed=3).ci != plain.ci


def test_flip_reaches_the_prediction_and_undoes_itself_on_a_per_pixel_model(roots, monkeypatch):
    from fastseg.evaluate import scoring
    seen, real = [], scoring.predict_outputs
    monkeypatch.setattr(scoring, "predict_outputs", lambda m, x, flip, scales: seen.append((flip, scales, len(x)))
                        or real(m, x, flip, scales))
    averaged, real_tta = [], scoring.tta_probabilities
    monkeypatch.setattr(scoring, "tta_probabilities", lambda m, x, flip, scales: averaged.append((flip, scales))
                        or real_tta(m, x, flip, scales))
    plain = evaluate_samples(PixelModel(), beyond_16(roots), torch.device("cpu"), bs=4)
    assert averaged == []
    seen.clear()
    result = evaluate_samples(PixelModel(), beyond_16(roots), torch.device("cpu"), bs=4, flip=True)
    assert {(flip, scales) for flip, scales, _ in seen} == set(averaged) == {(True, (1.0,))}
    assert result.scores == plain.scores and torch.equal(result.per_image, plain.per_image)
    assert result.calibration["nll"] == pytest.approx(plain.calibration["nll"], rel=1e-5)  # log of the averages
    assert max(n for *_, n in seen) == 4 and sum(n for *_, n in seen) == 24  # batches of bs, every image once
    assert result.plain_per_image.dtype == torch.int64
    assert torch.equal(result.per_image, result.plain_per_image)  # a pixel's logits do not move with a flip


def test_a_folder_dataset_of_3_classes_is_scored_in_3_by_3_matrices(tmp_path):
    from fastseg.config import SynthConfig
    from fastseg.data.splits import DataRoots
    from fastseg.data.synthetic import folder_classes, generate_folder
    root = generate_folder(tmp_path / "shapes", SynthConfig(n_train=2, n_val=4, size=40, seed=1), num_classes=3)
    samples, model = build_split("val", DataRoots(None, folder=root)), PixelModel(classes=3)
    result = evaluate_samples(model, samples, torch.device("cpu"), bs=4, classes=folder_classes(3))
    assert result.per_image.shape == (len(samples), 3, 3)
    for i, sample in enumerate(samples):
        expected = numpy_cm(numpy_prediction(model, sample.image), read_mask(sample.mask), 3)
        assert np.abs(result.per_image[i].numpy() - expected).sum() <= 2, sample.id
    sky = ClassSet(("sky", "tree", "road"))  # class 0 is not background: foreground mIoU is every class's
    flipped = evaluate_samples(model, samples, torch.device("cpu"), bs=4, flip=True, classes=sky)
    assert flipped.plain_per_image.shape == (len(samples), 3, 3) and torch.equal(flipped.plain_per_image,
                                                                                   result.per_image)
    assert flipped.plain_scores["fg_miou"] == flipped.plain_scores["miou"] != result.scores["fg_miou"]


def test_each_process_scores_its_own_batches_and_together_every_image_once(roots, monkeypatch):
    """Two processes, simulated by rank: their rows are disjoint, cover every image and add up to one
    process's; a process left without a batch scores nothing."""
    from fastseg.evaluate import scoring
    samples, model = beyond_16(roots), PixelModel()
    alone = evaluate_samples(model, samples, torch.device("cpu"), bs=4)
    parts = []
    for r, world in ((0, 2), (1, 2), (39, 40)):
        monkeypatch.setattr(scoring, "rank", lambda r=r: r)
        monkeypatch.setattr(scoring, "world_size", lambda world=world: world)
        parts.append(evaluate_samples(model, samples, torch.device("cpu"), bs=4).per_image)
    scored = [{i for i in range(len(samples)) if part[i].sum() > 0} for part in parts]
    assert scored[0] and scored[1] and not scored[0] & scored[1] and scored[0] | scored[1] == set(range(24))
    assert torch.equal(parts[0] + parts[1], alone.per_image)
    assert scored[2] == set()
    assert abs(len(scored[0]) - len(scored[1])) <= 4  # batches of 4 dealt out in turn: the load is shared


def test_a_batch_of_16_images_scores_each_image_on_its_own_pixels(roots):
    samples = build_split("voc12-train", roots) + build_split("voc12-val", roots)
    model = PixelModel()
    result = evaluate_samples(model, samples, torch.device("cpu"), bs=16)
    assert len(samples) >= 18 and result.per_image.shape == (len(samples), 21, 21)
    for i, sample in enumerate(samples):
        mask = read_mask(sample.mask)
        expected = numpy_cm(numpy_prediction(model, sample.image), mask, 21)
        assert np.abs(result.per_image[i].numpy() - expected).sum() <= 2, sample.id  # float ties at most
        assert int(result.per_image[i].sum()) == int((mask != 255).sum())
    assert torch.equal(result.cm, result.per_image.sum(0))
    assert result.scores["miou"] == pytest.approx(numpy_miou(result.cm.numpy()))
    assert result.plain_scores is None
    assert json.dumps(result.ids) == json.dumps([s.id for s in samples])
    assert VOC.num == 21
