"""Per-module mutation scores of the last `make mutate` (mutmut's mutants/**/*.py.meta), as the
Markdown table TESTING.md keeps, then each surviving mutant's name.

Score = killed / (killed + survived + no tests + timeout + suspicious): a mutant that no selected test
reaches counts against the module, one not yet run (`not checked`) is left out and counted apart.
"""

import json
import sys
from collections import Counter
from pathlib import Path

KILLED = {1, 3, 37}             # a test failed (3: pytest internal error), or the type checker caught it
SURVIVED, NOT_CHECKED = 0, None


def module_counts(meta: Path) -> tuple[Counter, list[str]]:
    """Counts of killed / survived / other / not checked in one module, and its survivors' names."""
    codes = json.loads(meta.read_text())["exit_code_by_key"]
    counts = Counter("killed" if c in KILLED else "survived" if c == SURVIVED else
                     "not checked" if c is NOT_CHECKED else "other" for c in codes.values())
    return counts, sorted(k for k, c in codes.items() if c == SURVIVED)


def main(root: Path = Path("mutants")) -> int:
    """Print the table and the survivors; exit 1 when a checked module scores under 90 %."""
    print("| module | mutants | killed | survived | other | not checked | score |")
    print("|---|---|---|---|---|---|---|")
    survivors, low = [], False
    for meta in sorted(root.glob("fastseg/**/*.py.meta")):
        counts, names = module_counts(meta)
        checked = counts.total() - counts["not checked"]
        score = f"{100 * counts['killed'] / checked:.1f} %" if checked else "–"
        low |= bool(checked) and counts["killed"] / checked < 0.9
        module = str(meta.relative_to(root)).removesuffix(".meta")
        print(f"| {module} | {counts.total()} | {counts['killed']} | {counts['survived']} | {counts['other']} | "
              f"{counts['not checked']} | {score} |")
        survivors += names
    print(f"\n{len(survivors)} survivor(s) (`mutmut show NAME` prints each diff):")
    print("\n".join(survivors))
    return int(low)


if __name__ == "__main__":
    sys.exit(main(*map(Path, sys.argv[1:])))
