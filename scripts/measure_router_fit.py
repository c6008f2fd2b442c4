"""The cost of fitting the built-in router, and of loading one another worker shared
(docs/routing.md, "Refit").

For the refit test's routes and each shipped route set (tests/data/*.routes.json): the fit's CPU
time (the whole process, BLAS threads included: median of 5), the stored model's size and the
time to load it. `--old PATH` times a `fitted.py` of another commit too, e.g.

    git show 29a5e0c:gateway/router_models/fitted.py > /tmp/fitted_old.py
    OPENBLAS_NUM_THREADS=1 .venv/bin/python scripts/measure_router_fit.py --old /tmp/fitted_old.py

Run it with OPENBLAS_NUM_THREADS=1 (as the gateway's workers run, config/asgi.py) and without.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import resource
import statistics
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.router_models import fitted  # noqa: E402
from gateway.router_models.evaluation import load_route_set  # noqa: E402
from gateway.router_models.local import RouteIntent  # noqa: E402

SETS = ("easy_hard", "support", "snips", "mmlu_subjects")
REFIT_TEST = [
    RouteIntent(
        "alpha",
        "Questions.",
        (
            "How long should I boil an egg?",
            "Give me a recipe for tomato soup.",
            "What temperature do I roast a chicken at?",
            "How do I make pancakes fluffy?",
        ),
    ),
    RouteIntent(
        "beta",
        "Questions.",
        (
            "Who won the last World Cup?",
            "Explain the offside rule.",
            "How many players are on a football team?",
            "When does the Premier League start?",
        ),
    ),
]


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def fit_ms(module: Any, routes: list[RouteIntent], runs: int = 5) -> float:
    times = []
    for _ in range(runs):
        started = cpu()
        module.FittedIntentClassifier(routes)
        times.append(cpu() - started)
    return statistics.median(times) * 1000


def load_module(path: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location("fitted_other", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["fitted_other"] = module
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--old", help="a fitted.py of another commit, timed too")
    args = parser.parse_args()
    old = load_module(args.old) if args.old else None
    sets: dict[str, list[RouteIntent]] = {"refit test": REFIT_TEST}
    for name in SETS:
        sets[name] = load_route_set(ROOT / "tests" / "data" / f"{name}.routes.json")[0]
    fitted.FittedIntentClassifier(REFIT_TEST)  # the vectors and the difficulty model, loaded once
    print(f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', '(unset)')}")
    for name, routes in sets.items():
        model = fitted.FittedIntentClassifier(routes)
        data = model.to_blob(b"k" * 32)
        started = time.perf_counter()
        loaded = fitted.FittedIntentClassifier.from_blob(routes, data, b"k" * 32)
        load = (time.perf_counter() - started) * 1000
        assert loaded.temperature == model.temperature
        line = (
            f"{name}: {len(routes)} routes, {model.fitted_on} texts; fit CPU "
            f"{fit_ms(fitted, routes):.1f} ms"
            f"{f' (old {fit_ms(old, routes):.1f} ms)' if old else ''}; stored "
            f"{len(data) / 1024:.0f} KiB,"
            f" loaded in {load:.1f} ms"
        )
        print(f"{line}; load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
