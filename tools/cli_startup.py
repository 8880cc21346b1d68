"""Time `fastseg --help` and each command's `--help`: the median wall time of 5 runs and the peak
memory, for BENCHMARKS.md (issue 15's target: under 1.5 s).

Usage: python tools/cli_startup.py [RUNS]   (run with the project's .venv on PATH or as .venv/bin/python)
"""

import statistics
import subprocess
import sys
import time
from pathlib import Path

FASTSEG = Path(sys.executable).with_name("fastseg")
COMMANDS = ([], ["fit"], ["find-lr"], ["evaluate"], ["predict"], ["demo"], ["bench"])


def time_help(args: list[str], runs: int) -> tuple[float, float]:
    """(median seconds, largest peak RSS in MiB) of `fastseg ARGS --help` over `runs` runs
    (the RSS from GNU time's %M)."""
    seconds, peaks = [], []
    for _ in range(runs):
        start = time.perf_counter()
        out = subprocess.run(["/usr/bin/time", "-f", "%M", str(FASTSEG), *args, "--help"], check=True,
                             capture_output=True, text=True)
        seconds.append(time.perf_counter() - start)
        peaks.append(int(out.stderr.strip().splitlines()[-1]) / 1024)
    return statistics.median(seconds), max(peaks)


def main(runs: int = 5) -> None:
    print(f"| command | median of {runs} (s) | peak RSS (MiB) |\n|---|---|---|")
    for args in COMMANDS:
        median, peak = time_help(args, runs)
        print(f"| `fastseg {' '.join(args + ['--help'])}` | {median:.2f} | {peak:.0f} |")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:]))
