import math

import numpy as np
import pytest
import torch

from fastseg.evaluate.metrics import ConfusionState, confusion_matrix, scores, seg_metrics


def test_hand_computed_tiny_case():
    target = torch.tensor([[0, 0, 1, 1], [2, 2, 255, 255]])
    pred = torch.tensor([[0, 1, 1, 1], [2, 0, 2, 0]])
    cm = confusion_matrix(pred, target, num_classes=3)
    assert cm.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    s = scores(cm)
    # IoU: class0 1/(2+2-1)=1/3, class1 2/(2+3-2)=2/3, class2 1/(2+1-1)=1/2
    assert s["iou"] == pytest.approx([1 / 3, 2 / 3, 1 / 2])
    assert s["miou"] == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)
    assert s["fg_miou"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert s["pixel_acc"] == pytest.approx(4 / 6)
    assert s["mean_acc"] == pytest.approx((1 / 2 + 1 + 1 / 2) / 3)
    assert s["fw_iou"] == pytest.approx((2 / 6) * (1 / 3) + (2 / 6) * (2 / 3) + (2 / 6) * (1 / 2))


def test_absent_class_is_left_out_of_the_mean():
    target = torch.tensor([0, 0, 2, 2])
    pred = torch.tensor([0, 0, 2, 0])
    s = scores(confusion_matrix(pred, target, num_classes=3))
    assert math.isnan(s["iou"][1])
    assert s["miou"] == pytest.approx((2 / 3 + 1 / 2) / 2)


def numpy_reference(pred, target, c):
    """Independent per-class computation with sets of pixel positions."""
    keep = target != 255
    p, t = pred[keep], target[keep]
    ious, accs = [], []
    for k in range(c):
        inter = np.sum((p == k) & (t == k))
        union = np.sum((p == k) | (t == k))
        ious.append(inter / union if union else np.nan)
        accs.append(inter / np.sum(t == k) if np.sum(t == k) else np.nan)
    return np.nanmean(ious), np.mean(p == t), np.nanmean(accs), ious


def test_agrees_with_numpy_reference_on_random_data_with_void():
    rng = np.random.default_rng(0)
    target = rng.integers(0, 21, size=(4, 33, 47))
    target[rng.random(target.shape) < 0.2] = 255
    pred = np.where(rng.random(target.shape) < 0.6, target, rng.integers(0, 21, size=target.shape)) % 255
    s = scores(confusion_matrix(torch.from_numpy(pred), torch.from_numpy(target), 21))
    miou, acc, macc, ious = numpy_reference(pred, target, 21)
    assert s["miou"] == pytest.approx(miou)
    assert s["pixel_acc"] == pytest.approx(acc)
    assert s["mean_acc"] == pytest.approx(macc)
    assert np.allclose(s["iou"], ious, equal_nan=True)


def test_batchwise_accumulation_equals_one_shot():
    torch.manual_seed(0)
    logits = torch.randn(6, 21, 20, 30)
    target = torch.randint(0, 21, (6, 20, 30))
    target[:, :3] = 255
    state = ConfusionState(21)
    for i in range(0, 6, 2):
        state.update(logits[i:i + 2], target[i:i + 2])
    one_shot = confusion_matrix(logits.argmax(1), target, 21)
    assert torch.equal(state.total(), one_shot)
    assert state.scores()["miou"] == pytest.approx(scores(one_shot)["miou"])


def test_fastai_metrics_share_one_matrix():
    class FakeLearn:
        pass
    learn = FakeLearn()
    learn.pred = torch.randn(2, 21, 8, 8)
    learn.dl = None
    learn.yb = (torch.randint(0, 21, (2, 8, 8)),)
    metrics = seg_metrics(per_class=True)
    for m in metrics:
        m.reset()
    for m in metrics:
        m.accumulate(learn)
    expected = scores(confusion_matrix(learn.pred.argmax(1), learn.yb[0], 21))
    assert [m.name for m in metrics[:5]] == ["miou", "fg_miou", "pixel_acc", "mean_acc", "fw_iou"]
    assert metrics[0].value == pytest.approx(expected["miou"])
    assert metrics[5 + 15].name == "iou_person"
    assert metrics[2].state.cm.sum() == 2 * 8 * 8  # counted once, not once per metric


def test_foreground_miou_keeps_class_0_when_it_is_not_background():
    import torch

    from fastseg.classes import ClassSet
    from fastseg.evaluate.metrics import scores
    from fastseg.evaluate.scoring import fg_miou_note
    cm = torch.tensor([[8, 2, 0], [1, 5, 0], [0, 0, 4]])
    with_bg, without = scores(cm, background=True), scores(cm, background=False)
    assert with_bg["fg_miou"] == pytest.approx((with_bg["iou"][1] + with_bg["iou"][2]) / 2)
    assert without["fg_miou"] == pytest.approx(without["miou"]) and without["miou"] == with_bg["miou"]
    assert fg_miou_note(ClassSet(("sky", "tree", "road"))) == ("every class: class 0 is 'sky', not background, so "
                                                              "foreground mIoU equals mIoU")
    from fastseg.evaluate.metrics import seg_metrics
    for classes, same in ((ClassSet(("sky", "tree", "road")), True), (ClassSet(("background", "tree", "road")), False)):
        metrics = seg_metrics(classes, per_class=True)
        metrics[0].state.cm = cm  # what `fit` accumulated
        miou, fg_miou = metrics[0].value, metrics[1].value
        assert (fg_miou == pytest.approx(miou)) is same
        assert [m.name for m in metrics[5:]] == [f"iou_{n}" for n in classes.names]


def test_truth_shares_divide_each_row_by_its_own_sum():
    from fastseg.evaluate.metrics import truth_shares
    shares = truth_shares(torch.tensor([[3, 1, 0], [1, 0, 0], [0, 0, 0]]))
    assert shares.tolist() == [[0.75, 0.25, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]


def test_a_fresh_state_totals_zeros_of_its_class_count():
    state = ConfusionState(4)
    assert state.total().dtype == torch.long and state.total().tolist() == [[0] * 4] * 4
    assert ConfusionState().total().shape == (21, 21)


def test_state_counts_in_its_own_class_count_and_treats_class_0_as_background():
    logits = torch.tensor([[[[5.0, 0.0]], [[0.0, 5.0]], [[0.0, 0.0]]]])  # 1×3×1×2: predicts 0, 1
    state = ConfusionState(3)
    state.update(logits, torch.tensor([[[0, 2]]]))
    assert state.cm.tolist() == [[1, 0, 0], [0, 0, 0], [0, 1, 0]]
    s = state.scores()
    assert (s["miou"], s["fg_miou"]) == (pytest.approx(1 / 3), 0.0)  # IoU 1, 0, 0; fg leaves class 0 out
    state.update(logits, torch.tensor([[[0, 1]]]))
    assert state.scores()["miou"] == pytest.approx((1 + 1 / 2 + 0) / 3)  # cached scores refreshed


def test_per_class_metrics_read_each_class_iou():
    metrics = seg_metrics()
    assert len(metrics) == 5
    metrics = seg_metrics(per_class=True)
    metrics[0].state.cm = torch.diag(torch.arange(21)) + 1
    expected = scores(metrics[0].state.cm)["iou"]
    assert [m.value for m in metrics[5:]] == pytest.approx(expected)


def test_classes_with_a_single_pixel_and_classes_only_predicted():
    # class 0: one true pixel, right; class 1: never true, predicted once; class 2: 2 of 3 right
    s = scores(torch.tensor([[1, 0, 0], [0, 0, 0], [0, 1, 2]]))
    assert s["iou"] == pytest.approx([1.0, 0.0, 2 / 3])
    assert math.isnan(s["acc"][1]) and s["acc"][0] == 1.0
    assert s["mean_acc"] == pytest.approx((1 + 2 / 3) / 2)
    one = scores(torch.tensor([[1, 0], [0, 0]]))  # a single scored pixel
    assert (one["pixel_acc"], one["fw_iou"], one["miou"]) == (1.0, 1.0, 1.0)
