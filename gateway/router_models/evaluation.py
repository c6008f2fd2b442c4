"""Routing evaluation: how well a router model picks routes for labelled prompts.

Pure Python (no Django, no numpy). ``evaluate`` takes the expected and the
predicted route of every prompt, optionally the decision latencies, per-route
prices and token counts, and returns an ``EvaluationReport`` with accuracy,
per-route precision and recall, the confusion matrix, latency p50/p99 and the
projected cost of the traffic as routed against sending all of it to the most
expensive route. ``format_report`` renders it as plain text;
``EvaluationReport.to_dict`` gives the same as one JSON-ready object.

Run as a module it evaluates the built-in local router model on an evaluation
set from ``tests/data`` (see ``docs/routing-data.md``)::

    python -m gateway.router_models.evaluation tests/data/support.routes.json \
        tests/data/support.jsonl [--zero-shot] [--json]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.router_models.local import RouteIntent

# Column used in the confusion matrix for "the router named no route".
NO_ROUTE = "(none)"


@dataclass(frozen=True)
class LabelledPrompt:
    prompt: str
    route: str


@dataclass(frozen=True)
class RoutePrice:
    """USD per 1M tokens of the instance a route would send to."""

    input_per_million: float
    output_per_million: float = 0.0

    def cost(self, input_tokens: int, output_tokens: int = 0) -> float:
        return (
            input_tokens * self.input_per_million + output_tokens * self.output_per_million
        ) / 1_000_000


@dataclass(frozen=True)
class RouteMetrics:
    route: str
    support: int  # prompts labelled with this route
    predicted: int  # prompts the router sent to it
    true_positives: int

    @property
    def precision(self) -> float | None:
        return self.true_positives / self.predicted if self.predicted else None

    @property
    def recall(self) -> float | None:
        return self.true_positives / self.support if self.support else None


@dataclass(frozen=True)
class LatencySummary:
    count: int
    p50_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float


@dataclass(frozen=True)
class CostProjection:
    routed_usd: float  # the traffic as the router sent it
    baseline_usd: float  # all of it on the most expensive route
    baseline_route: str
    per_route_usd: dict[str, float]
    unpriced: int  # prompts whose predicted route has no price (counted as 0)

    @property
    def savings_usd(self) -> float:
        return self.baseline_usd - self.routed_usd

    @property
    def savings_ratio(self) -> float | None:
        return self.savings_usd / self.baseline_usd if self.baseline_usd else None


@dataclass(frozen=True)
class EvaluationReport:
    total: int
    correct: int
    routes: tuple[str, ...]  # row and column order of the tables
    per_route: dict[str, RouteMetrics]
    confusion: dict[str, dict[str, int]]  # expected -> predicted -> count
    latency: LatencySummary | None = None
    cost: CostProjection | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.total if self.total else None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "total": self.total,
            "correct": self.correct,
            "accuracy": self.accuracy,
            "routes": {
                name: {
                    "support": m.support,
                    "predicted": m.predicted,
                    "true_positives": m.true_positives,
                    "precision": m.precision,
                    "recall": m.recall,
                }
                for name, m in self.per_route.items()
            },
            "confusion": self.confusion,
            "latency_ms": None,
            "cost": None,
        }
        if self.latency is not None:
            out["latency_ms"] = {
                "count": self.latency.count,
                "p50": self.latency.p50_ms,
                "p99": self.latency.p99_ms,
                "mean": self.latency.mean_ms,
                "max": self.latency.max_ms,
            }
        if self.cost is not None:
            out["cost"] = {
                "routed_usd": self.cost.routed_usd,
                "baseline_usd": self.cost.baseline_usd,
                "baseline_route": self.cost.baseline_route,
                "savings_usd": self.cost.savings_usd,
                "savings_ratio": self.cost.savings_ratio,
                "per_route_usd": self.cost.per_route_usd,
                "unpriced": self.cost.unpriced,
            }
        out.update(self.extra)
        return out


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (the value below which ``pct`` % of the values fall)."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return float(ordered[min(rank, len(ordered)) - 1])


def summarise_latency(latencies_ms: Sequence[float]) -> LatencySummary | None:
    if not latencies_ms:
        return None
    return LatencySummary(
        count=len(latencies_ms),
        p50_ms=percentile(latencies_ms, 50),
        p99_ms=percentile(latencies_ms, 99),
        mean_ms=sum(latencies_ms) / len(latencies_ms),
        max_ms=float(max(latencies_ms)),
    )


def estimate_tokens(text: str) -> int:
    """About four characters a token: a price estimate when no tokenizer is at hand."""
    return max(1, math.ceil(len(text) / 4)) if text else 0


def project_cost(
    predicted: Sequence[str | None],
    prices: Mapping[str, RoutePrice],
    input_tokens: Sequence[int],
    output_tokens: Sequence[int] | int = 0,
) -> CostProjection | None:
    """Cost of the traffic as routed, against all of it on the most expensive route.

    The most expensive route is the priced route on which this very traffic
    would cost the most. A prediction without a price (no route, or a route
    missing from ``prices``) counts as zero and is reported in ``unpriced``.
    """
    if not prices:
        return None
    outputs = (
        [output_tokens] * len(predicted) if isinstance(output_tokens, int) else list(output_tokens)
    )
    if not (len(predicted) == len(input_tokens) == len(outputs)):
        raise ValueError("predicted, input_tokens and output_tokens differ in length")
    per_route = dict.fromkeys(prices, 0.0)
    unpriced = 0
    for route, tokens_in, tokens_out in zip(predicted, input_tokens, outputs, strict=True):
        price = prices.get(route) if route is not None else None
        if route is None or price is None:
            unpriced += 1
            continue
        per_route[route] += price.cost(tokens_in, tokens_out)
    totals = {
        name: sum(p.cost(i, o) for i, o in zip(input_tokens, outputs, strict=True))
        for name, p in prices.items()
    }
    baseline_route = max(totals, key=lambda name: (totals[name], name))
    return CostProjection(
        routed_usd=sum(per_route.values()),
        baseline_usd=totals[baseline_route],
        baseline_route=baseline_route,
        per_route_usd=per_route,
        unpriced=unpriced,
    )


def evaluate(
    expected: Sequence[str],
    predicted: Sequence[str | None],
    *,
    routes: Sequence[str] | None = None,
    latencies_ms: Sequence[float] | None = None,
    prices: Mapping[str, RoutePrice] | None = None,
    input_tokens: Sequence[int] | None = None,
    output_tokens: Sequence[int] | int = 0,
) -> EvaluationReport:
    """Score predictions against labels.

    ``routes`` fixes the order of the tables (the balancer's routes); labels or
    predictions outside it are appended. A ``None`` prediction (the router named
    no route) shows in the ``(none)`` column and is never correct: map it to the
    default route first to score what the gateway would have done.
    """
    if len(expected) != len(predicted):
        raise ValueError("expected and predicted differ in length")
    order: list[str] = list(dict.fromkeys(routes or ()))
    for name in [*expected, *(p for p in predicted if p is not None)]:
        if name not in order:
            order.append(name)
    columns = [*order, NO_ROUTE] if any(p is None for p in predicted) else order
    confusion = {row: dict.fromkeys(columns, 0) for row in order}
    for truth, guess in zip(expected, predicted, strict=True):
        confusion[truth][guess if guess is not None else NO_ROUTE] += 1
    per_route = {
        name: RouteMetrics(
            route=name,
            support=sum(confusion[name].values()),
            predicted=sum(confusion[row][name] for row in order),
            true_positives=confusion[name][name],
        )
        for name in order
    }
    cost = None
    if prices:
        tokens = list(input_tokens) if input_tokens is not None else None
        if tokens is None:
            raise ValueError("prices need input_tokens")
        cost = project_cost(predicted, prices, tokens, output_tokens)
    return EvaluationReport(
        total=len(expected),
        correct=sum(1 for t, p in zip(expected, predicted, strict=True) if t == p),
        routes=tuple(order),
        per_route=per_route,
        confusion=confusion,
        latency=summarise_latency(list(latencies_ms or ())),
        cost=cost,
    )


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    rows = [list(header), *map(list, rows)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = []
    for n, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return lines


def format_report(report: EvaluationReport, *, title: str | None = None) -> str:
    """The report as plain-text tables, for a terminal."""
    lines: list[str] = [title, ""] if title else []
    lines.append(f"prompts   {report.total}")
    lines.append(f"accuracy  {_pct(report.accuracy)} ({report.correct}/{report.total})")
    lines.append("")
    lines += _table(
        ["route", "prompts", "routed", "precision", "recall"],
        (
            [m.route, str(m.support), str(m.predicted), _pct(m.precision), _pct(m.recall)]
            for m in report.per_route.values()
        ),
    )
    lines.append("")
    lines.append("confusion (rows: expected route, columns: chosen route)")
    columns = list(next(iter(report.confusion.values()), {}).keys())
    lines += _table(
        ["expected \\ chosen", *columns],
        ([row, *(str(report.confusion[row][c]) for c in columns)] for row in report.confusion),
    )
    if report.latency is not None:
        lat = report.latency
        lines.append("")
        lines.append(
            f"decision latency  p50 {lat.p50_ms:.2f} ms  p99 {lat.p99_ms:.2f} ms  "
            f"mean {lat.mean_ms:.2f} ms  max {lat.max_ms:.2f} ms  ({lat.count} decisions)"
        )
    if report.cost is not None:
        cost = report.cost
        lines.append("")
        lines.append(f"cost as routed            ${cost.routed_usd:.4f}")
        lines.append(f"all on {cost.baseline_route:<18} ${cost.baseline_usd:.4f}")
        lines.append(
            f"saved                     ${cost.savings_usd:.4f} ({_pct(cost.savings_ratio)})"
        )
        if cost.unpriced:
            lines.append(f"({cost.unpriced} prompts routed nowhere priced, counted as $0)")
    return "\n".join(lines) + "\n"


def load_labelled(path: str | Path) -> list[LabelledPrompt]:
    """Read JSONL lines ``{"prompt": ..., "route": ...}`` (other keys are ignored)."""
    items = []
    with Path(path).open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                items.append(LabelledPrompt(prompt=str(row["prompt"]), route=str(row["route"])))
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"{path}:{number}: not a {{prompt, route}} object") from exc
    return items


def load_route_set(path: str | Path) -> tuple[list[RouteIntent], str | None]:
    """Read a ``*.routes.json`` file from tests/data: (RouteIntent list, default route)."""
    from gateway.router_models.local import RouteIntent

    doc = json.loads(Path(path).read_text(encoding="utf-8"))
    routes = [
        RouteIntent(name=r["name"], intent=r["intent"], examples=tuple(r.get("examples", ())))
        for r in doc["routes"]
    ]
    return routes, doc.get("default_route")


METHODS = {
    "auto": "what the gateway runs: fitted when routes have examples, else zero-shot",
    "fitted": "fitted model on intents and examples (fitted.py)",
    "fitted-intents": "fitted model on the intent sentences alone (prototypes)",
    "zero-shot": "zero-shot scorer on intents alone (local.py, wording cue for easy/hard)",
    "zero-shot-learned": "zero-shot scorer on intents alone, learned difficulty instead of the cue",
    "previous": "the zero-shot scorer given the examples too (the router before issue 13)",
    "difficulty": "the difficulty score alone: 'reasoning' when P(hard) > 0.5 (two-route sets)",
}


def load_split(path: str | Path, split: str) -> list[LabelledPrompt]:
    """Lines of one split: ``dev``/``test`` from a set that has them, ``all`` for every line.

    Sets without a ``split`` field (support, mmlu_families) use even lines as dev
    and odd lines as test.
    """
    rows = []
    with Path(path).open(encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    if split != "all":
        if all("split" in r for r in rows):
            rows = [r for r in rows if r["split"] == split]
        else:
            rows = rows[0 if split == "dev" else 1 :: 2]
    return [LabelledPrompt(prompt=str(r["prompt"]), route=str(r["route"])) for r in rows]


def build_method(method: str, routes: Sequence[RouteIntent]) -> Any:
    """A classifier with ``classify(text)`` for one of ``METHODS``."""
    from gateway.router_models import local
    from gateway.router_models.fitted import FittedIntentClassifier, build_local_router

    intents = [local.RouteIntent(r.name, r.intent) for r in routes]
    if method == "auto":
        return build_local_router(routes)
    if method == "fitted":
        return FittedIntentClassifier(routes)
    if method == "fitted-intents":
        return FittedIntentClassifier(intents)
    if method == "zero-shot":
        return local.LocalIntentClassifier(intents)
    if method == "previous":
        return local.LocalIntentClassifier(routes)
    if method == "zero-shot-learned":
        return _LearnedDifficultyZeroShot(intents)
    if method == "difficulty":
        return _DifficultyOnly()
    raise ValueError(f"unknown method {method!r}; one of {', '.join(METHODS)}")


class _LearnedDifficultyZeroShot:
    def __init__(self, routes: Sequence[RouteIntent]) -> None:
        from gateway.router_models import local

        self._inner = local.LocalIntentClassifier(routes)

    def classify(self, text: str) -> Any:
        from gateway.router_models import local

        saved, local.LEARNED_DIFFICULTY = local.LEARNED_DIFFICULTY, True
        try:
            return self._inner.classify(text)
        finally:
            local.LEARNED_DIFFICULTY = saved


class _DifficultyOnly:
    def classify(self, text: str) -> Any:
        from gateway.router_models.difficulty import default_difficulty_model
        from gateway.router_models.local import Classification

        hard = default_difficulty_model().score_text(text)
        route = "reasoning" if hard > 0.5 else "efficient"
        return Classification(route, max(hard, 1 - hard), {}, hard)


def cached_latencies(prompts: Sequence[str], decide: Any) -> list[float]:
    """Decision latency when the decision cache answers (the gateway's TTL cache and key)."""
    from gateway.hotpath.decision import _prompt_key, _TTLCache

    cache = _TTLCache(len(prompts) + 1, 300.0)
    for n, prompt in enumerate(prompts):
        cache.put((0, 0, _prompt_key(prompt)), decide(n))
    out = []
    for prompt in prompts:
        started = time.perf_counter()
        cache.get((0, 0, _prompt_key(prompt)))
        out.append((time.perf_counter() - started) * 1000)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Evaluate the local router model on a labelled JSONL set."
    )
    parser.add_argument("routes", type=Path, help="a *.routes.json file")
    parser.add_argument("prompts", type=Path, help="a JSONL file of {prompt, route}")
    parser.add_argument("--zero-shot", action="store_true", help="ignore the routes' examples")
    parser.add_argument(
        "--method",
        choices=sorted(METHODS),
        default="auto",
        help="which router model (default: what the gateway runs)",
    )
    parser.add_argument(
        "--split",
        choices=("all", "dev", "test"),
        default="all",
        help="dev lines chose the methods; test lines were held out",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)

    from gateway.router_models.local import RouteIntent, warm_up

    routes, default = load_route_set(args.routes)
    if args.zero_shot:
        routes = [RouteIntent(r.name, r.intent) for r in routes]
    items = load_split(args.prompts, args.split)
    warm_up()
    build_method("difficulty", routes).classify("warm up")  # load the difficulty weights
    started = time.perf_counter()
    classifier = build_method(args.method, routes)
    compile_ms = (time.perf_counter() - started) * 1000
    predicted: list[str | None] = []
    latencies: list[float] = []
    cpu: list[float] = []
    no_match = 0
    for item in items:
        started = time.perf_counter()
        cpu_started = time.thread_time()
        decision = classifier.classify(item.prompt)
        cpu.append((time.thread_time() - cpu_started) * 1000)
        latencies.append((time.perf_counter() - started) * 1000)
        # As the gateway does: no match sends the prompt to the default route.
        no_match += decision.route is None
        predicted.append(decision.route if decision.route is not None else default)
    report = evaluate(
        [i.route for i in items],
        predicted,
        routes=[r.name for r in routes],
        latencies_ms=latencies,
    )
    cached = summarise_latency(cached_latencies([i.prompt for i in items], lambda n: predicted[n]))
    cpu_summary = summarise_latency(cpu)
    report.extra.update(
        compile_ms=compile_ms,
        no_match=no_match,
        default_route=default,
        method=args.method,
        split=args.split,
        cpu_latency_ms=None
        if cpu_summary is None
        else {"p50": cpu_summary.p50_ms, "p99": cpu_summary.p99_ms},
        cached_latency_ms=None if cached is None else {"p50": cached.p50_ms, "p99": cached.p99_ms},
    )
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        mode = "zero-shot" if args.zero_shot else "with examples"
        title = f"{args.prompts.name} ({mode}, method {args.method}, split {args.split})"
        print(format_report(report, title=title), end="")
        if cpu_summary is not None:
            print(
                f"decision CPU time  p50 {cpu_summary.p50_ms:.2f} ms  p99 "
                f"{cpu_summary.p99_ms:.2f} ms"
            )
        if cached is not None:
            print(
                f"from the decision cache  p50 {cached.p50_ms * 1000:.1f} us  p99 "
                f"{cached.p99_ms * 1000:.1f} us"
            )
        print(f"no match (sent to the default route {default}): {no_match}")
        print(f"compile {compile_ms:.1f} ms for {len(routes)} routes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
