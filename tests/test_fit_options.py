"""Each `fit` option takes effect: tiny runs (width 0.0625, crop 48, bs 4) checked against what the
option promises, not only that the run finishes."""

import json

import numpy as np
import pytest
import torch
from fastai.callback.core import Callback

from fastseg.runs import read_metrics_csv
from fastseg.training import POLY_POWER, fit
from tests.test_training import tiny_config


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
