import json

import numpy as np
import pytest
import torch

from fastseg.cli import app
from fastseg.errors import FastsegError
from fastseg.evaluate.compare import Evaluated, aligned, paired_bootstrap, verdict
from fastseg.evaluate.scoring import resample_counts
from fastseg.train.fit import fit
from tests.conftest import runner, tiny_config

N = 60  # validation images


def per_image(correct_1: np.ndarray, correct_2: int = 5) -> torch.Tensor:
    """N×3×3 confusion matrices (rows truth, columns prediction): 80 background pixels all right,
    10 of class 1 with `correct_1[i]` right (the rest called background), 10 of class 2 with
    `correct_2` right."""
    cms = np.zeros((len(correct_1), 3, 3), np.int64)
    cms[:, 0, 0] = 80
    cms[:, 1, 1], cms[:, 1, 0] = correct_1, 10 - correct_1
    cms[:, 2, 2], cms[:, 2, 0] = correct_2, 10 - correct_2
    return torch.from_numpy(cms)


def miou_np(cm: np.ndarray) -> float:
    tp = np.diag(cm).astype(float)
    union = cm.sum(0) + cm.sum(1) - tp
    return float(np.nanmean(np.where(union > 0, tp / np.maximum(union, 1), np.nan)))


def test_a_real_gain_is_beyond_noise_and_its_interval_covers_the_true_difference():
    a, b = per_image(np.full(N, 5)), per_image(np.full(N, 9))
    true = miou_np(b.sum(0).numpy()) - miou_np(a.sum(0).numpy())  # 0.2096: class 1's IoU 0.5 → 0.9 over three
    test = paired_bootstrap([a, b])[0]
    assert test["difference"] == pytest.approx(true)
    lo, hi = test["ci95"]
    assert 0 < lo <= true <= hi and test["share_better"] == 1.0
    assert verdict("b", "a", test).startswith(f"b beats a by {true:.4f} mIoU (difference {true:+.4f}, 95 % interval")
    assert verdict("b", "a", test).endswith("beyond noise.")
    worse = paired_bootstrap([b, a])[0]
    assert worse["ci95"][1] < 0 and verdict("a", "b", worse).startswith("a trails b by")


def test_a_difference_inside_the_noise_is_called_so():
    rng = np.random.default_rng(0)
    a = per_image(np.full(N, 5))
    b = per_image(5 + rng.choice([-3, 3], size=N))  # as often better as worse, image by image
    test = paired_bootstrap([a, b])[0]
    lo, hi = test["ci95"]
    assert lo < 0 < hi and 0.05 < test["share_better"] < 0.95
    assert verdict("b", "a", test).endswith("within noise, no difference shown.")


def test_a_run_compared_with_itself_differs_by_exactly_zero():
    a = per_image(np.random.default_rng(1).integers(0, 11, size=N))
    test = paired_bootstrap([a, a.clone()])[0]
    assert test["difference"] == 0 and test["ci95"] == [0.0, 0.0] and test["share_better"] == 0.0
    assert verdict("a", "a", test) == "a and a score the same on every resample: no difference."


def test_the_paired_bootstrap_matches_a_direct_numpy_computation():
    rng = np.random.default_rng(2)
    a, b = per_image(rng.integers(0, 11, size=N), 4), per_image(rng.integers(2, 11, size=N), 6)
    test = paired_bootstrap([a, b], samples=300, seed=5)[0]
    counts = resample_counts(N, 300, 5).numpy()  # the same resamples: draws of each image
    diffs = [miou_np(np.tensordot(c, b.numpy(), 1)) - miou_np(np.tensordot(c, a.numpy(), 1)) for c in counts]
    assert test["ci95"] == pytest.approx(list(np.quantile(diffs, [0.025, 0.975])), abs=1e-12)
    assert test["share_better"] == pytest.approx(np.mean(np.array(diffs) > 0))


def evaluated(name, ids, cms, split="voc12-val"):
    return Evaluated(name, None, split, ids, cms, [])


def test_runs_on_other_splits_or_images_are_refused_and_images_are_paired_by_id():
    a = per_image(np.arange(N) % 11)
    ids = [f"2008_{i:06d}" for i in range(N)]
    with pytest.raises(FastsegError, match=r"^b was evaluated on seg11valid and a on voc12-val; evaluate both"):
        aligned([evaluated("a", ids, a), evaluated("b", ids, a, "seg11valid")])
    with pytest.raises(FastsegError, match=r"^b and a were evaluated on different images of voc12-val \(59 and 60\)"):
        aligned([evaluated("a", ids, a), evaluated("b", ids[1:], a[1:])])
    shuffled = np.random.default_rng(3).permutation(N)
    _, b = aligned([evaluated("a", ids, a), evaluated("b", [ids[i] for i in shuffled], a[shuffled])])
    assert torch.equal(b, a)  # rows put back in a's image order


@pytest.fixture(scope="module")
def two_runs(synth_root, tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    for name, seed in (("a", 1), ("b", 2)):
        fit(tiny_config(synth_root, runs, name, epochs=1, seed=seed))
    return runs


def test_compare_from_the_cli(two_runs, tmp_path):
    never = runner.invoke(app, ["compare", str(two_runs / "a"), str(two_runs / "b"), "--out", str(tmp_path)])
    assert never.exit_code == 2
    assert " ".join(never.output.split()) == (f"Error: Run {two_runs / 'a'} has no evaluation to compare (no "
                                              f"per_image_cm.safetensors); run `fastseg evaluate {two_runs / 'a'}` "
                                              "first.")
    for name in ("a", "b"):
        assert runner.invoke(app, ["evaluate", str(two_runs / name)]).exit_code == 0
    result = runner.invoke(app, ["compare", str(two_runs / "a"), str(two_runs / "b"), str(two_runs / "a"),
                                 "--out", str(tmp_path / "cmp")], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    metrics = {n: json.loads((two_runs / n / "metrics.json").read_text()) for n in ("a", "b")}
    assert saved["table"][0]["values"] == pytest.approx([metrics["a"]["miou"], metrics["b"]["miou"],
                                                         metrics["a"]["miou"]])
    assert saved["tests"][0]["difference"] == pytest.approx(metrics["b"]["miou"] - metrics["a"]["miou"])
    assert saved["tests"][1]["verdict"] == "a and a score the same on every resample: no difference."
    assert saved["tests"][0]["verdict"] in " ".join(result.output.split())
    assert (tmp_path / "cmp" / "compare.png").stat().st_size > 10_000
    assert "| IoU cat |" in (tmp_path / "cmp" / "compare.md").read_text()
