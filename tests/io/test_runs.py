import json
import os
import subprocess
import sys

from safetensors.torch import save

from fastseg.cli import app
from fastseg.io.runs import describe_run, list_runs
from fastseg.train.fit import fit
from tests.conftest import runner, tiny_config


def fake_run(folder, epochs=4, done=2, batch=0, wait=0, patience=None, monitor="miou"):
    """A run folder as fit wrote it before the one-file format, by hand: config.json, metrics.csv, and
    best.json and last.json (the checkpoint's JSON skeleton) beside tensor files holding no tensors."""
    folder.mkdir(parents=True)
    config = {"arch": "segnet", "width": 0.25, "epochs": epochs, "patience": patience, "monitor": monitor,
              "data": {"voc": "data/VOCdevkit", "sbd": None, "train_split": "train-aug", "valid_split": "voc12-val"}}
    (folder / "config.json").write_text(json.dumps(config))
    rows = "epoch,miou,iou_cat,seconds\n" + "".join(f"{e},{0.1 * e},{0.5 - 0.1 * e},10.0\n" for e in range(1, done + 1))
    (folder / "metrics.csv").write_text(rows)
    metrics = {"miou": 0.1 * done, "iou_cat": 0.4}
    (folder / "best.safetensors").write_bytes(save({}))
    (folder / "best.json").write_text(json.dumps({"epoch": done, "metrics": metrics}))
    (folder / "last.safetensors").write_bytes(save({}))
    tracker = {"__dict__": [["best", 0.1 * done], ["best_epoch", done], ["wait", wait]]}
    skeleton = {"__dict__": [["epoch", done], ["batch", batch], ["tracker", tracker]]}
    (folder / "last.json").write_text(json.dumps(skeleton))
    return folder


def test_each_state_is_told_apart(tmp_path):
    runs = tmp_path / "runs"
    fake_run(runs / "done", epochs=2, done=2)
    fake_run(runs / "cut", epochs=4, done=1, batch=3)
    fake_run(runs / "early", epochs=6, done=3, wait=2, patience=2)
    fake_run(runs / "busy", epochs=4, done=1)
    (runs / "busy" / ".lock").write_text(f"{os.getpid()}\n")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    fake_run(runs / "orphan", epochs=4, done=1)  # a lock left by a dead process: not running
    (runs / "orphan" / ".lock").write_text(dead.stdout)
    fake_run(runs / "nan", epochs=4, done=2)
    (runs / "nan" / "failed.json").write_text('{"error": "The training loss became NaN"}')
    (runs / "young").mkdir()
    (runs / "young" / "config.json").write_text((runs / "done" / "config.json").read_text())
    (runs / "broken").mkdir()
    (runs / "broken" / "config.json").write_text("{not json")
    (runs / "photos").mkdir()
    (runs / "photos" / "a.jpg").write_bytes(b"x")
    (runs / "lr").mkdir()
    (runs / "lr" / "lr_find.json").write_text("{}")
    states = {r["name"]: r["state"] for r in list_runs(runs)}
    assert states == {"done": "finished", "cut": "interrupted", "early": "stopped early", "busy": "running",
                      "orphan": "interrupted", "nan": "failed", "young": "incomplete", "broken": "damaged",
                      "photos": "foreign", "lr": "find-lr only"}


def test_a_row_holds_the_monitored_best_and_the_wall_time(tmp_path):
    row = describe_run(fake_run(tmp_path / "r", epochs=4, done=3, monitor="iou:cat", batch=2))
    assert (row["epochs_done"], row["epochs"], row["best_epoch"], row["best"]) == (3, 4, 3, 0.4)
    assert (row["monitor"], row["best_miou"], row["seconds"]) == ("iou:cat", 0.1 * 3, 30.0)
    assert row["splits"] == "train-aug / voc12-val" and row["bytes"] > 0


def test_runs_lists_a_real_run_and_prints_json(synth_root, tmp_path):
    run, rows = fit(tiny_config(synth_root, tmp_path / "runs", "real", epochs=1))
    (tmp_path / "runs" / "junk").mkdir()
    result = runner.invoke(app, ["runs", "--runs-dir", str(tmp_path / "runs"), "--json"])
    assert result.exit_code == 0, result.output
    listed = {r["name"]: r for r in json.loads(result.output)}
    assert listed["real"]["state"] == "finished" and listed["junk"]["state"] == "foreign"
    assert listed["real"]["best_miou"] == rows[0]["miou"] and listed["real"]["epochs_done"] == 1
    table = runner.invoke(app, ["runs", "--runs-dir", str(tmp_path / "runs")], env={"COLUMNS": "200"})
    assert table.exit_code == 0 and "real" in table.output and "finished" in table.output
    assert "Traceback" not in table.output


def test_runs_of_a_missing_folder_is_one_sentence(tmp_path):
    result = runner.invoke(app, ["runs", "--runs-dir", str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert result.output.strip() == (f"Error: Runs folder {tmp_path / 'nope'} does not exist; pass --runs-dir DIR, "
                                     "the folder `fastseg fit` wrote its runs into.")
