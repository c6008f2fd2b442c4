from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from balancers.models import Balancer
from gateway.services import api_key_create


class Command(BaseCommand):
    help = (
        "Create a gateway API key and print its secret (alone, on stdout). It is not shown again."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--name", required=True)
        parser.add_argument(
            "--balancers", default="", help="Comma-separated balancer names; empty: every balancer."
        )
        parser.add_argument(
            "--rpm", type=int, default=None, help="Requests per minute; default unlimited."
        )
        parser.add_argument(
            "--allow-route-override",
            action="store_true",
            help="Let requests with this key force an enabled route with the X-Balancer-Route "
            "header.",
        )
        parser.add_argument(
            "--allow-direct-models",
            action="store_true",
            help="Let requests with this key call any model of a provider with a stored credential "
            "by its own name (docs/providers.md).",
        )

    def handle(
        self,
        *args: Any,
        name: str,
        balancers: str,
        rpm: int | None,
        allow_route_override: bool,
        allow_direct_models: bool,
        **options: Any,
    ) -> None:
        names = [n.strip() for n in balancers.split(",") if n.strip()]
        found = list(Balancer.objects.filter(name__in=names))
        missing = sorted(set(names) - {b.name for b in found})
        if missing:
            raise CommandError(f"no balancer named {', '.join(missing)}")
        if rpm is not None and rpm < 1:
            raise CommandError("--rpm must be at least 1")
        _, secret = api_key_create(
            name=name,
            balancers=found,
            rate_limit_per_minute=rpm,
            allow_route_override=allow_route_override,
            allow_direct_models=allow_direct_models,
        )
        self.stdout.write(secret)
