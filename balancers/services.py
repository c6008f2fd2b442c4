from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction

from balancers.models import Balancer, Route
from balancers.validation import balancer_field_errors, route_field_errors, route_set_errors

ROUTE_FIELDS = ("name", "intent", "target_group", "instance", "priority", "weight", "is_default", "enabled", "examples")


def balancer_config_errors(*, fields: dict[str, Any], routes: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Every error in a balancer and its routes, keyed like a form: field, "routes", "routes[i].field"."""
    errors: dict[str, Any] = dict(
        balancer_field_errors(
            routing_mode=fields.get("routing_mode", ""),
            workload_kind=fields.get("workload_kind", ""),
            router_model=fields.get("router_model"),
        )
    )
    for index, route in enumerate(routes):
        for key, message in route_field_errors(
            routing_mode=fields.get("routing_mode", ""), workload_kind=fields.get("workload_kind", ""), route=route
        ).items():
            errors[f"routes[{index}].{key}"] = message
    set_errors = route_set_errors(routes)
    if set_errors:
        errors["routes"] = set_errors
    return errors


@transaction.atomic
def balancer_save(*, balancer: Balancer | None = None, fields: dict[str, Any], routes: Sequence[dict[str, Any]]) -> Balancer:
    """Create or update a balancer with its full set of routes. All or nothing."""
    balancer = balancer or Balancer()
    for key, value in fields.items():
        setattr(balancer, key, value)
    # Validate what the balancer will be: the fields given over the ones it has.
    effective = {
        "routing_mode": balancer.routing_mode,
        "workload_kind": balancer.workload_kind,
        "router_model": balancer.router_model if balancer.router_model_id else None,
    }
    errors = balancer_config_errors(fields=effective, routes=routes)
    try:
        balancer.full_clean(validate_unique=True)
    except ValidationError as exc:
        errors = {**exc.message_dict, **errors}
    if errors:
        raise ValidationError(errors)
    balancer.save()
    existing = {r.name: r for r in balancer.routes.all()}
    keep = {r["name"] for r in routes}
    Route.objects.filter(balancer=balancer).exclude(name__in=keep).delete()
    # Clear the default first so the one-default constraint holds at every step.
    Route.objects.filter(balancer=balancer).update(is_default=False)
    for data in routes:
        route = existing.get(data["name"]) or Route(balancer=balancer)
        for key in ROUTE_FIELDS:
            if key in data:
                setattr(route, key, data[key] if key != "examples" else list(data[key] or []))
        route.full_clean(exclude=["balancer"])
        route.save()
    return balancer


def balancer_delete(*, balancer: Balancer) -> None:
    balancer.delete()
