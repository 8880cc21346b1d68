"""Importing fastseg's data wing asks no server anything (albumentations' update check is off unless the
user turns it on), seen by replacing urllib's opener in a fresh interpreter."""

import os
import subprocess
import sys

SPY = """
import urllib.request
class Spy:
    def open(self, url, *args, **kwargs):
        print("ASKED", url)
        raise OSError("no network in this test")
urllib.request.build_opener = lambda *a, **k: Spy()
import {module}
"""


def asks(module: str, env: dict) -> str:
    out = subprocess.run([sys.executable, "-c", SPY.format(module=module)], capture_output=True, text=True,
                         env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_importing_fastseg_asks_pypi_nothing_but_albumentations_alone_does():
    env = {k: v for k, v in os.environ.items() if k != "NO_ALBUMENTATIONS_UPDATE"}
    assert "ASKED https://pypi.org/pypi/albumentations/json" in asks("albumentations", env)  # the spy sees it
    assert "ASKED" not in asks("fastseg.data.transforms", env)
    assert "ASKED" in asks("fastseg.data.transforms", env | {"NO_ALBUMENTATIONS_UPDATE": "0"})  # the user's say
