"""Reads of balancers and their routes."""

from __future__ import annotations

from django.db.models import Prefetch, QuerySet

from balancers.models import Balancer, ContentRule, Route


def balancer_list() -> QuerySet[Balancer]:
    """Balancers with their router model and routes (and the routes' destinations) loaded."""
    routes = Route.objects.select_related("target_group", "instance").order_by("priority", "id")
    return (
        Balancer.objects.select_related("router_model")
        .prefetch_related(
            Prefetch("routes", queryset=routes),
            Prefetch("rules", queryset=ContentRule.objects.select_related("route")),
        )
        .order_by("name")
    )


def balancer_get(*, name: str) -> Balancer | None:
    return balancer_list().filter(name=name).first()
