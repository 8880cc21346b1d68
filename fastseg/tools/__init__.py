"""The tools wing: commands about fastseg rather than part of training, kept apart from the
library. `make demo` (demo), `make bench` (bench) and `fastseg doctor` (doctor).

May import: anything in fastseg; nothing in fastseg imports tools except the CLI.
"""
