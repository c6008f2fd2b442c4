from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction

from balancers.models import AuditEntry, Balancer, ContentRule, Route
from balancers.validation import (
    balancer_field_errors,
    route_field_errors,
    route_set_errors,
    rule_field_errors,
    rule_set_errors,
)
from targetgroups.models import Instance, TargetGroup, TargetGroupMember

ROUTE_FIELDS = (
    "name",
    "intent",
    "target_group",
    "instance",
    "priority",
    "weight",
    "is_default",
    "enabled",
    "examples",
    "latency_threshold_ms",
    "hedge",
)
# A content rule as the entry points give it: `route` is the route's name.
RULE_FIELDS = (
    "name",
    "order",
    "kind",
    "value",
    "metadata_key",
    "min_tokens",
    "max_tokens",
    "route",
    "enabled",
)


def rule_values(balancer: Balancer) -> list[dict[str, Any]]:
    """The balancer's saved content rules, as balancer_save takes them."""
    return [
        {**{k: getattr(rule, k) for k in RULE_FIELDS if k != "route"}, "route": rule.route.name}
        for rule in balancer.rules.select_related("route").order_by("order", "name")
    ]


def balancer_config_errors(
    *,
    fields: dict[str, Any],
    routes: Sequence[dict[str, Any]],
    rules: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    """Every error in a balancer, its routes and its content rules, keyed like a form: field,
    "routes", "routes[i].field", "rules", "rules[i].field"."""
    errors: dict[str, Any] = dict(
        balancer_field_errors(
            routing_mode=fields.get("routing_mode", ""),
            workload_kind=fields.get("workload_kind", ""),
            router_model=fields.get("router_model"),
        )
    )
    for index, route in enumerate(routes):
        for key, message in route_field_errors(
            routing_mode=fields.get("routing_mode", ""),
            workload_kind=fields.get("workload_kind", ""),
            route=route,
        ).items():
            errors[f"routes[{index}].{key}"] = message
    set_errors = route_set_errors(routes)
    if set_errors:
        errors["routes"] = set_errors
    route_states = {
        str(r["name"]): r.get("enabled", True) is not False for r in routes if r.get("name")
    }
    for index, rule in enumerate(rules):
        for key, message in rule_field_errors(
            rule=rule, routes=route_states, workload_kind=fields.get("workload_kind", "")
        ).items():
            errors[f"rules[{index}].{key}"] = message
    rule_errors = rule_set_errors(rules)
    if rule_errors:
        errors["rules"] = rule_errors
    baseline = fields.get("baseline_route") or ""
    if baseline and baseline not in {route.get("name") for route in routes}:
        errors["baseline_route"] = (
            f"The baseline route {baseline!r} is not one of this balancer's routes."
        )
    return errors


@transaction.atomic
def balancer_save(
    *,
    balancer: Balancer | None = None,
    fields: dict[str, Any],
    routes: Sequence[dict[str, Any]],
    rules: Sequence[dict[str, Any]] | None = None,
) -> Balancer:
    """Create or update a balancer with its full set of routes and content rules. All or nothing.

    `rules` is the full new set (each naming its route); None keeps the saved ones, which
    must still point at enabled routes of the new set.
    """
    if rules is None:
        rules = rule_values(balancer) if balancer is not None and balancer.pk else []
    balancer = balancer or Balancer()
    for key, value in fields.items():
        setattr(balancer, key, value)
    # Validate what the balancer will be: the fields given over the ones it has.
    effective = {
        "routing_mode": balancer.routing_mode,
        "workload_kind": balancer.workload_kind,
        "router_model": balancer.router_model if balancer.router_model_id else None,
        "baseline_route": balancer.baseline_route,
    }
    errors = balancer_config_errors(fields=effective, routes=routes, rules=rules)
    try:
        balancer.full_clean(validate_unique=True)
    except ValidationError as exc:
        errors = {**exc.message_dict, **errors}
    if errors:
        raise ValidationError(errors)
    balancer.save()
    # Rules are replaced whole: they go first, so no rule holds on to a route about to go.
    ContentRule.objects.filter(balancer=balancer).delete()
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
    saved_routes = {r.name: r for r in balancer.routes.all()}
    for data in rules:
        rule = ContentRule(
            balancer=balancer,
            route=saved_routes[data["route"]],
            **{k: data.get(k) for k in RULE_FIELDS if k not in ("route", "enabled", "order")},
        )
        rule.order = data.get("order") or 1
        rule.enabled = data.get("enabled", True) is not False
        rule.value = (rule.value or "").strip() if rule.kind != "regex" else rule.value or ""
        rule.metadata_key = (rule.metadata_key or "").strip()
        rule.full_clean(exclude=["balancer", "route"])
        rule.save()
    return balancer


def balancer_delete(*, balancer: Balancer) -> None:
    balancer.delete()


# -- operator actions from the live board, each recorded in the audit log -----------------------
#
# Each change is a model save, so the configuration version is bumped on commit and every
# gateway worker routes by it within GATEWAY_CONFIG_POLL_SECONDS. Ending a cooldown is health
# state, not configuration: the door calls gateway.hotpath.runtime.mark_healthy and records it here.

DRAIN_RESTORE_WEIGHT = 100  # restore's weight when the drain's own record is gone


class ActionRefused(Exception):
    """The action makes no sense for that object (said to the operator as is)."""


def audit_record(
    *,
    user: Any,
    action: str,
    object_label: str,
    balancer: Balancer | None = None,
    detail: dict[str, Any] | None = None,
) -> AuditEntry:
    return AuditEntry.objects.create(
        user=user if getattr(user, "pk", None) else None,
        username=getattr(user, "username", "") or "",
        action=action,
        object_label=object_label[:200],
        balancer=balancer,
        detail=detail or {},
    )


@transaction.atomic
def balancer_set_prompt_logging(*, user: Any, balancer: Balancer, keep: bool) -> AuditEntry:
    """Keep prompts (for corrections) or stop keeping them; the save bumps the config version, so
    every gateway worker starts or stops keeping them within GATEWAY_CONFIG_POLL_SECONDS."""
    if balancer.log_prompts == keep:
        raise ActionRefused(f"Prompt logging is already {'on' if keep else 'off'}.")
    balancer.log_prompts = keep
    balancer.save(update_fields=["log_prompts", "updated_at"])
    return audit_record(
        user=user,
        action="prompt logging on" if keep else "prompt logging off",
        object_label=f"balancer {balancer.name}",
        balancer=balancer,
    )


@transaction.atomic
def route_set_enabled(*, user: Any, balancer: Balancer, route: Route, enabled: bool) -> AuditEntry:
    if not enabled and route.is_default:
        raise ActionRefused(
            "The default route answers prompts that match no other route: it cannot be disabled."
        )
    if route.enabled == enabled:
        raise ActionRefused(
            f"Route {route.name} is already {'enabled' if enabled else 'disabled'}."
        )
    route.enabled = enabled
    route.save(update_fields=["enabled"])
    return audit_record(
        user=user,
        action="route enabled" if enabled else "route disabled",
        object_label=f"route {route.name}",
        balancer=balancer,
    )


def _group(route: Route) -> TargetGroup:
    if route.target_group is None:
        raise ActionRefused(
            f"Route {route.name} sends to one instance, not a target group: disable the route "
            "instead."
        )
    return route.target_group


def _member(route: Route, instance_id: str) -> TargetGroupMember:
    group = _group(route)
    member = (
        group.members.select_related("instance").filter(instance__instance_id=instance_id).first()
    )
    if member is None:
        raise ActionRefused(f"{instance_id} is not a member of {group.name}.")
    return member


@transaction.atomic
def member_drain(*, user: Any, balancer: Balancer, route: Route, instance_id: str) -> AuditEntry:
    member = _member(route, instance_id)
    if member.weight == 0:
        raise ActionRefused(f"{instance_id} is already drained.")
    previous = member.weight
    member.weight = 0
    member.save(update_fields=["weight"])
    group = _group(route).name
    return audit_record(
        user=user,
        action="member drained",
        balancer=balancer,
        object_label=f"{instance_id} in {group}",
        detail={"group": group, "instance": instance_id, "previous_weight": previous},
    )


@transaction.atomic
def member_restore(*, user: Any, balancer: Balancer, route: Route, instance_id: str) -> AuditEntry:
    member = _member(route, instance_id)
    if member.weight != 0:
        raise ActionRefused(f"{instance_id} is not drained.")
    group = _group(route).name
    drained = (
        AuditEntry.objects.filter(
            action="member drained", detail__group=group, detail__instance=instance_id
        )
        .order_by("-at", "-id")
        .first()
    )
    weight = int((drained.detail if drained else {}).get("previous_weight") or DRAIN_RESTORE_WEIGHT)
    member.weight = weight
    member.save(update_fields=["weight"])
    return audit_record(
        user=user,
        action="member restored",
        balancer=balancer,
        object_label=f"{instance_id} in {group}",
        detail={"group": group, "instance": instance_id, "weight": weight},
    )


@transaction.atomic
def simulator_set_down(
    *, user: Any, balancer: Balancer | None, instance: Instance, down: bool
) -> AuditEntry:
    if instance.provider != "simulator":
        raise ActionRefused(f"{instance.instance_id} is not a simulator instance.")
    options = dict(instance.options or {})
    options["down"] = down
    instance.options = options
    instance.save(update_fields=["options"])
    return audit_record(
        user=user,
        action="simulator switched down" if down else "simulator switched up",
        object_label=instance.instance_id,
        balancer=balancer,
    )
