import json
from dataclasses import replace

import pytest

from fastseg.demo import DemoConfig, run_demo


def test_short_demo_learns_far_above_its_untrained_score(tmp_path):
    summary = run_demo(tmp_path, replace(DemoConfig(), epochs=8))
    assert summary["segnet_miou"] > 4 * summary["untrained_miou"]
    assert summary["segnet_miou"] > summary["untrained_miou"] + 0.03
    saved = json.loads((tmp_path / "demo_summary.json").read_text())
    assert saved["segnet_miou"] == summary["segnet_miou"]
    for name in ("lr_find.png", "best.safetensors", "metrics.json", "report.html"):
        assert (tmp_path / "runs" / "segnet-1" / name).is_file(), name


@pytest.mark.slow
def test_full_demo_beats_the_colour_only_control(tmp_path):
    summary = run_demo(tmp_path)  # `make test-slow`: the whole demo, about 4.5 minutes on 2 cores
    assert summary["segnet_miou"] >= 0.5
    assert summary["segnet_miou"] > summary["colour_control_miou"] + 0.2
    assert summary["segnet_miou"] > 10 * summary["untrained_miou"]
