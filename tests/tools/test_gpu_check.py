"""`make gpu-check`'s script, dry-run at tiny sizes on the CPU: every stage runs and the summary is
written, so the script is known to work before a GPU machine is at hand."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_check_dry_run_runs_every_stage(tmp_path):
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "gpu_check.py"), "--dry-run", "--out", str(out),
                           "--only", "info,tests,data,fit,pipeline"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads((out / "gpu_check.json").read_text())
    assert [name for name in report["stages"]] == ["info", "tests", "data", "fit", "pipeline"]
    assert all(s["rc"] == 0 for s in report["stages"].values())
    fit = report["stages"]["fit"]["result"]
    assert len(fit["epochs"]) == 2 and fit["recipe_minutes"] > 0 and fit["train_img_s"] > 0
    assert report["stages"]["pipeline"]["result"]["img_s"] > 0
    assert "skipped" in (out / "tests.log").read_text() or "passed" in (out / "tests.log").read_text()
    text = (out / "gpu_check.md").read_text()
    assert "127 epochs ≈" in text and "| recipe_minutes (target 20) |" in text
