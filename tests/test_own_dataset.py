"""A user's own dataset from the command line: a generated 5-class folder dataset (index masks, and
RGB colour masks) through synth, check-data, find-lr, fit with TensorBoard, evaluate, predict and
export, with the dataset's class names and colours in every output; and fine-tuning a VOC run on it."""

import csv
import json
import math

import numpy as np
import onnx
import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from fastseg.classes import read_classes
from fastseg.cli import app
from fastseg.io.serialize import read_meta
from fastseg.models import create_model
from fastseg.models.weights import load_model
from tests.conftest import cli_fit, data_args, runner

TINY_MODEL = ["--pretrained", "none", "--width", "0.0625", "--crop", "32", "--bs", "4", "--opt", "adam"]
TINY_FIT = [*TINY_MODEL, "--lr", "1e-2"]


def invoke(*args):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module", params=[False, True], ids=["index-masks", "colour-masks"])
def own_run(request, tmp_path_factory):
    """(dataset folder, its classes, run folder, outputs of every command) for one fit of 2 epochs."""
    tmp = tmp_path_factory.mktemp("own")
    data, runs = tmp / "shapes", tmp / "runs"
    colour = ["--colour-masks"] if request.param else []
    out = {"synth": invoke("synth", "--layout", "folder", "--classes", 5, *colour, "--out", data, "--n-train", 16,
                           "--n-val", 6, "--size", 64)}
    classes = read_classes(data / "classes.txt")
    out["check"] = invoke("check-data", "--data", data)
    out["find_lr"] = invoke("find-lr", "--data", data, *TINY_MODEL, "--num-it", 10, "--runs-dir", runs, "--name", "lr")
    out["fit"] = invoke("fit", "--data", data, *TINY_FIT, "--epochs", 2, "--log", "tensorboard", "--class-weights",
                        "median-freq", "--monitor", f"iou:{classes.names[1]}", "--runs-dir", runs, "--name", "run")
    out["evaluate"] = invoke("evaluate", runs / "run")
    out["predict"] = invoke("predict", data / "images", "--weights", runs / "run", "--out", tmp / "masks")
    out["export"] = invoke("export", runs / "run", "--format", "folder", "--out", tmp / "export", "--onnx")
    return data, classes, runs / "run", out, tmp


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """A 5-class folder dataset (index masks) for the tests that need no trained run."""
    data = tmp_path_factory.mktemp("shapes") / "shapes"
    invoke("synth", "--layout", "folder", "--classes", 5, "--out", data, "--n-train", 16, "--n-val", 6, "--size", 64)
    return data


def test_synth_writes_a_folder_dataset_whose_masks_check_clean(own_run):
    data, classes, _, out, _ = own_run
    assert classes.num == 5 and classes.names[0] == "background"
    assert len(list((data / "images").iterdir())) == 22 and len(list((data / "masks").iterdir())) == 22
    assert f"Classes (5 with colours (RGB masks accepted)): {', '.join(classes.names)}; void (255): outline." in \
        out["check"]
    assert "train │     16" in out["check"] and "val   │      6" in out["check"]


def test_fit_names_the_dataset_classes_in_metrics_and_the_sidecar(own_run):
    _, classes, run, out, _ = own_run
    with open(run / "metrics.csv") as f:
        header = next(csv.reader(f))
    assert header[-5:] == [f"iou_{n}" for n in classes.names]
    best = read_meta(run / "best.safetensors")
    assert best["classes"] == list(classes.names) and best["num_classes"] == 5
    assert best["colours"] == [list(c) for c in classes.colours] and best["void"] == "outline"
    assert best["monitor"] == f"iou:{classes.names[1]}"
    model, _ = load_model(run / "best.safetensors")
    assert model.head.out_channels == 5
    assert "Leakage check: train (16) vs val (6): no shared ids." in out["fit"]
    found = json.loads((run.parent / "lr" / "lr_find.json").read_text())  # find-lr on the folder dataset
    assert found["arch"] == "segnet" and found["valley"] is not None and (run.parent / "lr" / "lr_find.png").is_file()
    assert all(name in out["fit"] for name in classes.names)  # the class-weights table


def test_tensorboard_scalars_equal_metrics_csv(own_run):
    _, classes, run, _, _ = own_run
    with open(run / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    tags = {"loss/train": "train_loss", "loss/valid": "valid_loss", "lr": "lr", "metrics/miou": "miou",
            "metrics/fg_miou": "fg_miou", **{f"iou/{n}": f"iou_{n}" for n in classes.names}}
    assert set(tags) <= set(events.Tags()["scalars"])
    for tag, column in tags.items():
        logged = [(e.step, e.value) for e in events.Scalars(tag)]
        expected = [(int(r["epoch"]), float(r[column])) for r in rows]
        assert [s for s, _ in logged] == [s for s, _ in expected] == [1, 2]
        for (_, got), (_, want) in zip(logged, expected, strict=True):
            assert (math.isnan(got) and math.isnan(want)) or got == pytest.approx(want, rel=1e-6), tag
    grid = events.Images("predictions")
    assert [g.step for g in grid] == [1, 2] and grid[-1].width == 3 * 64  # image | truth | prediction


def test_evaluate_scores_and_reports_with_the_dataset_classes(own_run):
    _, classes, run, out, _ = own_run
    metrics = json.loads((run / "metrics.json").read_text())
    assert list(metrics["per_class"]) == list(classes.names) and metrics["split"] == "val"
    assert metrics["fg_miou_note"] == "classes 1..4: without background"
    assert all(p["truth"] in classes.names for p in metrics["confused_pairs"])
    assert all(name in out["evaluate"] for name in classes.names)
    report = (run / "report.md").read_text()
    assert all(f"| {name} |" in report for name in classes.names)
    assert (run / "confusion_matrix.png").is_file()


def test_predict_colours_masks_in_the_dataset_colours(own_run):
    data, classes, _, _, tmp = own_run
    mask = Image.open(tmp / "masks" / "img_0000.png")
    assert mask.mode == "P" and mask.size == Image.open(next(data.glob("images/img_0000.*"))).size
    assert mask.getpalette()[:15] == [v for c in classes.colours for v in c]
    assert set(np.unique(np.array(mask))) <= set(range(5))


def test_export_carries_the_classes_into_config_and_onnx(own_run):
    _, classes, _, _, tmp = own_run
    config = json.loads((tmp / "export" / "config.json").read_text())
    assert [c["name"] for c in config["classes"]] == list(classes.names)
    assert [tuple(c["color"]) for c in config["classes"]] == list(classes.colours)
    props = {p.key: p.value for p in onnx.load(str(tmp / "export" / "model.onnx")).metadata_props}
    assert [c["name"] for c in json.loads(props["fastseg_classes"])] == list(classes.names)
    assert "5 classes (background, " in (tmp / "export" / "README.md").read_text()
    model, meta = load_model(tmp / "export" / "model.safetensors")  # the export folder needs nothing else
    assert meta["classes"][1]["name"] == classes.names[1] and model.head.out_channels == 5


def test_evaluating_on_a_dataset_of_another_class_count_is_refused(own_run, synth_root):
    _, _, run, _, _ = own_run
    result = runner.invoke(app, ["evaluate", str(run), *data_args(synth_root), "--split", "voc12-val"])
    assert result.exit_code == 2
    assert "predicts 5 classes but the dataset has 21" in result.output


@pytest.fixture(scope="module")
def voc_weights(synth_root, tmp_path_factory):
    """best.safetensors of a one-epoch 21-class SegNet run (width 1/16) on the synthetic VOC tree."""
    runs = tmp_path_factory.mktemp("voc-runs")
    assert cli_fit(synth_root, runs, "--name", "voc").exit_code == 0
    return runs / "voc" / "best.safetensors"


def test_a_voc_run_fine_tunes_on_the_folder_dataset_with_a_new_head(shapes, voc_weights, tmp_path):
    data, source = shapes, voc_weights
    result = runner.invoke(app, ["fit", "--data", str(data), *TINY_FIT, "--pretrained", str(source), "--epochs", "1",
                                 "--runs-dir", str(tmp_path / "runs"), "--name", "tuned"])
    assert result.exit_code == 0, result.output
    assert (f"Fine-tuning {source}: encoder and decoder loaded; the head is re-initialised for 5 classes (the "
            "weights have 21).") in " ".join(result.output.split())
    voc, _ = load_model(source)
    fresh = create_model("segnet", 5, pretrained=str(source), width=0.0625)
    for name, tensor in voc.state_dict().items():
        if not name.startswith("head."):
            assert torch.equal(fresh.state_dict()[name], tensor), name
    assert fresh.head.out_channels == 5


def test_fine_tuning_weights_of_another_arch_is_one_sentence(synth_root, voc_weights, tmp_path):
    result = runner.invoke(app, ["fit", *data_args(synth_root), "--arch", "skip", *TINY_FIT, "--pretrained",
                                 str(voc_weights), "--epochs", "1", "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 2 and not (tmp_path / "runs").exists()
    assert "are a segnet of width 0.0625; fine-tune them with --arch segnet --width 0.0625." in result.output


@pytest.mark.parametrize("args, message", [
    (["--data", "{data}", "--voc", "{data}"], "Pass --voc DIR (a VOC-layout dataset) or --data DIR (a folder dataset "
                                              "with images/, masks/ and classes.txt), not both."),
    (["--data", "{data}", "--sbd", "{data}"], "--sbd, --voc11 and --classes are for --voc; a folder dataset reads "
                                              "DIR/classes.txt."),
    (["--data", "{data}", "--train", "train-aug"], "Unknown split 'train-aug'; choose one of: train, val."),
    (["--data", "{data}", "--monitor", "iou:cat"], "Unknown --monitor 'iou:cat'; choose one of: miou, fg_miou, "
                                                   "pixel_acc or iou:CLASS with CLASS one of background, "),
])
def test_wrong_folder_options_are_one_sentence_and_write_nothing(shapes, tmp_path, args, message):
    data = shapes
    runs = tmp_path / "runs"
    result = runner.invoke(app, ["fit", *[a.format(data=data) for a in args], *TINY_FIT, "--epochs", "1",
                                 "--runs-dir", str(runs)])
    assert result.exit_code == 2, result.output
    assert " ".join(result.output.split()).startswith(f"Error: {message}")
    assert not runs.exists()


def test_a_folder_dataset_without_classes_txt_is_refused_by_every_data_command(shapes, tmp_path):
    import shutil
    data = shutil.copytree(shapes, tmp_path / "copy")
    (data / "classes.txt").unlink()
    before = sorted(p.name for p in data.rglob("*"))
    for command in (["check-data"], ["show-batch", "--out", str(tmp_path / "fig")], ["fit", *TINY_FIT, "--epochs", "1",
                                                                                    "--runs-dir", str(tmp_path / "r")]):
        result = runner.invoke(app, [*command, "--data", str(data)])
        assert result.exit_code == 2, result.output
        assert " ".join(result.output.split()) == (f"Error: Classes file {data / 'classes.txt'} does not exist; write "
                                                   "one class name per line, class 0 first (an optional R G B colour "
                                                   "after each name).")
    assert sorted(p.name for p in data.rglob("*")) == before and not (tmp_path / "r").exists()


def test_show_batch_draws_a_folder_dataset_in_its_colours(shapes, tmp_path, monkeypatch):
    import fastseg.evaluate.figures
    palettes, draw = [], fastseg.evaluate.figures.plot_batch

    def record(x, y, path, title, palette=None):
        palettes.append(palette)
        return draw(x, y, path, title, palette)
    monkeypatch.setattr(fastseg.evaluate.figures, "plot_batch", record)
    data, classes = shapes, read_classes(shapes / "classes.txt")
    output = invoke("show-batch", "--data", data, "--crop", 32, "--n", 2, "--out", tmp_path)
    assert "Leakage check: train (16) vs val (6)" in output
    assert Image.open(tmp_path / "train_batch.png").size[0] > 100 and (tmp_path / "valid_batch.png").is_file()
    assert palettes == [classes.palette()] * 2 and classes.palette()[3:6] == list(classes.colours[1])


def test_evaluate_takes_a_folder_dataset_for_a_bare_weights_file(own_run, tmp_path):
    import shutil
    data, classes, run, _, _ = own_run
    shutil.copy(run / "best.safetensors", tmp_path)  # no config.json beside it: the data must be named
    result = runner.invoke(app, ["evaluate", str(tmp_path / "best.safetensors")])
    assert result.exit_code == 2 and "pass --voc (and --sbd) or --data" in result.output
    invoke("evaluate", tmp_path / "best.safetensors", "--data", data, "--split", "val")
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["split"] == "val" and metrics["images"] == 6 and list(metrics["per_class"]) == list(classes.names)
    assert metrics["miou"] == pytest.approx(json.loads((run / "metrics.json").read_text())["miou"], abs=1e-12)


def test_tensorboard_missing_is_one_sentence_before_anything_is_written(shapes, tmp_path, monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # `import tensorboard` now raises ImportError
    result = runner.invoke(app, ["fit", "--data", str(shapes), *TINY_FIT, "--epochs", "1", "--log", "tensorboard",
                                 "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 2
    assert " ".join(result.output.split()) == ("Error: --log tensorboard needs the tensorboard package; install it "
                                               "with pip install 'fastseg[tensorboard]' (or pass --log none).")
    assert not (tmp_path / "runs").exists()


def test_runs_lists_a_folder_run_with_its_monitored_class(own_run):
    _, classes, run, _, _ = own_run
    rows = json.loads(invoke("runs", "--runs-dir", run.parent, "--json"))
    row = next(r for r in rows if r["name"] == "run")
    best = read_meta(run / "best.safetensors")
    assert row["state"] == "finished" and row["monitor"] == f"iou:{classes.names[1]}"
    assert row["best"] == best["metrics"][f"iou_{classes.names[1]}"] and row["splits"] == "train / val"


def test_a_folder_run_resumes_and_refuses_changed_classes(shapes, tmp_path):
    import shutil
    data = shutil.copytree(shapes, tmp_path / "shapes")
    for name in ("train.txt", "val.txt"):
        (data / name).unlink()
    runs = tmp_path / "runs"
    output = invoke("fit", "--data", data, *TINY_FIT, "--epochs", 1, "--runs-dir", runs, "--name", "r")
    assert f"Splits: {data} has no train.txt or val.txt, so 10% of its images" in " ".join(output.split())
    invoke("fit", "--resume", runs / "r", "--epochs", 2)
    with open(runs / "r" / "metrics.csv") as f:
        assert [r["epoch"] for r in csv.DictReader(f)] == ["1", "2"]
    text = (data / "classes.txt").read_text().replace("stripes0-disk", "renamed")
    (data / "classes.txt").write_text(text)
    before = (runs / "r" / "metrics.csv").read_bytes()
    result = runner.invoke(app, ["fit", "--resume", str(runs / "r"), "--epochs", "3"])
    assert result.exit_code == 2
    assert "was trained on the classes background, stripes0-disk, " in " ".join(result.output.split())
    assert (runs / "r" / "metrics.csv").read_bytes() == before


def test_tensorboard_logs_the_epoch_early_stopping_ended(tmp_path):
    """RunRecorder raises CancelFitException in the epoch's after_epoch, before TensorBoardLog's: after_fit
    logs that last row."""
    from types import SimpleNamespace

    from torch.utils.tensorboard import SummaryWriter

    from fastseg.classes import ClassSet
    from fastseg.train.tensorboard import TENSORBOARD_DIR, TensorBoardLog
    classes = ClassSet(("background", "thing"))
    row = {"epoch": 1, "train_loss": 0.5, "valid_loss": 0.6, "lr": 1e-3, "miou": 0.4, "fg_miou": 0.3,
           "pixel_acc": 0.9, "mean_acc": 0.5, "fw_iou": 0.8, "iou_background": 0.5, "iou_thing": 0.3}
    recorder = SimpleNamespace(rows=[row])
    log = TensorBoardLog(tmp_path, recorder, classes)
    log.writer, log.logged = SummaryWriter(str(tmp_path / TENSORBOARD_DIR)), 0
    log.grid = lambda: np.zeros((4, 12, 3), np.uint8)
    log.after_fit()  # no after_epoch ran for this row
    events = EventAccumulator(str(tmp_path / TENSORBOARD_DIR))
    events.Reload()
    assert [e.value for e in events.Scalars("iou/thing")] == [pytest.approx(0.3)]


def test_a_classes_file_renames_a_voc_layout_dataset_in_fit_and_evaluate(synth_root, tmp_path):
    from fastseg.classes import ClassSet, write_classes
    names = tuple(f"kind{i}" for i in range(21))
    write_classes(ClassSet(names), tmp_path / "mine.txt")
    result = cli_fit(synth_root, tmp_path / "runs", "--name", "mine", "--classes", str(tmp_path / "mine.txt"))
    assert result.exit_code == 0, result.output
    with open(tmp_path / "runs" / "mine" / "metrics.csv") as f:
        assert next(csv.reader(f))[-21:] == [f"iou_{n}" for n in names]
    invoke("evaluate", tmp_path / "runs" / "mine")
    metrics = json.loads((tmp_path / "runs" / "mine" / "metrics.json").read_text())
    assert list(metrics["per_class"]) == list(names)
    assert metrics["fg_miou"] == pytest.approx(metrics["miou"])  # class 0 is not named background
    assert metrics["fg_miou_note"].startswith("every class: class 0 is 'kind0'")


def test_evaluate_of_bare_weights_needs_a_dataset_not_only_sbd(voc_weights, synth_root, tmp_path):
    import shutil
    shutil.copy(voc_weights.with_name("best.safetensors"), tmp_path)
    result = runner.invoke(app, ["evaluate", str(tmp_path / "best.safetensors"), "--sbd", str(synth_root)])
    assert result.exit_code == 2 and "pass --voc (and --sbd) or --data" in result.output


def test_pretrained_takes_a_run_folder_and_refuses_a_checkpoint(shapes, voc_weights, tmp_path):
    result = runner.invoke(app, ["fit", "--data", str(shapes), *TINY_FIT, "--pretrained", str(voc_weights.parent),
                                 "--epochs", "1", "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 0 and "the head is re-initialised for 5 classes" in " ".join(result.output.split())
    last = voc_weights.with_name("last.safetensors")
    result = runner.invoke(app, ["fit", "--data", str(shapes), *TINY_FIT, "--pretrained", str(last),
                                 "--epochs", "1", "--runs-dir", str(tmp_path / "runs2")])
    assert result.exit_code == 2 and not (tmp_path / "runs2").exists()
    assert " ".join(result.output.split()).endswith(f"Error: {last} is a training checkpoint, not a model; fine-tune "
                                                    f"from the run's {voc_weights} (or pass the run folder).")


def test_compare_two_folder_runs_by_the_dataset_classes(own_run, tmp_path):
    import shutil
    _, classes, run, _, _ = own_run
    twin = shutil.copytree(run, tmp_path / "twin")
    invoke("compare", run, twin, "--out", tmp_path / "cmp", "--samples", 100)
    table = json.loads((tmp_path / "cmp" / "compare.json").read_text())["table"]
    assert [r["metric"] for r in table][-5:] == [f"IoU {n}" for n in classes.names]
