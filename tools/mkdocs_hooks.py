"""MkDocs hooks (mkdocs.yml `hooks:`): pages generated at build time from their sources, so they
cannot drift: the command reference from the Typer app (tools/cli_docs.py) and the benchmarks page
from BENCHMARKS.md."""

import sys
from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

from cli_docs import reference  # noqa: E402


def on_files(files, config):
    files.append(File.generated(config, "reference/cli.md", content=reference()))
    benchmarks = (ROOT / "BENCHMARKS.md").read_text().replace("](docs/", "](")
    files.append(File.generated(config, "benchmarks.md", content=benchmarks))
    return files
