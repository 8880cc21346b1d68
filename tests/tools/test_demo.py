import json
from dataclasses import replace

import pytest
from typer.testing import CliRunner

from fastseg.cli import app
from fastseg.io.runs import read_metrics_csv
from fastseg.tools.demo import DemoConfig, run_demo, run_sweep


def test_a_tiny_fit_learns(synth_root, tmp_path):
    """The fast suite's learning check (the 8-epoch demo, which must beat predicting background
    everywhere, is in the slow set): three epochs on the tiny synthetic tree cut the training loss
    by a tenth and end above the untrained model; a fit whose steps do nothing fails here."""
    from fastseg.tools.demo import untrained_miou
    from fastseg.train.fit import fit
    from tests.conftest import tiny_config
    cfg = tiny_config(synth_root, tmp_path, "learn", epochs=3)
    _, rows = fit(cfg)
    assert rows[-1]["train_loss"] < 0.9 * rows[0]["train_loss"], [r["train_loss"] for r in rows]
    assert rows[-1]["valid_loss"] < rows[0]["valid_loss"]
    assert max(r["miou"] for r in rows) > untrained_miou(cfg)


@pytest.mark.slow
def test_short_demo_learns_far_above_predicting_background_everywhere(tmp_path):
    summary = run_demo(tmp_path, replace(DemoConfig(), epochs=8))
    # Predicting background everywhere scores ~0.03; an untrained model less. A run that learned
    # only the class prior (or nothing) stays near those.
    assert summary["background_only_miou"] == pytest.approx(0.033, abs=0.01)
    assert summary["segnet_miou"] > summary["background_only_miou"] + 0.05
    assert summary["segnet_miou"] > 4 * summary["untrained_miou"]
    rows = read_metrics_csv(tmp_path / "runs" / "segnet-1" / "metrics.csv")
    assert rows[-1]["train_loss"] < 0.8 * rows[0]["train_loss"]
    saved = json.loads((tmp_path / "demo_summary.json").read_text())
    assert saved["segnet_miou"] == summary["segnet_miou"]
    assert set(saved["seconds"]) == {"data", "find_lr", "fit", "evaluate", "control"}
    for name in ("lr_find.png", "best.safetensors", "metrics.json", "report.html"):
        assert (tmp_path / "runs" / "segnet-1" / name).is_file(), name


def test_sweep_runs_each_seed_on_shared_data_and_writes_its_table(tmp_path, monkeypatch):
    import fastseg.tools.demo as demo
    calls = []

    def fake_demo(out, cfg, data_root=None):
        import torch
        calls.append((out, cfg.seed, data_root, torch.get_num_threads()))
        return {"segnet_miou": 0.5 + cfg.seed / 10, "colour_control_miou": 0.04, "untrained_miou": 0.01,
                "calibration": {"ece": 0.01 * cfg.seed, "nll": 1.0, "entropy_auroc": 0.7}}
    monkeypatch.setattr(demo, "run_demo", fake_demo)
    result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path), "--seeds", "2,0,1", "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert [(c[1], c[2], c[3]) for c in calls] == [(s, tmp_path / "data", 1) for s in (2, 0, 1)]
    assert [c[0] for c in calls] == [tmp_path / f"seed-{s}" for s in (2, 0, 1)]
    saved = json.loads((tmp_path / "demo_sweep.json").read_text())
    assert [r["seed"] for r in saved["rows"]] == [2, 0, 1]
    assert [r["ece"] for r in saved["rows"]] == pytest.approx([0.02, 0.0, 0.01])
    assert saved["segnet_median"] == pytest.approx(0.6) and saved["segnet_min"] == pytest.approx(0.5)
    assert "SegNet median 0.600, minimum 0.500; colour control at most 0.040." in result.output


@pytest.mark.parametrize("args, message", [
    (["--seeds", "0,x"], "Error: --seeds 0,x is not a comma-separated list of integers, e.g. 0,1,2,3,4."),
    (["--seeds", "1,1"], "Error: --seeds 1,1 must list distinct non-negative integers."),
    (["--threads", "0"], "Error: --threads 0 must be at least 1."),
])
def test_bad_demo_options(tmp_path, args, message):
    result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path), *args])
    assert result.exit_code == 2 and message in result.output
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_demo_reaches_its_targets_on_seeds_0_to_2(tmp_path):
    # `make test-slow`: three whole demos, about 4.5 minutes each on 2 cores
    sweep = run_sweep(tmp_path, DemoConfig(), [0, 1, 2])
    assert sweep["segnet_min"] >= 0.5, sweep["rows"]
    assert sweep["control_max"] <= 0.1, sweep["rows"]
    for row in sweep["rows"]:
        assert row["segnet_miou"] > 10 * row["untrained_miou"]
