from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from gateway.engine.types import BalancerSpec, RouteSpec
from gateway.hotpath.config_version import config_version_from_db
from gateway.hotpath.decision import classify
from gateway.hotpath.snapshot import build_config
from gateway.router_models.evaluation import (
    RoutePrice,
    estimate_tokens,
    evaluate,
    format_report,
    load_labelled,
    summarise_latency,
)


def route_price(route: RouteSpec) -> RoutePrice:
    """What a request on this route costs: the mean price of the first tier's enabled members."""
    members = [m for m in route.group.members if m.enabled and m.instance.enabled]
    if not members:
        return RoutePrice(0.0, 0.0)
    tier = min(m.priority for m in members)
    first = [m.instance for m in members if m.priority == tier]
    return RoutePrice(
        sum(i.input_price_per_million for i in first) / len(first),
        sum(i.output_price_per_million for i in first) / len(first),
    )


class Command(BaseCommand):
    help = (
        'Route a labelled JSONL file ({"prompt": ..., "route": ...} per line) through a '
        "balancer's "
        "router model and print accuracy, per-route precision and recall, the confusion matrix, "
        "decision latency and the projected cost against sending everything to the most expensive "
        "route."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("balancer", help="the balancer's name or serving name")
        parser.add_argument("file", type=Path)
        parser.add_argument(
            "--zero-shot", action="store_true", help="ignore the routes' example prompts"
        )
        parser.add_argument("--json", action="store_true", help="print one JSON object")
        parser.add_argument(
            "--output-tokens",
            type=int,
            default=200,
            help="completion tokens assumed per request (cost)",
        )
        parser.add_argument("--limit", type=int, default=0, help="evaluate the first N lines only")

    def handle(
        self,
        *args: Any,
        balancer: str,
        file: Path,
        zero_shot: bool,
        json: bool,
        output_tokens: int,
        limit: int,
        **options: Any,
    ) -> None:
        config = build_config(config_version_from_db())
        spec = config.routing.balancers.get(balancer) or next(
            (b for b in config.routing.balancers.values() if b.name == balancer), None
        )
        if spec is None:
            raise CommandError(f"no balancer named {balancer!r}")
        if spec.routing_mode != "intent_classifier" or spec.router_model is None:
            raise CommandError(
                f"{spec.name} does not route by intent (mode {spec.routing_mode}); nothing to "
                "evaluate"
            )
        try:
            items = load_labelled(file)
        except (OSError, ValueError) as exc:
            raise CommandError(str(exc)) from None
        if limit:
            items = items[:limit]
        if not items:
            raise CommandError(f"{file} has no labelled prompts")
        names = {r.name for r in spec.routes if r.enabled}
        unknown = sorted({i.route for i in items} - names)
        if unknown:
            raise CommandError(f"labels that are not routes of {spec.name}: {', '.join(unknown)}")
        if zero_shot:
            spec = dataclasses.replace(
                spec, routes=tuple(dataclasses.replace(r, examples=()) for r in spec.routes)
            )
        predicted, latencies, cached = asyncio.run(
            self._classify(spec, config.version, [i.prompt for i in items])
        )
        report = evaluate(
            [i.route for i in items],
            predicted,
            routes=[r.name for r in spec.routes if r.enabled],
            latencies_ms=latencies,
            prices={r.name: route_price(r) for r in spec.routes if r.enabled},
            input_tokens=[estimate_tokens(i.prompt) for i in items],
            output_tokens=output_tokens,
        )
        mode = "zero-shot" if zero_shot else "intents and examples"
        hits = summarise_latency(cached)
        report.extra.update(
            balancer=spec.name,
            router_model=spec.router_model.instance_id if spec.router_model else None,
            mode=mode,
            output_tokens_assumed=output_tokens,
            cached_latency_ms=None if hits is None else {"p50": hits.p50_ms, "p99": hits.p99_ms},
        )
        if json:
            self.stdout.write(_json_dumps(report.to_dict()))
        else:
            self.stdout.write(format_report(report, title=f"{spec.name} on {file.name} ({mode})"))
            if hits is not None:
                self.stdout.write(
                    f"decision latency from the decision cache  p50 {hits.p50_ms:.3f} ms  "
                    f"p99 {hits.p99_ms:.3f} ms  (the same prompts asked again)\n"
                )

    @staticmethod
    async def _classify(
        spec: BalancerSpec, version: int, prompts: list[str]
    ) -> tuple[list[str | None], list[float], list[float]]:
        """Every prompt decided afresh (cache off), then each asked again with the cache on."""
        predicted: list[str | None] = []
        latencies: list[float] = []
        cached: list[float] = []
        # Compile the router model (and load its vectors) before the clock starts.
        await classify(spec, version, [{"role": "user", "content": "warm up"}], use_cache=False)
        for prompt in prompts:
            started = time.perf_counter()
            decision = await classify(
                spec, version, [{"role": "user", "content": prompt}], use_cache=False
            )
            latencies.append((time.perf_counter() - started) * 1000)
            predicted.append(decision.route.name if decision.route is not None else None)
        for prompt in prompts:  # fill the cache, then time hits
            await classify(spec, version, [{"role": "user", "content": prompt}])
        for prompt in prompts:
            started = time.perf_counter()
            await classify(spec, version, [{"role": "user", "content": prompt}])
            cached.append((time.perf_counter() - started) * 1000)
        return predicted, latencies, cached


def _json_dumps(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2)
