"""The CUDA test set: every test here is marked `gpu` and skipped where CUDA is absent (CI, the CPU
machines). `make gpu-check` runs it on a lent GPU machine."""

import pytest
import torch


def pytest_collection_modifyitems(items):
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "tests/gpu/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.gpu)
            if not torch.cuda.is_available():
                item.add_marker(skip)
