"""Test data builders, in one place."""

from __future__ import annotations

import itertools
from typing import Any

from balancers.models import Balancer
from balancers.services import balancer_save
from gateway.models import ApiKey
from gateway.services import api_key_create
from targetgroups.models import Instance, TargetGroup, TargetGroupMember

_seq = itertools.count(1)


def make_instance(**fields: Any) -> Instance:
    n = next(_seq)
    values: dict[str, Any] = {
        "instance_id": f"inst_{n}",
        "display_name": f"Instance {n}",
        "provider": "simulator",
        "model": f"sim-model-{n}",
        "workload_kind": "chat",
        "input_price_per_million": "0.50",
        "output_price_per_million": "1.50",
    }
    values.update(fields)
    instance = Instance(**values)
    instance.full_clean()
    instance.save()
    return instance


def make_router_model(**fields: Any) -> Instance:
    return make_instance(**{"provider": "builtin", "model": "intent-classifier", **fields})


def make_group(*, instances: list[Instance] | None = None, **fields: Any) -> TargetGroup:
    n = next(_seq)
    group = TargetGroup.objects.create(
        **{"name": f"group-{n}", "display_name": f"Group {n}", "workload_kind": "chat", **fields}
    )
    for index, instance in enumerate(instances or []):
        TargetGroupMember.objects.create(group=group, instance=instance, priority=index + 1)
    return group


def make_balancer(
    *,
    routes: list[dict[str, Any]] | None = None,
    rules: list[dict[str, Any]] | None = None,
    **fields: Any,
) -> Balancer:
    n = next(_seq)
    values: dict[str, Any] = {
        "name": f"balancer-{n}",
        "serving_name": f"balancer-{n}",
        "workload_kind": "chat",
        "routing_mode": "ordered",
    }
    values.update(fields)
    if routes is None:
        routes = [
            {
                "name": "main",
                "intent": "Everything.",
                "instance": make_instance(),
                "priority": 1,
                "is_default": True,
            }
        ]
    return balancer_save(fields=values, routes=routes, rules=rules)


def make_api_key(**fields: Any) -> tuple[ApiKey, str]:
    return api_key_create(**{"name": f"key-{next(_seq)}", **fields})
