"""Shim: `python cli.py X` behaves as `fastseg X`."""
from fastseg.cli import app

if __name__ == "__main__":
    app(prog_name="fastseg")
