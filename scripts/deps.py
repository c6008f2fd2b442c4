"""Print the project's dependencies from pyproject.toml, one per line (`dev` adds the dev extras).

`make` installs these into .venv directly: the project itself is not a package
to build, so there is no wheel to make and no setuptools noise.
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

project = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())["project"]
requirements = list(project["dependencies"])
for extra in sys.argv[1:]:
    requirements += project["optional-dependencies"][extra]
print("\n".join(requirements))
