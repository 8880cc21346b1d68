"""Atomic writes and checkpoints: a reader never sees a partial file, a failed write leaves the previous
version, and a checkpoint's tensors are on disk before its JSON."""

import errno
import json
import os

import numpy as np
import pytest
import torch
from safetensors.torch import save

from fastseg.errors import FastsegError
from fastseg.io import atomic
from fastseg.io.atomic import atomic_write, save_figure
from fastseg.io.serialize import flatten, load_state, read_meta, save_state


def test_the_target_is_untouched_until_the_write_is_complete(tmp_path):
    path = tmp_path / "f.json"
    path.write_text("old")
    seen = {}

    def write(tmp):
        tmp.write_text("new, half")
        seen["tmp"], seen["target during the write"] = tmp, path.read_text()
        tmp.write_text("new")

    assert atomic_write(path, write) == path
    assert seen["target during the write"] == "old"
    assert seen["tmp"].parent == path.parent and seen["tmp"] != path  # same folder: the rename is atomic
    assert path.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.json"]


def test_a_failed_write_keeps_the_previous_version_and_names_the_target(tmp_path):
    path = tmp_path / "f.json"
    path.write_text("old")

    def partial(tmp):
        tmp.write_text("par")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError) as err:
        atomic_write(path, partial)
    assert (err.value.errno, err.value.strerror, err.value.filename) == (errno.ENOSPC, "No space left on device",
                                                                          str(path))
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.json"]


def test_a_non_os_error_also_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "f.txt"
    with pytest.raises(ZeroDivisionError):
        atomic_write(path, lambda tmp: tmp.write_text("x") and 1 / 0)
    assert list(tmp_path.iterdir()) == []


def test_save_figure_writes_a_tight_110_dpi_png_and_closes_that_figure(tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image
    fig, other = plt.figure(figsize=(4, 2)), plt.figure()
    fig.gca().plot([0, 1], [0, 1])
    fig.savefig(tmp_path / "reference.png", dpi=110, bbox_inches="tight")
    save_figure(fig, tmp_path / "f.png")
    assert (tmp_path / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert Image.open(tmp_path / "f.png").size == Image.open(tmp_path / "reference.png").size != (440, 220)
    assert not plt.fignum_exists(fig.number) and plt.fignum_exists(other.number)
    plt.close(other)


STATE = {"epoch": 3, "model": {"w": torch.arange(6.0).view(2, 3)}, "opt": [torch.ones(2), (1, "a", torch.zeros(1))],
         "rng": np.arange(4, dtype=np.uint8), "lr": np.float64(0.5), "none": None, 7: True}


def test_a_state_round_trips_with_its_types(tmp_path):
    save_state(STATE, tmp_path / "state.safetensors")
    back = load_state(tmp_path / "state.safetensors")
    assert back["epoch"] == 3 and back[7] is True and back["none"] is None
    assert torch.equal(back["model"]["w"], STATE["model"]["w"])
    assert isinstance(back["opt"], list) and torch.equal(back["opt"][0], torch.ones(2))
    assert back["opt"][1][:2] == (1, "a")
    assert isinstance(back["opt"][1], tuple) and torch.equal(back["opt"][1][2], torch.zeros(1))
    assert isinstance(back["rng"], np.ndarray) and back["rng"].tolist() == [0, 1, 2, 3]
    assert back["lr"] == 0.5 and type(back["lr"]) is float
    assert list(back) == list(STATE)


def test_an_unknown_type_is_refused(tmp_path):
    with pytest.raises(TypeError, match="cannot serialise set"):
        save_state({"s": {1}}, tmp_path / "state.safetensors")


def test_a_checkpoint_is_one_file_renamed_into_place_once(tmp_path, monkeypatch):
    order = []
    real = os.replace
    monkeypatch.setattr(atomic.os, "replace", lambda src, dst: order.append(os.path.basename(dst)) or real(src, dst))
    save_state(STATE, tmp_path / "state.safetensors")
    assert order == ["state.safetensors"]
    assert [p.name for p in tmp_path.iterdir()] == ["state.safetensors"]
    assert read_meta(tmp_path / "state.safetensors")["__dict__"][0] == ["epoch", 3]  # the skeleton, in the header


def test_a_crash_while_writing_leaves_the_previous_checkpoint_whole(tmp_path, monkeypatch):
    path = tmp_path / "state.safetensors"
    save_state({"epoch": 1, "w": torch.zeros(2)}, path)
    before = path.read_bytes()
    real = atomic.os.replace

    def crash(src, dst):  # the new file is complete but the rename never happens
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(atomic.os, "replace", crash)
    with pytest.raises(OSError):
        save_state({"epoch": 2, "w": torch.ones(2)}, path)
    monkeypatch.setattr(atomic.os, "replace", real)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["state.safetensors"]
    assert load_state(path)["epoch"] == 1


def legacy_checkpoint(state: dict, path):
    """`state` as fastseg wrote checkpoints before the one-file format: tensors + a <name>.json skeleton."""
    tensors = {}
    skeleton = flatten(state, tensors)
    path.write_bytes(save(tensors))
    path.with_suffix(".json").write_text(json.dumps(skeleton))


def test_a_legacy_two_file_checkpoint_still_loads_and_becomes_one_file_when_rewritten(tmp_path):
    path = tmp_path / "state.safetensors"
    legacy_checkpoint(STATE, path)
    assert read_meta(path) == json.loads(path.with_suffix(".json").read_text())
    back = load_state(path)
    assert back["epoch"] == 3 and torch.equal(back["model"]["w"], STATE["model"]["w"])
    save_state(back | {"epoch": 4}, path)
    assert [p.name for p in tmp_path.iterdir()] == ["state.safetensors"]
    assert load_state(path)["epoch"] == 4


@pytest.mark.parametrize(("damage", "error"), [("no json", "FileNotFoundError"), ("bad json", "JSONDecodeError"),
                                               ("truncated tensors", "SafetensorError"), ("missing key", "KeyError")])
def test_a_damaged_legacy_checkpoint_is_one_sentence(tmp_path, damage, error):
    path = tmp_path / "state.safetensors"
    legacy_checkpoint(STATE, path)
    if damage == "no json":
        path.with_suffix(".json").unlink()
    elif damage == "bad json":
        path.with_suffix(".json").write_text("{")
    elif damage == "truncated tensors":
        path.write_bytes(path.read_bytes()[:40])
    else:
        skeleton = json.loads(path.with_suffix(".json").read_text())
        skeleton["__dict__"][1][1]["__dict__"][0][1]["__tensor__"] = "t99"
        path.with_suffix(".json").write_text(json.dumps(skeleton))
    with pytest.raises(FastsegError) as err:
        load_state(path)
    assert str(err.value).startswith(f"Checkpoint {path} could not be read ({error}); ")
    assert str(err.value).endswith("it may be incomplete, so resume from a run whose checkpoint files are intact.")


@pytest.mark.parametrize("cut", [40, -10])
def test_a_truncated_one_file_checkpoint_is_one_sentence(tmp_path, cut):
    path = tmp_path / "state.safetensors"
    save_state(STATE, path)
    path.write_bytes(path.read_bytes()[:cut])  # inside the header, or inside the tensors
    with pytest.raises(FastsegError, match=r"could not be read \((ValueError|SafetensorError)\); it may be incomplete"):
        load_state(path)


def test_meta_file_names_where_the_metadata_lives(tmp_path):
    """The file a metadata message names: the file itself once its header holds the metadata (a stale sidecar
    beside it included), the legacy sidecar of a two-file checkpoint, the file itself when it is no safetensors."""
    from fastseg.io.serialize import meta_file
    one = tmp_path / "one.safetensors"
    save_state(STATE, one)
    one.with_suffix(".json").write_text("{}")
    assert meta_file(one) == one
    legacy = tmp_path / "old.safetensors"
    legacy_checkpoint(STATE, legacy)
    assert meta_file(legacy) == tmp_path / "old.json"
    export = tmp_path / "model.safetensors"
    export.write_bytes(save({"w": torch.zeros(1)}))
    (tmp_path / "config.json").write_text("{}")
    assert meta_file(export) == tmp_path / "config.json"
    pickle = tmp_path / "pickle.safetensors"
    pickle.write_bytes(b"\x80\x04" + b"x" * 30)
    assert meta_file(pickle) == pickle
    (tmp_path / "pickle.json").write_text("{}")
    assert meta_file(pickle) == tmp_path / "pickle.json"
    assert meta_file(tmp_path / "absent.safetensors") == tmp_path / "absent.safetensors"


def header_of(size: int) -> bytes:
    """The 8 bytes that open a safetensors file: the header's length, little-endian unsigned."""
    return size.to_bytes(8, "little")


@pytest.mark.parametrize(("data", "why"), [
    (b"abc", "no safetensors header"),                        # shorter than the length field
    (header_of(2), "truncated safetensors header"),           # the length field and nothing after it
    (header_of(2**64 - 1) + b"{}", "truncated safetensors header"),  # the top bit set: unsigned, not -1
], ids=["3 bytes", "length only", "top bit set"])
def test_header_meta_says_why_the_bytes_hold_no_header(data, why):
    from fastseg.io.serialize import header_meta
    with pytest.raises(ValueError) as err:
        header_meta(data)
    assert str(err.value) == why


@pytest.mark.parametrize(("data", "why"), [
    (b"abc", "no safetensors header"),
    (header_of(2**64 - 1) + b"{}" * 10, "no safetensors header"),  # a length past the file's end: read no further
    (header_of(20) + b"x" * 12, "truncated safetensors header"),   # a length of the whole file, 8 bytes short
], ids=["3 bytes", "length past the end", "length of the file"])
def test_read_meta_of_a_damaged_file_is_a_value_error_saying_why(tmp_path, data, why):
    path = tmp_path / "w.safetensors"
    path.write_bytes(data)
    with pytest.raises(ValueError) as err:
        read_meta(path)
    assert str(err.value) == why


def test_read_meta_reads_the_header_and_not_the_tensors(tmp_path):
    """A checkpoint of 64 MB: its metadata is read with well under 1 MB of memory."""
    import tracemalloc
    path = tmp_path / "big.safetensors"
    save_state({"epoch": 5, "w": torch.zeros(2)}, path)
    os.truncate(path, 64 * 2**20)  # sparse: the tensors' bytes cost no disk
    tracemalloc.start()
    try:
        meta = read_meta(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert meta["__dict__"][0] == ["epoch", 5]
    assert peak < 2**20


def test_read_meta_of_another_tools_safetensors_without_a_sidecar_is_none(tmp_path):
    path = tmp_path / "other.safetensors"
    path.write_bytes(save({"w": torch.zeros(1)}, metadata={"format": "pt"}))
    assert read_meta(path) is None
    path.write_bytes(save({"w": torch.zeros(1)}))
    assert read_meta(path) is None


def test_an_export_folders_config_json_is_the_headers_metadata_indented_by_2(tmp_path):
    """Hub tools and people read config.json: the same metadata as the header, two-space indented."""
    from fastseg.io.serialize import save_tensors
    meta = {"arch": "segnet", "num_classes": 21, "classes": ["background", "aeroplane"]}
    save_tensors(tmp_path / "model.safetensors", {"w": torch.zeros(1)}, meta)
    assert (tmp_path / "config.json").read_text() == json.dumps(meta, indent=2)
    assert read_meta(tmp_path / "model.safetensors") == meta
