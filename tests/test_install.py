"""The environment `make install` builds is the one requirements.lock names: every locked package at its
locked version, nothing else installed but fastseg, and every requirement of pyproject.toml satisfied by the
lock. Read from the installed distributions' metadata and the files on disk, not from pip's resolver.

Not run by `make test-floor`, whose environment is deliberately the lowest versions instead.
"""

import itertools
import re
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PINNED = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._\-]*)==([^\s\\;]+)", re.MULTILINE)


def locked() -> dict[str, Version]:
    """{canonical name: version} of every `name==version` line of requirements.lock."""
    text = (ROOT / "requirements.lock").read_text()
    return {canonicalize_name(name): Version(version) for name, version in PINNED.findall(text)}


def installed() -> dict[str, Version]:
    """{canonical name: version} of every distribution in the running environment."""
    return {canonicalize_name(dist.metadata["Name"]): Version(dist.version) for dist in metadata.distributions()}


def test_the_lock_pins_every_package_with_hashes_and_names_no_machines_index():
    text = (ROOT / "requirements.lock").read_text()
    pins = locked()
    assert len(pins) > 100 and {"torch", "fastai", "albumentations", "pip"} <= set(pins)
    starts = [match.start() for match in PINNED.finditer(text)] + [len(text)]
    unhashed = [text[a:b].split()[0] for a, b in itertools.pairwise(starts) if "--hash=sha256:" not in text[a:b]]
    assert unhashed == []
    for machine_specific in ("--extra-index-url", "--index-url", "--find-links", "file://"):
        assert machine_specific not in text, f"requirements.lock names {machine_specific}"
    assert "#    make lock\n" in text


def test_every_locked_package_is_installed_at_its_locked_version():
    have = installed()
    wrong = {name: (str(want), str(have.get(name))) for name, want in locked().items()
             # the public version: torch's build on disk is 2.14.1+cu130 for the lock's 2.14.1, as pip matches it
             if name not in have or Version(have[name].public) != want}
    assert wrong == {}


def test_nothing_is_installed_that_the_lock_does_not_name():
    assert set(installed()) - set(locked()) == {"fastseg"}


def test_every_requirement_of_pyproject_is_met_by_the_locked_version():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = locked()
    requirements = [Requirement(r) for r in [*project["dependencies"], *project["optional-dependencies"]["dev"]]]
    environment = default_environment() | {"extra": "dev"}
    unmet = [str(r) for r in requirements
             if (r.marker is None or r.marker.evaluate(environment))
             and not r.specifier.contains(pins.get(canonicalize_name(r.name), Version("0")), prereleases=True)]
    assert unmet == []
