"""The docs site builds in strict mode (broken links and missing pages fail) with the command
reference generated from the CLI, and the README stays the short front page."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from fastseg.cli import app

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(shutil.which("mkdocs", path=str(Path(sys.executable).parent)) is None,
                    reason="mkdocs is in the dev extra")
def test_docs_build_strictly_with_every_command_and_option(tmp_path):
    done = subprocess.run([str(Path(sys.executable).parent / "mkdocs"), "build", "--strict", "-q", "-f",
                           str(ROOT / "mkdocs.yml"), "-d", str(tmp_path / "site")], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    reference = (tmp_path / "site" / "reference" / "cli" / "index.html").read_text()
    group = typer.main.get_command(app)
    for name, command in group.commands.items():
        assert f"fastseg {name}" in reference, name
        for param in command.params:
            if param.param_type_name == "option" and param.name != "help":
                assert param.opts[0] in reference, (name, param.opts[0])
    assert "Exit codes" in reference and (tmp_path / "site" / "benchmarks" / "index.html").is_file()
    assert "fastseg.models.create_model" in (tmp_path / "site" / "reference" / "api" / "index.html").read_text()


def test_readme_is_the_short_front_page():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 250
    assert "make demo" in lines[3] and "make test" in lines[4]
