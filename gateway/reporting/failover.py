"""Failover cost impact: what traffic cost extra while a balancer's primary was away, per incident.

Every usage event records the route the routing decision named (`decided_route`, before any
failover) beside the route that answered (`route`). A request answered (status below 400) by
another route than the one it was meant for has **failed over**, whether its first attempt on
the primary failed or the primary was skipped because it was cooling down or unavailable.

An **incident** of a balancer's route R starts with the first request meant for R that failed
over (the moment traffic saw R go) and ends with the first request after it that R answered
again (R came back); while no such request exists the incident is ongoing. The failed-over
requests in between belong to it, and so does their extra spend:

    extra = what they cost (their recorded cost_usd)
          - what the same prompt and completion tokens cost on R

R's price is its most expensive enabled member's (its one instance for a single-instance route),
at the instances' current prices, as the savings figures do (gateway.reporting.savings); a member
priced as reserved capacity costs nothing more per token (its hour is paid anyway), so traffic
that failed over from paid capacity counts its whole cost as extra. A fallback cheaper than R
gives a negative extra, shown as such. A failed-over request served by reserved capacity carries
its share of the hour once that hour has been spread (gateway.reporting.capacity).

Read from the raw usage events (kept GATEWAY_USAGE_RETENTION_DAYS): one query for the failed-over
requests of the range, one per incident for its end.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from django.db.models import F, Q

from balancers.models import Balancer, Route
from gateway.models import UsageEvent
from targetgroups.models import Instance

MILLION = Decimal(1_000_000)
MAX_INCIDENTS = 50  # the newest, per read: a page shows these, never an unbounded list


def token_price(instance: Instance, prompt_tokens: int, completion_tokens: int) -> Decimal:
    """The tokens' marginal cost on an instance: 0 on reserved capacity (paid by the hour)."""
    if instance.capacity_priced:
        return Decimal(0)
    return (
        prompt_tokens * instance.input_price_per_million
        + completion_tokens * instance.output_price_per_million
    ) / MILLION


def route_price(route: Route, prompt_tokens: int, completion_tokens: int) -> Decimal:
    """The tokens' cost on the route's most expensive enabled member (any member if none is)."""
    if route.instance is not None:
        return token_price(route.instance, prompt_tokens, completion_tokens)
    if route.target_group is None:
        return Decimal(0)
    members = list(route.target_group.members.all())
    enabled = [m for m in members if m.enabled and m.instance.enabled] or members
    return max(
        (token_price(m.instance, prompt_tokens, completion_tokens) for m in enabled),
        default=Decimal(0),
    )


@dataclass
class Incident:
    balancer: str
    serving_name: str
    primary: str  # the route that went away
    started_at: datetime
    ended_at: datetime | None = None  # None: still failing over
    fallbacks: list[str] = field(default_factory=list)  # the routes that answered instead
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: Decimal = Decimal(0)
    primary_cost: Decimal = Decimal(0)

    @property
    def extra(self) -> Decimal:
        return self.cost - self.primary_cost

    @property
    def ongoing(self) -> bool:
        return self.ended_at is None

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass
class FailoverReport:
    incidents: list[Incident] = field(default_factory=list)  # newest first, at most the limit
    count: int = 0  # every incident of the range
    extra: Decimal = Decimal(0)  # every incident's extra spend
    requests: int = 0  # every failed-over request


def failover_incidents(
    *, start: datetime, end: datetime, condition: Q | None = None, limit: int = MAX_INCIDENTS
) -> FailoverReport:
    """The incidents whose failed-over requests fall in [start, end), newest first.

    `condition` narrows the requests counted (the usage page's balancer and key filters);
    an incident's end is read from every request meant for its route.
    """
    failed_over = (
        UsageEvent.objects.filter(
            condition or Q(),
            created_at__gte=start,
            created_at__lt=end,
            balancer_id__isnull=False,
            status_code__lt=400,
        )
        .exclude(decided_route="")
        .exclude(route="")
        .exclude(route=F("decided_route"))
        .order_by("balancer_id", "decided_route", "created_at", "pk")
        .values_list(
            "balancer_id",
            "decided_route",
            "route",
            "created_at",
            "prompt_tokens",
            "completion_tokens",
            "cost_usd",
        )
    )
    balancers: dict[int, Balancer] = {}
    incidents: list[Incident] = []
    current: Incident | None = None
    current_key: tuple[int, str] | None = None
    for balancer_id, primary, served, at, prompt, completion, cost in failed_over.iterator():
        key = (balancer_id, primary)
        if current is not None and key == current_key:
            if current.ended_at is None or at < current.ended_at:
                _add(current, served, prompt, completion, cost)
                continue
        balancer = balancers.get(balancer_id)
        if balancer is None:
            balancer = (
                Balancer.objects.filter(pk=balancer_id)
                .prefetch_related("routes__instance", "routes__target_group__members__instance")
                .first()
            )
            if balancer is None:
                continue  # deleted since: no route left to price
            balancers[balancer_id] = balancer
        current, current_key = Incident(balancer.name, balancer.serving_name, primary, at), key
        current.ended_at = (
            UsageEvent.objects.filter(
                balancer_id=balancer_id,
                decided_route=primary,
                route=primary,
                status_code__lt=400,
                created_at__gt=at,
            )
            .order_by("created_at")
            .values_list("created_at", flat=True)
            .first()
        )
        incidents.append(current)
        _add(current, served, prompt, completion, cost)
    routes = {
        (b.pk, r.name): r for b in balancers.values() for r in b.routes.all()
    }  # priced once per incident, from its token sums
    by_name = {b.name: b.pk for b in balancers.values()}
    for incident in incidents:
        route = routes.get((by_name[incident.balancer], incident.primary))
        if route is not None:
            incident.primary_cost = route_price(
                route, incident.prompt_tokens, incident.completion_tokens
            )
    incidents.sort(key=lambda i: i.started_at, reverse=True)
    return FailoverReport(
        incidents=incidents[:limit],
        count=len(incidents),
        extra=sum((i.extra for i in incidents), Decimal(0)),
        requests=sum(i.requests for i in incidents),
    )


def _add(incident: Incident, served: str, prompt: int, completion: int, cost: Decimal) -> None:
    incident.requests += 1
    incident.prompt_tokens += prompt
    incident.completion_tokens += completion
    incident.cost += cost
    if served not in incident.fallbacks:
        incident.fallbacks.append(served)


EXPORT_COLUMNS = [
    "balancer",
    "serving_name",
    "primary_route",
    "fallback_routes",
    "started_at",
    "ended_at",
    "requests",
    "prompt_tokens",
    "completion_tokens",
    "cost_usd",
    "primary_cost_usd",
    "extra_cost_usd",
]


def incident_csv_row(incident: Incident) -> list[object]:
    """A row under EXPORT_COLUMNS (the usage CSV's `table=failover`)."""
    return [
        incident.balancer,
        incident.serving_name,
        incident.primary,
        " ".join(incident.fallbacks),
        incident.started_at.isoformat(),
        incident.ended_at.isoformat() if incident.ended_at else "",
        incident.requests,
        incident.prompt_tokens,
        incident.completion_tokens,
        f"{incident.cost:.10f}",
        f"{incident.primary_cost:.10f}",
        f"{incident.extra:.10f}",
    ]
