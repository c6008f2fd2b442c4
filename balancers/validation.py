"""The rules a balancer and its routes must satisfy, in one place.

The wizard, the admin, the API and the importer all call these functions, so a
balancer without exactly one default route is refused everywhere in the same words.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from django.db import models

from targetgroups.models import Instance, Provider, TargetGroup, WorkloadKind

NO_DEFAULT = "Mark one route as the default: it answers prompts that match no other route."
MANY_DEFAULTS = "Only one route can be the default."
NO_ROUTES = "Add at least one route."


def balancer_field_errors(
    *, routing_mode: str, workload_kind: str, router_model: Instance | None
) -> dict[str, str]:
    errors: dict[str, str] = {}
    if routing_mode == "intent_classifier":
        if router_model is None:
            errors["router_model"] = "A router model is required for the intent_classifier mode."
        elif workload_kind != WorkloadKind.CHAT:
            errors["routing_mode"] = (
                "The intent_classifier mode routes chat prompts; use ordered or weighted for "
                "embeddings."
            )
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
        errors["destination"] = (
            f"{group.name} serves {group.workload_kind}; this balancer serves {workload_kind}."
        )
    elif instance is not None and instance.workload_kind != workload_kind:
        errors["destination"] = (
            f"{instance.instance_id} is a {instance.workload_kind} instance; this balancer serves "
            f"{workload_kind}."
        )
    elif instance is not None and instance.provider == Provider.BUILTIN:
        errors["destination"] = (
            f"{instance.instance_id} is a built-in router model and cannot answer prompts."
        )
    if routing_mode == "intent_classifier" and not (route.get("intent") or "").strip():
        errors["intent"] = "Describe in one sentence which prompts belong on this route."
    examples = route.get("examples") or []
    if not isinstance(examples, list) or not all(isinstance(e, str) for e in examples):
        errors["examples"] = "Examples must be a list of prompts."
    elif len(examples) > 50:
        errors["examples"] = "At most 50 example prompts per route."
    if route.get("hedge") and not route.get("latency_threshold_ms"):
        errors["hedge"] = "Hedging starts at the latency threshold: set one, or turn hedging off."
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


# -- content rules ------------------------------------------------------------------------

RULE_KINDS_FOR_CHAT_ONLY = ("tools", "images", "response_format", "metadata")


def rule_field_errors(
    *, rule: Mapping[str, Any], routes: Mapping[str, bool], workload_kind: str
) -> dict[str, str]:
    """Errors for one content rule, given as a mapping of its fields; `routes` maps the balancer's
    route names (as they will be saved) to whether each is enabled."""
    from balancers.models import RULE_NAME_MAX, RuleKind
    from balancers.rule_syntax import (
        RuleSyntaxError,
        check_token_range,
        compile_keywords,
        compile_pattern,
        parse_keywords,
    )

    errors: dict[str, str] = {}
    name = rule.get("name") or ""
    if not name:
        errors["name"] = "Name the rule: decisions it makes are recorded as rule:<name>."
    elif len(name) > RULE_NAME_MAX:
        errors["name"] = f"A rule name is at most {RULE_NAME_MAX} characters."
    kind = rule.get("kind") or ""
    value = (rule.get("value") or "").strip()
    if kind not in RuleKind.values:
        errors["kind"] = f"Pick what the rule looks at: {', '.join(RuleKind.values)}."
    elif workload_kind != "chat" and kind in RULE_KINDS_FOR_CHAT_ONLY:
        errors["kind"] = f"{workload_kind} requests carry no {kind}: this rule could never match."
    try:
        if kind == RuleKind.REGEX:
            compile_pattern(rule.get("value") or "")
        elif kind == RuleKind.KEYWORDS:
            compile_keywords(parse_keywords(value))
        elif kind == RuleKind.PROMPT_TOKENS:
            check_token_range(rule.get("min_tokens"), rule.get("max_tokens"))
        elif kind == RuleKind.METADATA and not (rule.get("metadata_key") or "").strip():
            errors["metadata_key"] = "Give the metadata key to look at."
        elif (
            kind in (RuleKind.METADATA, RuleKind.USER, RuleKind.TAG, RuleKind.API_KEY) and not value
        ):
            errors["value"] = {
                "metadata": "Give the value the metadata key must have.",
                "user": "Give the user value to match.",
                "tag": "Give the tag to look for.",
                "api_key": "Give the name of the API key.",
            }[kind]
        elif kind == RuleKind.TAG and "," in value:
            errors["value"] = "One tag per rule (the header separates tags with commas)."
    except RuleSyntaxError as exc:
        field = "min_tokens" if kind == RuleKind.PROMPT_TOKENS else "value"
        errors[field] = str(exc)
    route = rule.get("route") or ""
    if not route:
        errors["route"] = "Pick the route matching requests go to."
    elif route not in routes:
        errors["route"] = f"{route} is not a route of this balancer."
    elif rule.get("enabled", True) and not routes[route]:
        errors["route"] = (
            f"Route {route} is disabled: enable it, pick another route or disable the rule."
        )
    return errors


def rule_set_errors(rules: Iterable[Mapping[str, Any]]) -> list[str]:
    names = [r.get("name") for r in rules]
    duplicates = sorted({n for n in names if n and names.count(n) > 1})
    return [f"Rule names must be unique: {', '.join(duplicates)}."] if duplicates else []


MAX_EXCLUSIONS = 50


def exclusion_errors(value: object) -> str | None:
    """Why an auto balancer's exclusions are wrong: a list of at most MAX_EXCLUSIONS names, each
    the model name or instance id of an existing instance (a typo would exclude nothing)."""
    if not isinstance(value, list) or len(value) > MAX_EXCLUSIONS:
        return f"A list of at most {MAX_EXCLUSIONS} model names or instance ids."
    unknown: list[str] = []
    for name in value:
        if not isinstance(name, str) or not name or len(name) > 128:
            return "Each exclusion is a model name or instance id (1 to 128 characters)."
        if not Instance.objects.filter(models.Q(model=name) | models.Q(instance_id=name)).exists():
            unknown.append(name)
    if unknown:
        return (
            f"No instance has the model name or instance id {', '.join(unknown[:5])}: "
            "an exclusion names a model auto could otherwise choose."
        )
    return None
