"""Builders for engine specs, fake clocks and routing state (no Django)."""

from __future__ import annotations

import itertools
import random

from gateway.engine.health import HealthTracker
from gateway.engine.planner import RoutingState
from gateway.engine.selection import LoadStats, SelectionState
from gateway.engine.types import BalancerSpec, GroupSpec, InstanceSpec, MemberSpec, RouteSpec

_pks = itertools.count(1)


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


def make_instance(
    instance_id: str | None = None,
    *,
    quality_tier: int = 3,
    input_price: float = 0.5,
    output_price: float = 1.5,
    enabled: bool = True,
) -> InstanceSpec:
    pk = next(_pks)
    instance_id = instance_id or f"inst_{pk}"
    return InstanceSpec(
        pk=pk,
        instance_id=instance_id,
        display_name=instance_id,
        provider="simulator",
        base_url="",
        model=f"model-{instance_id}",
        api_key="",
        workload_kind="chat",
        input_price_per_million=input_price,
        output_price_per_million=output_price,
        quality_tier=quality_tier,
        connect_timeout=5.0,
        first_byte_timeout=30.0,
        request_timeout=120.0,
        enabled=enabled,
    )


def make_member(
    instance: InstanceSpec, *, weight: int = 1, priority: int = 1, enabled: bool = True
) -> MemberSpec:
    return MemberSpec(instance=instance, weight=weight, priority=priority, enabled=enabled)


def make_group(
    *members: MemberSpec | InstanceSpec,
    policy: str = "weighted_round_robin",
    name: str | None = None,
    enabled: bool = True,
) -> GroupSpec:
    built = tuple(m if isinstance(m, MemberSpec) else make_member(m) for m in members)
    return GroupSpec(
        name=name or f"group_{next(_pks)}",
        selection_policy=policy,
        enabled=enabled,
        members=built,
    )


def make_route(
    name: str,
    group: GroupSpec | InstanceSpec,
    *,
    priority: int = 1,
    weight: int = 1,
    is_default: bool = False,
    enabled: bool = True,
) -> RouteSpec:
    if isinstance(group, InstanceSpec):
        group = make_group(group, name=f"instance:{group.instance_id}")
    return RouteSpec(
        name=name,
        intent=f"Requests about {name}.",
        examples=(),
        group=group,
        priority=priority,
        weight=weight,
        is_default=is_default,
        enabled=enabled,
    )


def make_balancer(
    *routes: RouteSpec,
    mode: str = "ordered",
    budget: int = 3,
    preference: str = "balanced",
    serving_name: str | None = None,
) -> BalancerSpec:
    ordered = tuple(sorted(routes, key=lambda r: (r.priority, r.name)))
    name = serving_name or f"balancer-{next(_pks)}"
    return BalancerSpec(
        pk=next(_pks),
        name=name,
        serving_name=name,
        workload_kind="chat",
        routing_mode=mode,
        auto_preference=preference,
        router_model=None,
        classifier_timeout=2.0,
        confidence_threshold=0.5,
        attempt_budget=budget,
        request_timeout=120.0,
        enabled=True,
        routes=ordered,
    )


def make_routing(clock: FakeClock | None = None, *, seed: int = 7) -> RoutingState:
    return RoutingState(
        health=HealthTracker(),
        selection=SelectionState(random.Random(seed)),
        load=LoadStats(),
        clock=clock or FakeClock(),
    )


def trip(health: HealthTracker, instance: InstanceSpec, now: float) -> None:
    """Fail an instance until its circuit opens."""
    for _ in range(health.policy.failure_threshold):
        health.record_failure(instance.pk, now)
