"""The rules a balancer and its routes must satisfy, in one place.

The wizard, the admin, the API and the importer all call these functions, so a
balancer without exactly one default route is refused everywhere in the same words.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from targetgroups.models import Instance, Provider, TargetGroup, WorkloadKind

NO_DEFAULT = "Mark one route as the default: it answers prompts that match no other route."
MANY_DEFAULTS = "Only one route can be the default."
NO_ROUTES = "Add at least one route."


def balancer_field_errors(*, routing_mode: str, workload_kind: str, router_model: Instance | None) -> dict[str, str]:
    errors: dict[str, str] = {}
    if routing_mode == "intent_classifier":
        if router_model is None:
            errors["router_model"] = "A router model is required for the intent_classifier mode."
        elif workload_kind != WorkloadKind.CHAT:
            errors["routing_mode"] = "The intent_classifier mode routes chat prompts; use ordered or weighted for embeddings."
    if router_model is not None and router_model.workload_kind != WorkloadKind.CHAT:
        errors["router_model"] = "The router model must be a chat instance."
    if router_model is not None and router_model.provider == Provider.SIMULATOR:
        pass  # the simulator can act as a router model in tests and demos
    return errors


def route_field_errors(
    *, routing_mode: str, workload_kind: str, route: Mapping[str, Any]
) -> dict[str, str]:
    """Errors for one route, given as a mapping of its fields."""
    errors: dict[str, str] = {}
    group: TargetGroup | None = route.get("target_group")
    instance: Instance | None = route.get("instance")
    if group is None and instance is None:
        errors["destination"] = "Pick a target group or an instance."
    elif group is not None and instance is not None:
        errors["destination"] = "Pick a target group or an instance, not both."
    elif group is not None and group.workload_kind != workload_kind:
        errors["destination"] = f"{group.name} serves {group.workload_kind}; this balancer serves {workload_kind}."
    elif instance is not None and instance.workload_kind != workload_kind:
        errors["destination"] = f"{instance.instance_id} is a {instance.workload_kind} instance; this balancer serves {workload_kind}."
    elif instance is not None and instance.provider == Provider.BUILTIN:
        errors["destination"] = f"{instance.instance_id} is a built-in router model and cannot answer prompts."
    if routing_mode == "intent_classifier" and not (route.get("intent") or "").strip():
        errors["intent"] = "Describe in one sentence which prompts belong on this route."
    examples = route.get("examples") or []
    if not isinstance(examples, list) or not all(isinstance(e, str) for e in examples):
        errors["examples"] = "Examples must be a list of prompts."
    elif len(examples) > 50:
        errors["examples"] = "At most 50 example prompts per route."
    return errors


def route_set_errors(routes: Iterable[Mapping[str, Any]]) -> list[str]:
    """Errors about the routes as a whole: count, names, exactly one default."""
    routes = list(routes)
    if not routes:
        return [NO_ROUTES]
    errors: list[str] = []
    names = [r.get("name") for r in routes]
    duplicates = sorted({n for n in names if n and names.count(n) > 1})
    if duplicates:
        errors.append(f"Route names must be unique: {', '.join(duplicates)}.")
    defaults = sum(1 for r in routes if r.get("is_default"))
    if defaults == 0:
        errors.append(NO_DEFAULT)
    elif defaults > 1:
        errors.append(MANY_DEFAULTS)
    elif any(r.get("is_default") and r.get("enabled") is False for r in routes):
        errors.append("The default route must be enabled.")
    return errors
