"""The lowest versions pyproject.toml declares, as pip constraints (`name==floor`, one per line), for
`make test-floor`: every `name>=X` of the runtime dependencies and the dev extra becomes `name==X`.

Usage: python tools/floor_constraints.py pyproject.toml > floors.txt
"""

import re
import sys
import tomllib

FLOOR = re.compile(r"^\s*([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?\s*>=\s*([^,;\s]+)")


def floors(pyproject: dict) -> dict[str, str]:
    """{name: lowest version} over `project.dependencies` and the `dev` extra (the later wins on repeats,
    which agree in this project)."""
    project = pyproject["project"]
    found = {}
    for requirement in [*project["dependencies"], *project["optional-dependencies"]["dev"]]:
        match = FLOOR.match(requirement)
        if match:
            found[match.group(1).lower()] = match.group(2)
    return found


if __name__ == "__main__":
    with open(sys.argv[1], "rb") as file:
        print("\n".join(f"{name}=={version}" for name, version in floors(tomllib.load(file)).items()))
