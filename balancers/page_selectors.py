"""Reads for the operator pages: traffic series, sparklines, live route health.

(balancers.selectors holds the API's reads; these are shaped for templates.)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.db.models import Count, Q
from django.db.models.functions import TruncHour
from django.utils import timezone

from balancers.models import Balancer, Route
from gateway.hotpath.runtime import health_snapshot
from gateway.models import UsageEvent
from gateway.reporting.selectors import ProbeSummary, probe_summaries
from targetgroups.models import Instance

SPARK_HOURS = 24


@dataclass
class Sparkline:
    values: list[int]
    width: int = 120
    height: int = 30

    @property
    def total(self) -> int:
        return sum(self.values)

    @property
    def points(self) -> str:
        if not self.values:
            return ""
        peak = max(self.values) or 1
        step = self.width / max(len(self.values) - 1, 1)
        pad = 2
        usable = self.height - pad * 2
        return " ".join(
            f"{i * step:.1f},{pad + usable - (v / peak) * usable:.1f}" for i, v in enumerate(self.values)
        )

    @property
    def area(self) -> str:
        if not self.values:
            return ""
        return f"M0,{self.height} L{self.points.replace(' ', ' L')} L{self.width},{self.height} Z"

    @property
    def label(self) -> str:
        return f"{self.total} requests in the last {len(self.values)} hours"


def traffic_by_hour(balancer_ids: Iterable[int], *, hours: int = SPARK_HOURS) -> dict[int, Sparkline]:
    """Requests per hour for each balancer over the last `hours` hours, oldest first."""
    ids = list(balancer_ids)
    now = timezone.now().replace(minute=0, second=0, microsecond=0)
    since = now - timedelta(hours=hours - 1)
    series = {pk: [0] * hours for pk in ids}
    rows = (
        UsageEvent.objects.filter(balancer_id__in=ids, created_at__gte=since)
        .annotate(hour=TruncHour("created_at"))
        .values("balancer_id", "hour")
        .annotate(n=Count("id"))
    )
    for row in rows:
        index = int((row["hour"] - since).total_seconds() // 3600)
        if 0 <= index < hours:
            series[row["balancer_id"]][index] += row["n"]
    return {pk: Sparkline(values) for pk, values in series.items()}


@dataclass
class MemberState:
    instance: Instance
    weight: int
    priority: int
    enabled: bool
    health: str  # healthy | cooling | half_open
    probe: ProbeSummary | None = None  # active health (probes), beside the passive circuit above

    @property
    def simulated_down(self) -> bool:
        return bool((self.instance.options or {}).get("down"))

    @property
    def eligible(self) -> bool:
        return self.enabled and self.instance.enabled and self.weight > 0 and self.health != "cooling"

    @property
    def css(self) -> str:
        if not (self.enabled and self.instance.enabled) or self.weight == 0:
            return "off"
        if self.simulated_down:
            return "down"
        return self.health

    @property
    def note(self) -> str:
        if not self.instance.enabled:
            return "instance disabled"
        if not self.enabled:
            return "member disabled"
        if self.weight == 0:
            return "drained"
        if self.health == "cooling":
            return "cooling down"
        if self.health == "half_open":
            return "trial"
        if self.simulated_down:
            return "simulated outage"
        return "healthy"


@dataclass
class RouteState:
    route: Route
    order: int
    members: list[MemberState]
    requests: int = 0
    errors: int = 0

    @property
    def available(self) -> bool:
        return self.route.enabled and any(m.eligible for m in self.members)

    @property
    def degraded(self) -> bool:
        return any(not m.eligible or m.simulated_down for m in self.members)


@dataclass
class BalancerState:
    balancer: Balancer
    routes: list[RouteState] = field(default_factory=list)

    @property
    def status(self) -> tuple[str, str]:
        """(label, pill class) for the balancer as a whole."""
        if not self.balancer.enabled:
            return "Disabled", ""
        enabled = [r for r in self.routes if r.route.enabled]
        if not enabled:
            return "No routes", "bad"
        if not any(r.available for r in enabled):
            return "Unavailable", "bad"
        if any(not r.available or r.degraded for r in enabled):
            return "Degraded", "warn"
        return "Serving", "ok"


def _route_members(route: Route) -> list[tuple[Instance, int, int, bool]]:
    group = route.target_group
    if group is not None:
        return [(m.instance, m.weight, m.priority, m.enabled and group.enabled) for m in group.members.all()]
    if route.instance is not None:
        return [(route.instance, 100, 1, True)]
    return []


def balancer_states(balancers: Iterable[Balancer]) -> list[BalancerState]:
    """Each balancer with its routes in attempt order and the live health of their members.

    Expects routes prefetched with target_group__members__instance and instance.
    """
    balancers = list(balancers)
    pairs = {b.pk: [(r, _route_members(r)) for r in b.routes.all()] for b in balancers}
    pks = sorted({inst.pk for routes in pairs.values() for _, members in routes for inst, *_ in members})
    health = health_snapshot(pks)
    probes = probe_summaries(pks, history=0)
    states = []
    for balancer in balancers:
        state = BalancerState(balancer)
        routes = sorted(pairs[balancer.pk], key=lambda pair: (pair[0].priority, pair[0].name))
        for order, (route, members) in enumerate(routes, start=1):
            state.routes.append(RouteState(route=route, order=order, members=[
                MemberState(instance=inst, weight=weight, priority=priority, enabled=enabled,
                            health=health[inst.pk].status, probe=probes[inst.pk])
                for inst, weight, priority, enabled in sorted(members, key=lambda m: (m[2], m[0].instance_id))
            ]))
        states.append(state)
    return states


def member_probes(state: BalancerState, *, history: int = 10) -> list[tuple[Instance, ProbeSummary]]:
    """The balancer's member instances, each once in attempt order, with their latest probes."""
    instances = list({m.instance.pk: m.instance for r in state.routes for m in r.members}.values())
    probes = probe_summaries([i.pk for i in instances], history=history)
    return [(i, probes[i.pk]) for i in instances]


def balancers_for_pages(**filters: Any) -> Any:
    return (
        Balancer.objects.filter(**filters)
        .select_related("router_model")
        .prefetch_related("routes__target_group__members__instance", "routes__instance")
        .order_by("name")
    )


def route_traffic(state: BalancerState, *, minutes: int = 60) -> None:
    """Fill each route's request and error counts over the last `minutes` minutes."""
    since = timezone.now() - timedelta(minutes=minutes)
    rows = (
        UsageEvent.objects.filter(balancer=state.balancer, created_at__gte=since)
        .values("route")
        .annotate(n=Count("id"), errors=Count("id", filter=Q(status_code__gte=400)))
    )
    counts = {row["route"]: row for row in rows}
    for route_state in state.routes:
        row = counts.get(route_state.route.name)
        if row:
            route_state.requests, route_state.errors = row["n"], row["errors"]


def recent_events(balancer: Balancer, *, limit: int = 15) -> list[UsageEvent]:
    return list(UsageEvent.objects.filter(balancer=balancer).order_by("-created_at")[:limit])


def recent_traffic_totals(balancer: Balancer, *, hours: int = 24) -> dict[str, Any]:
    """Live figures from the raw usage events of the last `hours` (the board, the detail page).

    The usage page's `gateway.reporting.selectors.usage_totals` sums hourly rollups over a range instead.
    """
    since = timezone.now() - timedelta(hours=hours)
    from django.db.models import Avg, Sum

    totals = UsageEvent.objects.filter(balancer=balancer, created_at__gte=since).aggregate(
        requests=Count("id"), errors=Count("id", filter=Q(status_code__gte=400)),
        cost=Sum("cost_usd"), latency=Avg("latency_ms"),
    )
    return totals
