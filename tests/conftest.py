"""Shared fixtures: a small synthetic VOC/SBD tree, built once per test session."""

import shutil

import pytest

from fastseg.config import SynthConfig
from fastseg.data.synthetic import generate

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
