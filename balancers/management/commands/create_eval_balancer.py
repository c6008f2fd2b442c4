from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from balancers.models import Balancer
from balancers.services import balancer_save
from targetgroups.models import Instance


class Command(BaseCommand):
    help = (
        "Create (or replace) an intent-classifier balancer from a *.routes.json route set, with "
        "one simulator instance per route and the built-in local router model, for "
        "evaluate_routing."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("routes_file", type=Path)
        parser.add_argument("--name", required=True, help="the balancer's name and serving name")
        parser.add_argument(
            "--price",
            action="append",
            default=[],
            metavar="ROUTE=IN/OUT",
            help="USD per 1M input/output tokens for a route's instance (default 0.50/1.50)",
        )

    @transaction.atomic
    def handle(
        self, *args: Any, routes_file: Path, name: str, price: list[str], **options: Any
    ) -> None:
        try:
            doc = json.loads(routes_file.read_text())
            routes = doc["routes"]
        except (OSError, ValueError, KeyError) as exc:
            raise CommandError(f"cannot read a route set from {routes_file}: {exc}") from None
        prices: dict[str, tuple[Decimal, Decimal]] = {}
        for item in price:
            try:
                route, pair = item.split("=", 1)
                text_in, text_out = pair.split("/", 1)
                prices[route] = (Decimal(text_in), Decimal(text_out))
            except (ValueError, ArithmeticError):
                raise CommandError(f"--price takes ROUTE=IN/OUT, got {item!r}") from None
        router, _ = Instance.objects.get_or_create(
            instance_id="local-router",
            defaults={
                "display_name": "Local router model",
                "provider": "builtin",
                "model": "intent-classifier",
            },
        )
        default = doc.get("default_route") or routes[-1]["name"]
        specs = []
        for index, route in enumerate(routes):
            price_in, price_out = prices.get(route["name"], (Decimal("0.50"), Decimal("1.50")))
            instance, _ = Instance.objects.update_or_create(
                instance_id=f"{name}-{route['name']}"[:63],
                defaults={
                    "display_name": f"{name} {route['name']}",
                    "provider": "simulator",
                    "model": route["name"],
                    "workload_kind": "chat",
                    "input_price_per_million": price_in,
                    "output_price_per_million": price_out,
                },
            )
            specs.append(
                {
                    "name": route["name"],
                    "intent": route["intent"],
                    "examples": list(route.get("examples", [])),
                    "instance": instance,
                    "priority": index + 1,
                    "is_default": route["name"] == default,
                }
            )
        existing = Balancer.objects.filter(name=name).first()
        balancer_save(
            balancer=existing,
            fields={
                "name": name,
                "serving_name": name,
                "workload_kind": "chat",
                "routing_mode": "intent_classifier",
                "router_model": router,
            },
            routes=specs,
        )
        self.stdout.write(
            f"{'Replaced' if existing else 'Created'} balancer {name} with {len(specs)} routes."
        )
