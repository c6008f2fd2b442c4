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
               commands of every app, the playground, and pages/ (the pages that read
               several apps: the balancer, target group and instance pages)
  5 root       config (settings, URLs, ASGI/WSGI entry points, the Celery app)

A module's layer is given by the longest matching prefix below. Across apps only
public names are imported: `from balancers.models import _x` fails the test.

And no two apps import each other, by any path and through any of their modules (the
doors included): an app's pages that need a higher app live in pages/, not in the app.
"""

from __future__ import annotations

import ast
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("config", "accounts", "targetgroups", "balancers", "gateway", "playground", "pages")

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
    "pages": 4,
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


def app_of(module: str) -> str:
    """The app a module belongs to, its doors included; config's shared modules (layer 0) are one
    app and the root (settings, URLs) another."""
    top = module.split(".")[0]
    return "config (shared)" if top == "config" and layer_of(module) == 0 else top


def app_cycles(graph: grimp.ImportGraph) -> list[str]:
    """Every import between two apps that import each other, directly or through other apps."""
    edges: dict[tuple[str, str], str] = {}
    for importer in sorted(graph.modules):
        if ".migrations" in importer:
            continue
        for imported in sorted(graph.find_modules_directly_imported_by(importer)):
            pair = (app_of(importer), app_of(imported))
            if pair[0] != pair[1]:
                edges.setdefault(pair, f"{importer} imports {imported}")
    reach: dict[str, set[str]] = {}  # the apps each app imports, directly or not
    for app in {a for pair in edges for a in pair}:
        reach[app] = set()
        todo = [app]
        while todo:
            current = todo.pop()
            for a, b in edges:
                if a == current and b not in reach[app]:
                    reach[app].add(b)
                    todo.append(b)
    return [
        f"{a} -> {b} ({example}) and {b} reaches {a}"
        for (a, b), example in sorted(edges.items())
        if a in reach[b]
    ]


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


def test_no_two_apps_import_each_other(graph: grimp.ImportGraph) -> None:
    assert app_cycles(graph) == []


def test_the_check_catches_a_cycle_between_apps(graph: grimp.ImportGraph) -> None:
    # A deliberately wrong import that runs down the layers (a door, layer 4, calling the
    # gateway, layer 3) but closes a cycle: the gateway imports targetgroups.
    graph.add_import(
        importer="targetgroups.api",
        imported="gateway.probes",
        line_number=1,
        line_contents="from gateway.probes import probe_credential",
    )
    try:
        assert upward_imports(graph) == []  # the layer check alone lets it through
        problems = app_cycles(graph)
        assert len(problems) == 4  # every import on the loops: targetgroups, balancers, gateway
        assert problems[-1] == (
            "targetgroups -> gateway (targetgroups.api imports gateway.probes) and gateway reaches "
            "targetgroups"
        )
        assert [p.split(" (")[0] for p in problems] == [
            "balancers -> targetgroups",
            "gateway -> balancers",
            "gateway -> targetgroups",
            "targetgroups -> gateway",
        ]
    finally:
        graph.remove_import(importer="targetgroups.api", imported="gateway.probes")
    assert app_cycles(graph) == []


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
