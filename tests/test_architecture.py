"""The layer order of ARCHITECTURE.md, enforced on the real import graph (grimp).

Layers, lowest first; a module may import its own layer and the ones below, never
one above:

  0 shared     config.env, config.api (the management API's plumbing), config.api_errors,
               accounts (roles: who may use which door),
               config.api_fields and config.api_schema (its input fields and its schema)
  1 capacity   targetgroups
  2 routing    balancers
  3 gateway    gateway (the /v1 hot path, health, usage events and their read side)
  4 doors      the HTML pages, the management API, the admin and the management
               commands of every app, and the playground
  5 root       config (settings, URLs, ASGI/WSGI entry points, the Celery app)

A module's layer is given by the longest matching prefix below. Across apps only
public names are imported: `from balancers.models import _x` fails the test.
"""

from __future__ import annotations

import ast
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("config", "accounts", "targetgroups", "balancers", "gateway", "playground")

LAYER_NAMES = ["shared", "capacity", "routing", "gateway", "doors", "root"]
PREFIXES: dict[str, int] = {
    "config": 5,
    "config.env": 0,
    "config.api": 0,
    "config.api_errors": 0,
    "config.http": 0,
    "accounts": 0,
    "config.api_fields": 0,
    "config.api_schema": 0,
    "targetgroups": 1,
    "balancers": 2,
    "gateway": 3,
    "playground": 4,
}
# The doors of every app: pages, management API, admin, management commands.
DOOR_SUFFIXES = (
    "views",
    "forms",
    "urls",
    "page_selectors",
    "api",
    "api_urls",
    "admin",
    "management",
    "templatetags",
)


def layer_of(module: str) -> int:
    parts = module.split(".")
    if (
        parts[0] in ("targetgroups", "balancers", "gateway")
        and len(parts) > 1
        and parts[1] in DOOR_SUFFIXES
    ):
        return 4
    for end in range(len(parts), 0, -1):
        prefix = ".".join(parts[:end])
        if prefix in PREFIXES:
            return PREFIXES[prefix]
    raise AssertionError(f"{module} has no layer: add it to tests/test_architecture.py")


def upward_imports(graph: grimp.ImportGraph) -> list[str]:
    problems = []
    for importer in sorted(graph.modules):
        if ".migrations" in importer:
            continue
        for imported in sorted(graph.find_modules_directly_imported_by(importer)):
            if layer_of(imported) > layer_of(importer):
                problems.append(
                    f"{importer} ({LAYER_NAMES[layer_of(importer)]}) imports {imported} "
                    f"({LAYER_NAMES[layer_of(imported)]})"
                )
    return problems


def private_names_across_apps() -> list[str]:
    problems = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(), filename=str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    app = node.module.split(".")[0]
                    if app in PACKAGES and app != package:
                        private = [a.name for a in node.names if a.name.startswith("_")]
                        if private or any(p.startswith("_") for p in node.module.split(".")):
                            problems.append(
                                f"{path.relative_to(ROOT)}: from {node.module} import {private}"
                            )
    return problems


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph(*PACKAGES, cache_dir=None)


def test_imports_only_run_down_the_layers(graph: grimp.ImportGraph) -> None:
    assert upward_imports(graph) == []


def test_no_private_name_is_imported_across_apps() -> None:
    assert private_names_across_apps() == []


def test_the_check_catches_an_import_that_runs_back_up(graph: grimp.ImportGraph) -> None:
    # A deliberately wrong import: the capacity layer reaching into the gateway.
    graph.add_import(
        importer="targetgroups.models",
        imported="gateway.hotpath.runtime",
        line_number=1,
        line_contents="from gateway.hotpath.runtime import health_snapshot",
    )
    try:
        assert upward_imports(graph) == [
            "targetgroups.models (capacity) imports gateway.hotpath.runtime (gateway)"
        ]
    finally:
        graph.remove_import(importer="targetgroups.models", imported="gateway.hotpath.runtime")


def test_every_module_has_a_layer(graph: grimp.ImportGraph) -> None:
    for module in graph.modules:
        layer_of(module)


def api_framework_in_services(sources: dict[str, str]) -> list[str]:
    """Services raise Django's ValidationError only: the doors translate it for their audience
    (a form's errors, the management API's 400, a command's message)."""
    problems = []
    for name, text in sorted(sources.items()):
        for node in ast.walk(ast.parse(text)):
            modules = (
                [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else []
            )
            problems += [
                f"{name} imports {m}" for m in modules if m.split(".")[0] == "rest_framework"
            ]
    return problems


def test_services_raise_one_error_type() -> None:
    sources = {
        str(path.relative_to(ROOT)): path.read_text()
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("services.py"))
    }
    assert len(sources) >= 2
    assert api_framework_in_services(sources) == []
    # And it sees a service that reaches for the API framework's exception:
    wrong = {"x/services.py": "from rest_framework.exceptions import ValidationError\n"}
    assert api_framework_in_services(wrong) == ["x/services.py imports rest_framework.exceptions"]
