"""Reads for the operator pages: traffic series, sparklines, live route health.

(balancers.selectors holds the API's reads; these are shaped for templates. They read the
balancers, the gateway's health and usage events together, so they sit above both: pages/.)
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.db import connection
from django.db.models import Aggregate, Count, FloatField, Q, Sum
from django.db.models.functions import TruncHour, TruncMinute
from django.utils import timezone

from balancers.models import Balancer, Route
from gateway.board_feed import decision_words, prompt_start
from gateway.engine.auto import FREE_GOAL, GOALS
from gateway.hotpath.runtime import health_snapshot
from gateway.models import UsageEvent
from gateway.reporting.failover import FailoverReport, failover_incidents
from gateway.reporting.selectors import LIVE_MINUTES, ProbeSummary, probe_summaries
from targetgroups.models import Instance

SPARK_HOURS = 24


@dataclass
class Sparkline:
    values: list[int]
    width: int = 120
    height: int = 30
    unit: str = "hours"

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
            f"{i * step:.1f},{pad + usable - (v / peak) * usable:.1f}"
            for i, v in enumerate(self.values)
        )

    @property
    def area(self) -> str:
        if not self.values:
            return ""
        return f"M0,{self.height} L{self.points.replace(' ', ' L')} L{self.width},{self.height} Z"

    @property
    def label(self) -> str:
        return f"{self.total} requests in the last {len(self.values)} {self.unit}"


def traffic_by_hour(
    balancer_ids: Iterable[int], *, hours: int = SPARK_HOURS
) -> dict[int, Sparkline]:
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
    cooldown_until: float | None = None

    @property
    def simulated_down(self) -> bool:
        return bool((self.instance.options or {}).get("down"))

    @property
    def eligible(self) -> bool:
        return (
            self.enabled and self.instance.enabled and self.weight > 0 and self.health != "cooling"
        )

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

    @property
    def drained(self) -> bool:
        return self.enabled and self.instance.enabled and self.weight == 0

    def cooldown_left(self, now: float) -> int | None:
        if self.health != "cooling" or self.cooldown_until is None:
            return None
        return max(0, math.ceil(self.cooldown_until - now))


@dataclass
class RouteState:
    route: Route
    order: int
    members: list[MemberState]
    requests: int = 0
    errors: int = 0
    figures: LaneFigures | None = None

    @property
    def available(self) -> bool:
        return self.route.enabled and any(m.eligible for m in self.members)

    @property
    def degraded(self) -> bool:
        return any(not m.eligible or m.simulated_down for m in self.members)

    @property
    def role(self) -> str:
        """primary (tried first) or fallback (behind it); `route.is_default` marks the default
        besides."""
        return "primary" if self.order == 1 else "fallback"

    def lane_state(self, now: float | None = None) -> tuple[str, str]:
        """(state, words): active, degraded, cooling (with seconds left), unavailable, drained,
        disabled."""
        now = time.time() if now is None else now
        if not self.route.enabled:
            return "disabled", "disabled"
        serving = [m for m in self.members if m.enabled and m.instance.enabled]
        if serving and all(m.weight == 0 for m in serving):
            return "drained", "drained"
        if not self.available:
            lefts = [left for m in self.members if (left := m.cooldown_left(now)) is not None]
            if lefts:
                return "cooling", f"cooling down, {min(lefts)} s left"
            return "unavailable", "unavailable"
        if self.degraded:
            return "degraded", "degraded"
        return "active", "active"


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
        return [
            (m.instance, m.weight, m.priority, m.enabled and group.enabled)
            for m in group.members.all()
        ]
    if route.instance is not None:
        return [(route.instance, 100, 1, True)]
    return []


def balancer_states(balancers: Iterable[Balancer]) -> list[BalancerState]:
    """Each balancer with its routes in attempt order and the live health of their members.

    Expects routes prefetched with target_group__members__instance and instance.
    """
    balancers = list(balancers)
    pairs = {b.pk: [(r, _route_members(r)) for r in b.routes.all()] for b in balancers}
    pks = sorted(
        {inst.pk for routes in pairs.values() for _, members in routes for inst, *_ in members}
    )
    health = health_snapshot(pks)
    probes = probe_summaries(pks, history=0)
    states = []
    for balancer in balancers:
        state = BalancerState(balancer)
        routes = sorted(pairs[balancer.pk], key=lambda pair: (pair[0].priority, pair[0].name))
        for order, (route, members) in enumerate(routes, start=1):
            state.routes.append(
                RouteState(
                    route=route,
                    order=order,
                    members=[
                        MemberState(
                            instance=inst,
                            weight=weight,
                            priority=priority,
                            enabled=enabled,
                            health=health[inst.pk].status,
                            probe=probes[inst.pk],
                            cooldown_until=health[inst.pk].cooldown_until,
                        )
                        for inst, weight, priority, enabled in sorted(
                            members, key=lambda m: (m[2], m[0].instance_id)
                        )
                    ],
                )
            )
        states.append(state)
    return states


def member_probes(
    state: BalancerState, *, history: int = 10
) -> list[tuple[Instance, ProbeSummary]]:
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


def route_traffic(state: BalancerState, *, minutes: int = LIVE_MINUTES) -> None:
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


@dataclass
class GoalChoices:
    """One auto serving name and the models it chose over a window, most chosen first."""

    name: str
    preference: str
    requests: int
    models: list[tuple[str, int]]  # (model that served, requests)
    balancer: str = ""  # a published auto balancer's name (its board); "" for a goal name


def auto_choices(*, hours: int = 24) -> list[GoalChoices]:
    """The auto serving names that served in the last `hours`: the goal names (auto, auto-cheap...,
    no balancer) and the balancers in auto mode, each with the models it chose and how often."""
    since = timezone.now() - timedelta(hours=hours)
    auto_balancers = {
        b.serving_name: b
        for b in Balancer.objects.filter(routing_mode="auto").only(
            "name", "serving_name", "auto_preference"
        )
    }
    rows = (
        UsageEvent.objects.filter(created_at__gte=since, status_code=200)
        .filter(
            Q(balancer__isnull=True, serving_name__in=list(GOALS))
            | Q(balancer__routing_mode="auto")
        )
        .exclude(model="")
        .values("serving_name", "model")
        .annotate(n=Count("id"))
    )
    found: dict[str, GoalChoices] = {}
    for row in rows:
        name = row["serving_name"]
        choice = found.get(name)
        if choice is None:
            published = auto_balancers.get(name)
            choice = found[name] = GoalChoices(
                name=name,
                preference=published.auto_preference if published else GOALS.get(name, ""),
                requests=0,
                models=[],
                balancer=published.name if published else "",
            )
        choice.requests += row["n"]
        choice.models.append((row["model"], row["n"]))
    for choice in found.values():
        choice.models.sort(key=lambda m: (-m[1], m[0]))
    order = {goal: index for index, goal in enumerate(GOALS)}
    return sorted(found.values(), key=lambda c: (order.get(c.name, len(order)), c.name))


def recent_events(balancer: Balancer, *, limit: int = 15) -> list[UsageEvent]:
    """The latest usage events, each with `decision_words`: why it went where it did, in an
    operator's words."""
    events = list(
        UsageEvent.objects.filter(balancer=balancer)
        .defer("prompt_text")
        .order_by("-created_at")[:limit]
    )
    for event in events:
        words = decision_words(
            event.decision_reason, event.confidence, event.attempt_log or [], event.route
        )
        setattr(event, "decision_words", words)  # noqa: B010  (display only, not a model field: mypy knows no such attribute)
    return events


def latest_prompt_start(balancer: Balancer) -> str:
    """The start of the latest request's prompt for the board's request node; "" when the balancer
    keeps no prompts (or its latest request came before it did)."""
    if not balancer.log_prompts:
        return ""
    text = (
        UsageEvent.objects.filter(balancer=balancer)
        .order_by("-created_at")
        .values_list("prompt_text", flat=True)
        .first()
    )
    return prompt_start(text or "")


def recent_traffic_totals(
    balancer: Balancer, *, hours: int = 24, minutes: int | None = None
) -> dict[str, Any]:
    """Live figures from the raw usage events of the last `hours` (or `minutes`) (the board, the
    detail page).

    The usage page's `gateway.reporting.selectors.usage_totals` sums hourly rollups over a range
    instead.
    """
    since = timezone.now() - (
        timedelta(minutes=minutes) if minutes is not None else timedelta(hours=hours)
    )
    from django.db.models import Avg, Sum

    totals = UsageEvent.objects.filter(balancer=balancer, created_at__gte=since).aggregate(
        requests=Count("id"),
        errors=Count("id", filter=Q(status_code__gte=400)),
        cost=Sum("cost_usd"),
        latency=Avg("latency_ms"),
    )
    return totals


class _Median(Aggregate):
    """PostgreSQL's exact median; other databases get it computed in Python (`_medians`)."""

    function = "percentile_cont"
    template = "%(function)s(0.5) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = FloatField()


@dataclass
class LaneFigures:
    requests: int = 0
    errors: int = 0
    p50_ms: float | None = None
    p50_ttfb_ms: float | None = None
    tokens: int = 0
    cost: Decimal = Decimal(0)
    spilled: int = (
        0  # capacity_first: answered by a token-billed member, reserved capacity saturated
    )
    failed_over: int = 0  # answered here after an earlier attempt failed elsewhere
    # Requests that failed here and went on to another lane (or failed on every lane): a failover
    # is answered elsewhere, and without these a primary that is down showed 0% errors.
    left_after_failure: int = 0
    per_minute: list[int] = field(default_factory=lambda: [0] * LIVE_MINUTES)

    @property
    def per_minute_rate(self) -> float:
        return self.requests / LIVE_MINUTES

    @property
    def reached(self) -> int:
        """Requests that reached this lane: ended here (answered or failed), or failed here and
        left."""
        return self.requests + self.left_after_failure

    @property
    def failed(self) -> int:
        """Of those, the ones this lane did not answer."""
        return self.errors + self.left_after_failure

    @property
    def error_rate(self) -> float:
        return self.failed / self.reached if self.reached else 0.0

    @property
    def spark(self) -> Sparkline:
        return Sparkline(self.per_minute, width=96, height=24, unit="minutes")


def _medians(events: Any, by: str = "route") -> dict[str, tuple[float | None, float | None]]:
    if connection.vendor == "postgresql":
        rows = events.values(by).annotate(p50=_Median("latency_ms"), ttfb=_Median("ttfb_ms"))
        return {row[by]: (row["p50"], row["ttfb"]) for row in rows}
    values: dict[str, tuple[list[float], list[float]]] = {}
    for route, latency, ttfb in events.values_list(by, "latency_ms", "ttfb_ms"):
        lat, first = values.setdefault(route, ([], []))
        lat.append(latency)
        if ttfb is not None:
            first.append(ttfb)
    return {
        route: (
            statistics.median(lat) if lat else None,
            statistics.median(first) if first else None,
        )
        for route, (lat, first) in values.items()
    }


# Attempt outcomes that are no failure of the lane tried: the answer, a target left out before any
# try (a capability), a hedged race lost to a faster attempt, the caller hanging up.
NOT_FAILED = ("ok", "skipped", "hedge_lost", "cancelled")


def _left_after_failure(events: Any) -> dict[str, int]:
    """Per route: the requests among `events` that failed on it and did not end there (they went
    on to another lane, or failed on every lane and ended on none), each counted once per route.

    Only requests with more than one attempt, or that ended on no route, can have left a lane: the
    rest are not read. PostgreSQL counts them over the attempt logs (jsonb) in one query; SQLite
    (make run) in Python.
    """
    candidates = events.filter(Q(attempts__gt=1) | Q(route=""), attempts__gt=0)
    if connection.vendor == "postgresql":
        sql, params = candidates.values("id", "route", "attempt_log").query.sql_with_params()
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT a->>'route', count(DISTINCT e.id)"
                f" FROM ({sql}) e CROSS JOIN LATERAL jsonb_array_elements("
                "CASE jsonb_typeof(e.attempt_log) WHEN 'array' THEN e.attempt_log ELSE '[]' END) a"
                " WHERE NOT (a->>'outcome' = ANY(%s)) AND a->>'route' <> e.route"
                " GROUP BY 1",
                [*params, list(NOT_FAILED)],
            )
            return {route: n for route, n in cursor.fetchall() if route is not None}
    found: dict[str, int] = {}
    for ended_on, log in candidates.values_list("route", "attempt_log"):
        left = {
            a.get("route")
            for a in log or []
            if a.get("outcome") not in NOT_FAILED and a.get("route") != ended_on
        }
        for route in left:
            if route is not None:
                found[route] = found.get(route, 0) + 1
    return found


def _figures_by(
    events: Any,
    by: str,
    names: Iterable[str],
    minutes: int,
    left: dict[str, int] | None = None,
) -> dict[str, LaneFigures]:
    """Live figures of `events` for each of `names`, grouped by the field `by` (route or model);
    `left`: per name, the requests that failed there and went on (`_left_after_failure`)."""
    now = timezone.now()
    totals = {
        row[by]: row
        for row in events.values(by).annotate(
            n=Count("id"),
            errors=Count("id", filter=Q(status_code__gte=400)),
            tokens=Sum("prompt_tokens") + Sum("completion_tokens"),
            cost=Sum("cost_usd"),
            spilled=Count("id", filter=Q(spilled=True)),
            failed_over=Count("id", filter=Q(attempts__gt=1, status_code__lt=400)),
        )
    }
    medians = _medians(events, by)
    series: dict[str, list[int]] = {}
    for per_minute in (
        events.annotate(minute=TruncMinute("created_at"))
        .values(by, "minute")
        .annotate(n=Count("id"))
    ):
        index = minutes - 1 - int((now - per_minute["minute"]).total_seconds() // 60)
        if 0 <= index < minutes:
            series.setdefault(per_minute[by], [0] * minutes)[index] += per_minute["n"]
    found = {}
    for name in names:
        row = totals.get(name)
        figures = LaneFigures(
            per_minute=series.get(name, [0] * minutes), left_after_failure=(left or {}).get(name, 0)
        )
        if row:
            figures.requests, figures.errors = row["n"], row["errors"]
            figures.tokens, figures.cost = row["tokens"] or 0, row["cost"] or Decimal(0)
            figures.spilled, figures.failed_over = row["spilled"], row["failed_over"]
            figures.p50_ms, figures.p50_ttfb_ms = medians.get(name, (None, None))
        found[name] = figures
    return found


def lane_figures(state: BalancerState, *, minutes: int = LIVE_MINUTES) -> None:
    """Each lane's live figures over the last `minutes`: requests, errors, medians, tokens, cost,
    per minute.

    A request counts (req/min, latency, tokens, cost) in the lane it ended on, the one that
    answered it. Its error rate counts every request that reached the lane: those that ended there,
    and those that failed there and went on to the next lane (or failed on every lane) — so a
    primary that is down shows its failures while the fallback answers.
    """
    since = timezone.now() - timedelta(minutes=minutes)
    events = UsageEvent.objects.filter(balancer=state.balancer, created_at__gte=since)
    figures = _figures_by(
        events,
        "route",
        [lane.route.name for lane in state.routes],
        minutes,
        left=_left_after_failure(events),
    )
    for lane in state.routes:
        lane.figures = figures[lane.route.name]
        lane.requests, lane.errors = lane.figures.requests, lane.figures.errors


@dataclass
class Savings:
    """Spend so far today and this month (UTC), and this month's saving against sending every
    request to the balancer's most expensive route, priced from the recorded tokens."""

    today: Decimal = Decimal(0)
    month: Decimal = Decimal(0)
    all_on_priciest: Decimal = Decimal(0)
    priciest_route: str = ""

    @property
    def saved(self) -> Decimal:
        return self.all_on_priciest - self.month


def _route_prices(route: Route) -> tuple[Decimal, Decimal]:
    """A route's price per million tokens (input, output): its most expensive member's."""
    members = [inst for inst, *_ in _route_members(route)]
    if not members:
        return Decimal(0), Decimal(0)
    top = max(members, key=lambda i: i.input_price_per_million + i.output_price_per_million)
    return Decimal(top.input_price_per_million), Decimal(top.output_price_per_million)


def balancer_savings(balancers: Iterable[Balancer]) -> dict[int, Savings]:
    """Expects routes prefetched as balancers_for_pages does. Two queries whatever the number of
    balancers."""
    balancers = list(balancers)
    now = timezone.now()
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    month = today.replace(day=1)
    ids = [b.pk for b in balancers]
    rows = {
        row["balancer_id"]: row
        for row in UsageEvent.objects.filter(balancer_id__in=ids, created_at__gte=month)
        .values("balancer_id")
        .annotate(
            cost=Sum("cost_usd"), prompt=Sum("prompt_tokens"), completion=Sum("completion_tokens")
        )
    }
    todays = dict(
        UsageEvent.objects.filter(balancer_id__in=ids, created_at__gte=today)
        .values("balancer_id")
        .annotate(cost=Sum("cost_usd"))
        .values_list("balancer_id", "cost")
    )
    result = {}
    for balancer in balancers:
        savings = Savings(today=todays.get(balancer.pk) or Decimal(0))
        row = rows.get(balancer.pk)
        priced = [(route, _route_prices(route)) for route in balancer.routes.all()]
        if priced:
            route, (price_in, price_out) = max(
                priced, key=lambda pair: (pair[1][0] + pair[1][1], pair[0].name)
            )
            savings.priciest_route = route.name
            if row:
                savings.month = row["cost"] or Decimal(0)
                savings.all_on_priciest = (
                    (row["prompt"] or 0) * price_in + (row["completion"] or 0) * price_out
                ) / 1_000_000
        result[balancer.pk] = savings
    return result


# The board's failover window: the incidents whose failed-over requests fell in the last day.
FAILOVER_HOURS = 24


def board_failover(balancer: Balancer) -> FailoverReport:
    """The balancer's failover incidents of the last FAILOVER_HOURS, with their extra spend."""
    now = timezone.now()
    return failover_incidents(
        start=now - timedelta(hours=FAILOVER_HOURS),
        end=now + timedelta(seconds=1),
        condition=Q(balancer_id=balancer.pk),
        limit=5,
    )


# -- a goal name's live board (auto, auto-cheap... with no balancer) -----------------------------


@dataclass
class ModelLane:
    """One model a goal name may choose (or chose in the window): its instances, its live figures.

    The board's lanes are the models, not routes: a goal name has one implicit route over every
    instance it may use (gateway/hotpath/snapshot.py goal_balancers); what the operator watches is
    which model it picked. An attempt is drawn in the lane of its instance's model.
    """

    model: str
    order: int
    members: list[MemberState]
    figures: LaneFigures = field(default_factory=LaneFigures)

    @property
    def instance_ids(self) -> str:
        return " ".join(m.instance.instance_id for m in self.members)

    @property
    def available(self) -> bool:
        return any(m.eligible for m in self.members)

    def lane_state(self, now: float | None = None) -> tuple[str, str]:
        """(state, words): active, degraded, cooling (with seconds left), unavailable, disabled."""
        now = time.time() if now is None else now
        enabled = [m for m in self.members if m.instance.enabled]
        if not enabled:
            return "disabled", "no enabled instance"
        if not self.available:
            lefts = [left for m in enabled if (left := m.cooldown_left(now)) is not None]
            if lefts:
                return "cooling", f"cooling down, {min(lefts)} s left"
            return "unavailable", "unavailable"
        if any(not m.eligible or m.simulated_down for m in enabled):
            return "degraded", "degraded"
        return "active", "active"


@dataclass
class GoalBoard:
    goal: str
    preference: str
    lanes: list[ModelLane]
    requests: int = 0  # over the live window
    errors: int = 0
    failed_over: int = 0  # answered after an earlier attempt failed
    cost: Decimal = Decimal(0)
    today: Decimal = Decimal(0)  # spend so far today and this month (UTC)
    month: Decimal = Decimal(0)

    @property
    def status(self) -> tuple[str, str]:
        """(label, pill class), as a balancer's status."""
        enabled = [lane for lane in self.lanes if lane.lane_state()[0] != "disabled"]
        if not enabled:
            return "No models", "bad"
        if not any(lane.available for lane in enabled):
            return "Unavailable", "bad"
        if any(lane.lane_state()[0] != "active" for lane in enabled):
            return "Degraded", "warn"
        return "Serving", "ok"


def goal_events(goal: str) -> Any:
    """The usage events of a goal name's requests (no balancer row: the serving name says it)."""
    return UsageEvent.objects.filter(balancer__isnull=True, serving_name=goal)


def goal_board(goal: str, *, minutes: int = LIVE_MINUTES) -> GoalBoard:
    """The goal's lanes, one per model: every model of the enabled instances it may choose (for
    `auto-free` the zero-priced ones), and any model that answered it in the last `minutes`; in
    name order (a lane never moves while the board is open). Each lane's members are those
    instances with their live health, and its figures are the requests that model answered."""
    now = timezone.now()
    events = goal_events(goal).filter(created_at__gte=now - timedelta(minutes=minutes))
    candidates = Instance.objects.filter(enabled=True).exclude(provider="builtin")
    if goal == FREE_GOAL:
        candidates = candidates.filter(input_price_per_million=0, output_price_per_million=0)
    served = set(events.exclude(instance="").values_list("instance", flat=True).distinct())
    instances = list(
        Instance.objects.filter(Q(pk__in=candidates.values("pk")) | Q(instance_id__in=served))
        .exclude(provider="builtin")
        .order_by("model", "instance_id")
    )
    health = health_snapshot([i.pk for i in instances])
    by_model: dict[str, list[MemberState]] = {}
    for instance in instances:
        by_model.setdefault(instance.model, []).append(
            MemberState(
                instance=instance,
                weight=100,
                priority=1,
                enabled=True,
                health=health[instance.pk].status,
                cooldown_until=health[instance.pk].cooldown_until,
            )
        )
    figures = _figures_by(events, "model", by_model, minutes)
    lanes = [
        ModelLane(model=model, order=order, members=members, figures=figures[model])
        for order, (model, members) in enumerate(sorted(by_model.items()), start=1)
    ]
    totals = events.aggregate(
        requests=Count("id"),
        errors=Count("id", filter=Q(status_code__gte=400)),
        failed_over=Count("id", filter=Q(attempts__gt=1, status_code__lt=400)),
        cost=Sum("cost_usd"),
    )
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    spend = (
        goal_events(goal)
        .filter(created_at__gte=today.replace(day=1))
        .aggregate(month=Sum("cost_usd"), today=Sum("cost_usd", filter=Q(created_at__gte=today)))
    )
    return GoalBoard(
        goal=goal,
        preference=GOALS[goal],
        lanes=lanes,
        requests=totals["requests"],
        errors=totals["errors"],
        failed_over=totals["failed_over"],
        cost=totals["cost"] or Decimal(0),
        today=spend["today"] or Decimal(0),
        month=spend["month"] or Decimal(0),
    )


def recent_goal_events(goal: str, *, limit: int = 15) -> list[UsageEvent]:
    """A goal name's latest usage events, each with `decision_words` (as `recent_events`)."""
    events = list(goal_events(goal).defer("prompt_text").order_by("-created_at")[:limit])
    for event in events:
        words = decision_words(
            event.decision_reason, event.confidence, event.attempt_log or [], event.route
        )
        setattr(event, "decision_words", words)  # noqa: B010  (display only)
    return events
