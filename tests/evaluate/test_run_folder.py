"""`evaluate_run` and `export_folder` on a run folder written here by hand (config.json and the best
weights of an untrained 1/16-width SegNet, as fit writes them; no training): the files they write, the
options they pass on and their sentences. No fit, so `make mutate` can run these for every mutant of
the orchestration in `evaluate/scoring.py` and `evaluate/export.py`."""

import json
import math
from dataclasses import asdict, replace

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

from fastseg.classes import VOC, ClassSet
from fastseg.config import SynthConfig
from fastseg.data.splits import DataRoots, build_split
from fastseg.data.synthetic import generate
from fastseg.errors import FastsegError
from fastseg.evaluate import export, scoring
from fastseg.evaluate.predict import predict_image
from fastseg.io.runs import BEST, CONFIG, PER_IMAGE, load_config, save_config
from fastseg.io.serialize import read_meta
from fastseg.models import create_model
from fastseg.models.weights import model_metadata, save_model
from tests.conftest import tiny_config

TINY = SynthConfig(n_train=2, n_val=3, n_sbd_only=2, size=40, seed=4)
FIGURES = ["confusion_matrix.png", "predictions_best.png", "predictions_random.png", "predictions_uncertain.png",
           "predictions_worst.png", "reliability.png"]


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("tiny"), TINY)


def make_run(root, folder, temperature: float | None = None):
    """A run folder as fit leaves it after its best epoch 1: config.json and best.safetensors (an untrained,
    seeded model; `temperature` in its metadata when given)."""
    cfg = tiny_config(root, folder.parent, folder.name)
    folder.mkdir(parents=True)
    save_config(cfg, folder / CONFIG)
    torch.manual_seed(0)
    meta = model_metadata("segnet", VOC, 0.0625, config=asdict(cfg)) | {
        "epoch": 1, "monitor": "miou", "metrics": {"miou": 0.25, "pixel_acc": 0.5}}
    save_model(create_model("segnet", width=0.0625), folder / BEST,
               meta | ({"temperature": temperature} if temperature else {}))
    return folder


@pytest.fixture
def run(tiny_root, tmp_path):
    return make_run(tiny_root, tmp_path / "runs" / "r")


def numpy_miou(root, split: str, model) -> tuple[float, np.ndarray]:
    """mIoU over the split's pixels (void left out, classes absent from truth and prediction left out) of
    predict's masks, with a numpy confusion matrix; and that 21×21 matrix."""
    cm = sum(numpy_confusion(sample, model) for sample in build_split(split, DataRoots.under(root)))
    inter, union = np.diag(cm), cm.sum(0) + cm.sum(1) - np.diag(cm)
    return float(np.mean(inter[union > 0] / union[union > 0])), cm


def _load(run):
    """(model, metadata) of the run's best weights."""
    from fastseg.models.weights import load_model
    return load_model(run / BEST)


def numpy_confusion(sample, model) -> np.ndarray:
    """21×21 confusion (truth row, prediction column) of one sample's predict mask, void left out."""
    from fastseg.data.masks import read_mask
    cm = np.zeros((21, 21), np.int64)
    image = np.array(Image.open(sample.image).convert("RGB"))
    truth = read_mask(sample.mask)
    pred = predict_image(model, image, torch.device("cpu"))
    keep = truth != 255
    np.add.at(cm, (truth[keep], pred[keep]), 1)
    return cm


def test_evaluate_run_scores_the_runs_validation_split_and_writes_its_files(run, tiny_root):
    cfg = load_config(run / CONFIG)
    save_config(replace(cfg, data=replace(cfg.data, valid_split="voc12-val", val_bs=2)), run / CONFIG)
    path, content = scoring.evaluate_run(run, device="cpu")
    assert path == run / "metrics.json" and path.read_text() == json.dumps(content, indent=2)  # NaN ≠ NaN: as text
    model, _ = _load(run)
    valid = "voc12-val"  # the run's split: 3 images in 2 batches, so rows must land in sample order
    miou, cm = numpy_miou(tiny_root, valid, model)
    images = len(build_split(valid, DataRoots.under(tiny_root)))
    assert content["split"] == valid and content["images"] == images
    assert content["weights"] == str(run / BEST)
    assert content["miou"] == pytest.approx(miou, abs=1e-9)
    assert content["tta"] == {"flip": False, "scales": [1.0]} and "tta_gain" not in content
    assert content["calibration"]["temperature"] == 1.0 and "calibration_before" not in content
    split, ids, per_image = scoring.load_per_image(run / PER_IMAGE)
    assert split == valid and ids == [s.id for s in build_split(valid, DataRoots.under(tiny_root))] and images == 3
    assert np.array_equal(per_image.sum(0).numpy(), cm)
    for sample, rows in zip(build_split(valid, DataRoots.under(tiny_root)), per_image, strict=True):
        assert np.array_equal(rows.numpy(), numpy_confusion(sample, model)), sample.id
    for name in [*FIGURES, "report.md", "report.html"]:
        assert (run / name).is_file(), name


def evaluate_samples_calls(monkeypatch) -> list[dict]:
    """The options (and sample ids) of each call evaluate_run makes to evaluate_samples, which still runs."""
    calls, real = [], scoring.evaluate_samples

    def spy(model, samples, device, **options):
        calls.append(options | {"ids": [s.id for s in samples]})
        return real(model, samples, device, **options)
    monkeypatch.setattr(scoring, "evaluate_samples", spy)
    return calls


def test_the_run_card_counts_the_splits_on_the_data_given_when_the_data_has_moved(tiny_root, tmp_path):
    import shutil
    moved = shutil.copytree(tiny_root, tmp_path / "old place")
    run = make_run(moved, tmp_path / "runs" / "r")
    shutil.rmtree(moved)
    scoring.evaluate_run(run, device="cpu", roots=DataRoots.under(tiny_root))
    cfg = load_config(run / CONFIG)
    report = (run / "report.md").read_text()
    for split in (cfg.data.train_split, cfg.data.valid_split):
        assert f"| {split} | {len(build_split(split, DataRoots.under(tiny_root)))} |" in report


def test_evaluate_run_passes_split_flip_scales_and_batch_size_on(run, monkeypatch):
    calls = evaluate_samples_calls(monkeypatch)
    _, content = scoring.evaluate_run(run, split="voc12-train", device="cpu", bs=3, flip=True, scales=(1.0, 0.75),
                                      mc=2)
    expected_ids = [s.id for s in build_split("voc12-train", load_config(run / CONFIG).data.roots)]
    assert calls == [{"bs": 3, "flip": True, "scales": (1.0, 0.75), "classes": VOC, "mc": 2, "temperature": 1.0,
                      "calibration_pixels": 0, "ids": expected_ids}]
    assert content["split"] == "voc12-train" and content["tta"] == {"flip": True, "scales": [1.0, 0.75]}
    assert content["mc"]["samples"] == 2


def test_evaluate_run_takes_the_runs_validation_split_and_batch_size(run, monkeypatch):
    cfg = load_config(run / CONFIG)
    save_config(replace(cfg, data=replace(cfg.data, valid_split="voc12-val-a", val_bs=2)), run / CONFIG)
    calls = evaluate_samples_calls(monkeypatch)
    _, content = scoring.evaluate_run(run, device="cpu")
    save_config(replace(cfg, data=replace(cfg.data, val_bs=None, bs=5)), run / CONFIG)
    scoring.evaluate_run(run, device="cpu")
    assert [c["bs"] for c in calls] == [2, 5]
    assert content["split"] == "voc12-val-a"
    assert calls[0]["ids"] == [s.id for s in build_split("voc12-val-a", cfg.data.roots)] != calls[1]["ids"]
    assert "mc" not in content and calls[0]["mc"] == 0  # no Monte Carlo dropout unless asked


def test_evaluate_run_stays_on_the_cpu_it_is_given_where_cuda_is_present(run, monkeypatch):
    """`--device cpu` on a CUDA machine: the model, both scorings and their batches stay on the CPU (fastai's
    dataloaders would move batches to CUDA by themselves; torch here has no CUDA, so any move fails)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index: "a GPU")  # the run card's environment
    devices, real = [], scoring.evaluate_samples

    def spy(model, samples, device, **options):
        devices.append(torch.device(device))
        return real(model, samples, device, **options)
    monkeypatch.setattr(scoring, "evaluate_samples", spy)
    _, content = scoring.evaluate_run(run, device="cpu", calibrate=True)
    assert devices == [torch.device("cpu")] * 2
    cfg = load_config(run / CONFIG)
    assert content["images"] == len(build_split(cfg.data.valid_split, cfg.data.roots))


def test_a_bad_file_stops_evaluate_run_unless_it_is_told_to_skip_it(tiny_root, tmp_path, monkeypatch):
    import shutil
    root = shutil.copytree(tiny_root, tmp_path / "data")
    run = make_run(root, tmp_path / "runs" / "r")
    split = build_split("voc12-val", DataRoots.under(root))
    split[0].image.write_bytes(b"not a jpeg")
    with pytest.raises(FastsegError, match=str(split[0].image)):
        scoring.evaluate_run(run, split="voc12-val", device="cpu")
    assert not (run / "metrics.json").exists()
    lines = []
    monkeypatch.setattr("fastseg.console.log", lines.append)
    _, content = scoring.evaluate_run(run, split="voc12-val", device="cpu", skip_bad=True)
    assert content["images"] == len(split) - 1
    assert lines[0].startswith("--skip-bad: leaving out 1 bad file(s): ") and str(split[0].image) in lines[0]


def test_weights_alone_on_a_folder_dataset_score_its_val_split_or_name_the_weights(run, tmp_path):
    from fastseg.data.synthetic import generate_folder
    lone = tmp_path / "lone.safetensors"
    lone.write_bytes((run / BEST).read_bytes())
    three = generate_folder(tmp_path / "three", TINY, num_classes=3)
    with pytest.raises(FastsegError) as err:
        scoring.evaluate_run(lone, device="cpu", roots=DataRoots(None, folder=three))
    assert str(err.value).startswith(f"{lone} predicts 21 classes but the dataset has 3; ")
    shapes = generate_folder(tmp_path / "shapes", TINY, num_classes=21)
    _, content = scoring.evaluate_run(lone, device="cpu", roots=DataRoots(None, folder=shapes))
    assert content["split"] == "val"
    assert content["images"] == len(build_split("val", DataRoots(None, folder=shapes))) > 0


def test_the_stored_temperature_is_used_and_calibrate_stores_a_new_one(tiny_root, tmp_path, monkeypatch):
    run = make_run(tiny_root, tmp_path / "runs" / "t", temperature=2.5)
    _, content = scoring.evaluate_run(run, device="cpu", flip=True)
    assert content["calibration"]["temperature"] == 2.5
    lines = []
    monkeypatch.setattr("fastseg.console.log", lines.append)
    _, calibrated = scoring.evaluate_run(run, device="cpu", flip=True, calibrate=True)
    fitted = read_meta(run / BEST)["temperature"]
    assert fitted != 2.5 and calibrated["calibration"]["temperature"] == fitted
    before, after = calibrated["calibration_before"], calibrated["calibration"]
    assert json.dumps(before) == json.dumps(content["calibration"])
    assert after["nll"] <= before["nll"] + 1e-9
    assert (run / "metrics.json").read_text() == json.dumps(calibrated, indent=2)
    # the second scoring, with the fitted temperature, keeps the split, weights and TTA of the first
    valid = load_config(run / CONFIG).data.valid_split
    assert (calibrated["split"], calibrated["weights"]) == (valid, str(run / BEST))
    assert calibrated["tta"] == {"flip": True, "scales": [1.0]} and "tta_gain" in calibrated
    assert lines[-1] == (f"Temperature {fitted:.3f} fitted on {valid}: NLL {before['nll']:.4f} → "
                         f"{after['nll']:.4f}, ECE {before['ece']:.4f} → {after['ece']:.4f}; saved in {run / BEST}.")


def test_a_weights_file_without_a_run_needs_the_data_named(run, tiny_root, tmp_path, monkeypatch):
    lone = tmp_path / "lone.safetensors"
    lone.write_bytes((run / BEST).read_bytes())
    with pytest.raises(FastsegError) as err:
        scoring.evaluate_run(lone, device="cpu")
    assert str(err.value) == (f"{lone} has no run config beside it; pass --voc (and --sbd) or --data to say where "
                              "the data is.")
    with pytest.raises(FastsegError):
        scoring.evaluate_run(lone, device="cpu", roots=DataRoots(None))
    calls = evaluate_samples_calls(monkeypatch)
    path, content = scoring.evaluate_run(lone, device="cpu", roots=DataRoots.under(tiny_root))
    assert path == tmp_path / "metrics.json" and content["split"] == "voc12-val"
    assert calls[0]["bs"] == 8  # no run: no batch size of its own
    assert not (tmp_path / "report.md").exists()  # no run: no run card
    assert (tmp_path / "confusion_matrix.png").is_file()


def test_a_batch_size_under_1_is_refused(run):
    with pytest.raises(FastsegError) as err:
        scoring.evaluate_run(run, device="cpu", bs=0)
    assert str(err.value) == "--bs 0 must be at least 1."
    assert not (run / "metrics.json").exists()
    cfg = load_config(run / CONFIG)
    images = len(build_split(cfg.data.valid_split, cfg.data.roots))
    assert scoring.evaluate_run(run, device="cpu", bs=1)[1]["images"] == images


def test_data_roots_given_replace_the_runs_one_by_one():
    from pathlib import Path
    cfg = type("Cfg", (), {})()
    cfg.data = type("Data", (), {})()
    saved = DataRoots(Path("v"), Path("s"), Path("v11"), None, Path("c.txt"))
    cfg.data.roots = saved
    assert scoring.data_roots(None, saved) is saved
    assert scoring.data_roots(cfg) is saved
    assert scoring.data_roots(cfg, DataRoots(None)) == saved
    assert scoring.data_roots(cfg, DataRoots(Path("V"))) == DataRoots(Path("V"), Path("s"), Path("v11"), None,
                                                                      Path("c.txt"))
    assert scoring.data_roots(cfg, DataRoots(None, Path("S"), Path("V11"), None, Path("C"))) == DataRoots(
        Path("v"), Path("S"), Path("V11"), None, Path("C"))
    folder = DataRoots(None, folder=Path("f"))
    assert scoring.data_roots(cfg, folder) is folder
    own = DataRoots(None, folder=Path("f"), classes=Path("c.txt"))
    cfg.data.roots = own
    assert scoring.data_roots(cfg, DataRoots(Path("V"))) == DataRoots(Path("V"), None, None, None, Path("c.txt"))
    assert scoring.data_roots(cfg, DataRoots(None, Path("S"))) == DataRoots(None, Path("S"), None, Path("f"),
                                                                            Path("c.txt"))


def test_a_model_of_another_class_count_is_refused_and_other_names_are_noted(tiny_root, monkeypatch):
    roots = DataRoots.under(tiny_root)
    three = ClassSet(("a", "b", "c"))
    with pytest.raises(FastsegError) as err:
        scoring.matching_classes(three, roots, "w.safetensors")
    assert str(err.value) == ("w.safetensors predicts 3 classes but the dataset has 21; evaluate it on the dataset "
                              "it was trained for (or pass that dataset's classes file).")
    lines = []
    monkeypatch.setattr("fastseg.console.log", lines.append)
    renamed = ClassSet(tuple(f"c{i}" for i in range(21)))
    assert scoring.matching_classes(renamed, roots, "w.safetensors") is renamed
    assert lines == [f"Note: the dataset names its classes {', '.join(VOC.names)}; the scores use the model's names "
                     f"({', '.join(renamed.names)})."]
    lines.clear()
    assert scoring.matching_classes(VOC, roots, "w.safetensors") is VOC and lines == []


def test_gathered_pixels_concatenates_every_kept_pair():
    pairs = [(torch.ones(2, 3), torch.tensor([0, 1])), (torch.zeros(1, 3), torch.tensor([2]))]
    logits, targets = scoring.gathered_pixels(pairs)
    assert logits.tolist() == [[1.0] * 3, [1.0] * 3, [0.0] * 3] and targets.tolist() == [0, 1, 2]


def test_write_figures_draws_each_figure_from_the_results_data(run, monkeypatch):
    import fastseg.evaluate.figures as figures
    _, _ = scoring.evaluate_run(run, device="cpu")
    calls = []
    for name in ("plot_confusion", "plot_reliability", "plot_gallery"):
        monkeypatch.setattr(figures, name, lambda *a, _n=name: calls.append((_n, *a)) or a[1])
    result = scoring.evaluate_samples(_load(run)[0], build_split("voc12-val", load_config(run / CONFIG).data.roots),
                                      "cpu", bs=8, temperature=1.5)
    paths = scoring.write_figures(result, run)
    assert paths == [run / n for n in ("confusion_matrix.png", "reliability.png", "predictions_uncertain.png",
                                       "predictions_random.png", "predictions_best.png", "predictions_worst.png")]
    (_, cm, _, names), (_, calibration, _), *galleries = calls
    assert cm is result.cm and names == VOC.names
    assert calibration == result.calibration | {"temperature": 1.5}
    g, palette = result.gallery, VOC.palette()
    assert [c[1:] for c in galleries] == [
        (g.uncertain, run / "predictions_uncertain.png", "Most uncertain images", palette, "entropy"),
        (sorted(g.random, key=lambda e: e[1]), run / "predictions_random.png", "Random images", palette),
        (g.best, run / "predictions_best.png", "Best images by mIoU", palette),
        (g.worst, run / "predictions_worst.png", "Worst images by mIoU", palette)]
    assert len(g.random) == TINY.n_val and math.isfinite(g.best[0][0])


# --- export ------------------------------------------------------------------------------------------------------

def test_export_config_states_the_model_and_its_input_contract():
    from fastseg import __version__
    meta = model_metadata("segnet", VOC, 0.5, dropout=0.2) | {"temperature": 1.3, "epoch": 4, "monitor": "fg_miou",
                                                               "metrics": {"miou": 0.1}}
    config = export.export_config(meta)
    palette = VOC.palette()
    assert config == {
        "format": export.EXPORT_FORMAT, "arch": "segnet", "num_classes": 21, "width": 0.5, "dropout": 0.2,
        "temperature": 1.3,
        "classes": [{"id": i, "name": n, "color": palette[3 * i:3 * i + 3]} for i, n in enumerate(VOC.names)],
        **{k: v for k, v in VOC.meta().items() if k != "classes"},
        "void_label": 255, "mean": meta["mean"], "std": meta["std"],
        "input": {"layout": "N×3×H×W", "dtype": "float32", "colour": "RGB", "values": "[0, 1], then (x - mean) / std",
                  "min_side": export.MIN_SIZE, "any_size": True},
        "output": "logits N×num_classes×H×W", "epoch": 4, "monitor": "fg_miou", "fastseg_version": __version__}
    plain = export.export_config(model_metadata("skip", VOC, 1.0))
    assert "dropout" not in plain and "temperature" not in plain
    assert (plain["epoch"], plain["monitor"]) == (None, "miou")


def test_export_folder_writes_the_weights_config_and_card_and_removes_an_earlier_exports_onnx(run, tmp_path):
    out = tmp_path / "model"
    out.mkdir()
    for stale in ("model.onnx", "parity.json"):
        (out / stale).write_text("an earlier export's")
    assert export.export_folder(run, out) == out
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    config = json.loads((out / "config.json").read_text())
    assert config == read_meta(out / "model.safetensors") == export.export_config(read_meta(run / BEST))
    with safe_open(str(out / "model.safetensors"), "pt") as f, safe_open(str(run / BEST), "pt") as g:
        assert sorted(f.keys()) == sorted(g.keys())
        assert all(torch.equal(f.get_tensor(k), g.get_tensor(k)) for k in f.keys())
    card = (out / "README.md").read_text()
    assert card.startswith(f"# fastseg segnet (width 0.0625) from run {run.name}")
    assert "ONNX" not in card
    export.export_folder(run, out)  # an earlier export is rewritten in place


def test_an_onnx_export_with_probabilities_holds_the_metadata_and_the_softmax_at_the_runs_temperature(
        tiny_root, tmp_path):
    """`export --onnx --probabilities`: the graph takes RGB in [0, 1], gives the run's logits and
    softmax(logits / T) at the stored temperature, and names its classes and input in its metadata;
    parity.json measures that second output too."""
    import onnx
    import onnxruntime as ort
    run = make_run(tiny_root, tmp_path / "runs" / "t", temperature=2.5)
    out = export.export_folder(run, tmp_path / "model", onnx=True, probabilities=True)
    props = {p.key: p.value for p in onnx.load(str(out / "model.onnx")).metadata_props}
    classes = json.loads(props.pop("fastseg_classes"))
    assert [c["name"] for c in classes] == list(VOC.names) and [c["id"] for c in classes] == list(range(21))
    assert props.pop("fastseg_version")
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]  # ImageNet's, which the run's model was given
    assert props == {"void_label": "255", "arch": "segnet", "width": "0.0625", "mean": json.dumps(mean),
                     "std": json.dumps(std), "input": "RGB in [0, 1]"}
    x = np.random.default_rng(0).random((1, 3, 64, 96), dtype=np.float32)
    logits, probs = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"]).run(
        None, {"image": x})
    mean, std = np.array(mean)[:, None, None], np.array(std)[:, None, None]
    with torch.no_grad():
        expected = _load(run)[0](torch.from_numpy(((x - mean) / std).astype(np.float32))).numpy()
    assert np.abs(logits - expected).max() < 1e-3
    z = np.exp(logits / 2.5 - (logits / 2.5).max(1, keepdims=True))
    assert np.abs(probs - z / z.sum(1, keepdims=True)).max() < 1e-5
    parity = json.loads((out / "parity.json").read_text())
    assert parity["temperature"] == 2.5 and parity["max_abs_probability_difference"] < 1e-5
    cfg = load_config(run / CONFIG)
    assert parity["images"] == len(build_split(cfg.data.valid_split, cfg.data.roots))


def test_export_refuses_what_is_not_a_run_and_an_out_holding_other_files(run, tmp_path):
    with pytest.raises(FastsegError) as err:
        export.export_folder(tmp_path, tmp_path / "m")
    assert str(err.value) == (f"{tmp_path} is not a run folder with best.safetensors; pass a folder written by "
                              "`fastseg fit`.")
    (run / CONFIG).rename(run / "moved.json")
    with pytest.raises(FastsegError, match="is not a run folder"):
        export.export_folder(run, tmp_path / "m")
    (run / "moved.json").rename(run / CONFIG)
    cases = {"foreign": ({"notes.txt": "mine"}, "notes.txt"), "other format": ({"config.json": '{"format": "x"}'},
             "config.json"), "not json": ({"config.json": "{"}, "config.json"),
             "a list": ({"config.json": "[1]"}, "config.json"), "both": ({"a.txt": "", "b.txt": ""}, "a.txt, b.txt")}
    for name, (files, named) in cases.items():
        out = tmp_path / name
        out.mkdir()
        for file, text in files.items():
            (out / file).write_text(text)
        with pytest.raises(FastsegError) as err:
            export.export_folder(run, out)
        assert str(err.value) == (f"--out {out} already holds other files ({named}); export into a new or empty "
                                  "folder."), name
        assert {p.name: p.read_text() for p in out.iterdir()} == files, name
    export.check_export_out(tmp_path / "new")  # a folder that does not exist yet is fine
    (tmp_path / "empty").mkdir()
    export.check_export_out(tmp_path / "empty")


def test_with_probabilities_is_the_softmax_of_the_logits_over_the_temperature():
    model = torch.nn.Conv2d(3, 4, 1)
    x = torch.randn(2, 3, 5, 6)
    wrapped = export.WithProbabilities(model, 2.0)
    with torch.no_grad():
        logits = model(x).double().numpy()
        same, probs = wrapped(x)
        got = probs.double().numpy()
    assert np.array_equal(same.double().numpy(), logits)
    e = np.exp(logits / 2.0 - (logits / 2.0).max(1, keepdims=True))
    np.testing.assert_allclose(got, e / e.sum(1, keepdims=True), atol=1e-6)
