"""Shared fixtures and helpers: a small synthetic VOC/SBD tree built once per test session, the tiny
FitConfig most training tests use, and the CLI's data options for that tree."""

import functools
import gc
import json
import os
import shutil
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fastseg.cli import app
from fastseg.config import DataConfig, FitConfig, SynthConfig
from fastseg.data.splits import DataRoots
from fastseg.data.synthetic import generate

runner = CliRunner()


def pytest_collection_finish(session):
    """Under `make mutate` (FASTSEG_MUTATE=1): freeze what importing and collecting the tests allocated.
    mutmut forks each mutant's pytest run from a warmed-up server; unfrozen, pytest's closing
    gc.collect() scans and copies that whole heap in every child (about 0.6 s a mutant on 2 cores)."""
    if os.environ.get("FASTSEG_MUTATE"):
        gc.freeze()


def pytest_collection_modifyitems(items):
    """Under `make mutate`: run a mutant's tests quickest first (mutmut's traced durations), so that most
    mutants, which one test kills, stop at the first failure without running the slow tests first."""
    if os.environ.get("FASTSEG_MUTATE"):
        durations = traced_durations()
        items.sort(key=lambda item: durations.get(item.nodeid, 0.0))


FIXTURE_HITS: dict = {}
"""Under `make mutate`: the mutated functions each module- or class-scoped fixture ran, by fixture."""
FIXTURE_COST: dict = {}
"""Under `make mutate`: the seconds each fixture wider than a test took to build, by fixture."""


def mutmut_state():
    """mutmut's state (its trace of which tests reach which function, and their durations) under
    `make mutate`; None otherwise. `mutmut.state` is mutmut 3.8's (the dev extra asks for 3.8 or later)."""
    if not os.environ.get("FASTSEG_MUTATE"):
        return None
    from mutmut.state import state
    return state()


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(fixturedef, request):
    """Under `make mutate`: time each fixture wider than a test, and note the functions a module- or
    class-scoped one runs. mutmut credits those to the test that happened to build the fixture only,
    so a mutant of, say, the ONNX export would be tried against that one test and not against the
    tests that check what it exported."""
    state = mutmut_state()
    if state is None or fixturedef.scope == "function":
        return (yield)
    before, start = set(state._stats), time.perf_counter()
    state._stats.clear()
    try:
        return (yield)
    finally:
        FIXTURE_COST[fixturedef] = time.perf_counter() - start
        if fixturedef.scope in ("module", "class"):
            FIXTURE_HITS.setdefault(fixturedef, set()).update(state._stats)
        state._stats.update(before)


def pytest_runtest_call(item):
    """Under `make mutate`: credit each test with what its shared fixtures ran (`pytest_fixture_setup`),
    and count their build time in its duration: every mutant's run builds them afresh, so a test whose
    own call is quick but whose fixture trains a model is not a quick test to try first."""
    state = mutmut_state()
    if state is None:
        return
    for defs in item._fixtureinfo.name2fixturedefs.values():
        for fixturedef in defs:
            state._stats.update(FIXTURE_HITS.get(fixturedef, ()))
            state.duration_by_test[item.nodeid] += FIXTURE_COST.get(fixturedef, 0.0)


@functools.cache
def traced_durations() -> dict[str, float]:
    """Seconds per test id from mutmut's trace (`mutants/mutmut-stats.json`; mutmut runs the tests from
    mutants/), read once in the server the mutants' runs fork from; empty before the first trace."""
    stats = Path("mutmut-stats.json")
    return json.loads(stats.read_text())["duration_by_test"] if stats.is_file() else {}


SMALL = SynthConfig(n_train=12, n_val=12, n_sbd_only=10, size=72, seed=3)


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory):
    """Read-only synthetic dataset: use `synth_copy` to modify files."""
    return generate(tmp_path_factory.mktemp("synth"), SMALL)


@pytest.fixture
def synth_copy(synth_root, tmp_path):
    """A private copy of the synthetic dataset that a test may damage."""
    return shutil.copytree(synth_root, tmp_path / "data")


@pytest.fixture
def roots(synth_root):
    from fastseg.data.splits import DataRoots
    return DataRoots(synth_root / "VOCdevkit" / "VOC2012", synth_root / "benchmark_RELEASE" / "dataset")


def data_args(root) -> list[str]:
    """--voc and --sbd for a synthetic tree, as the parent folders a user would type."""
    return ["--voc", str(root / "VOCdevkit"), "--sbd", str(root / "benchmark_RELEASE")]


def tiny_config(root, runs, name, **kw):
    """A 3-epoch Adam run of a 1/16-width SegNet on 48-px crops of the synthetic tree at `root`."""
    roots = DataRoots.under(root)
    data = DataConfig(voc=str(roots.voc), sbd=str(roots.sbd), crop=48, bs=4, val_bs=4, augment="light")
    defaults = dict(width=0.0625, pretrained="none", epochs=3, lr=1e-2, opt="adam", wd=1e-4, seed=7,
                    runs_dir=str(runs), name=name)
    return FitConfig(data=data, **(defaults | kw))


def cli_fit(root, runs, *extra):
    """`fastseg fit` of one epoch of a 1/16-width SegNet on the synthetic tree at `root`."""
    return runner.invoke(app, ["fit", *data_args(root), "--runs-dir", str(runs), "--width", "0.0625",
                               "--pretrained", "none", "--epochs", "1", "--crop", "48", "--bs", "4", *extra])
