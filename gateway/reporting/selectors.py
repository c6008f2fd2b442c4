"""Reads for the usage-and-cost page: totals, the chart, breakdowns, the CSV rows.

Everything but the recent requests comes from the hourly rollups (UsageHourly), so
a 30-day range reads at most 720 hours of sums rather than every raw event. Times
are UTC; days are UTC days.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.db.models import Q, QuerySet, Sum
from django.urls import reverse

from balancers.models import Balancer
from gateway.models import ApiKey, InstanceHealth, ProbeRecord, Team, UsageEvent, UsageHourly
from gateway.reporting.capacity import capacity_report
from gateway.reporting.failover import failover_incidents
from gateway.reporting.rollups import floor_hour
from gateway.reporting.savings import SavingsReport, unbound_note, usage_savings
from targetgroups.models import Instance

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
RECENT_LIMIT = 50
# The live figures' one window: the board, its lanes and the detail page's route counts, stated
# on every page by the `live_window` template tag ("last 15 minutes").
LIVE_MINUTES = 15


@dataclass(frozen=True, slots=True)
class UsageRange:
    key: str
    label: str  # "last 24 hours"
    short: str  # "24 hours"
    buckets: int
    daily: bool

    @property
    def step(self) -> timedelta:
        return DAY if self.daily else HOUR

    def window(self, now: datetime) -> tuple[datetime, datetime]:
        """[start, end): whole hours (or whole UTC days), the current one included."""
        end = floor_hour(now).replace(hour=0) + DAY if self.daily else floor_hour(now) + HOUR
        return end - self.buckets * self.step, end


RANGES = {
    r.key: r
    for r in (
        UsageRange("24h", "last 24 hours", "24 hours", 24, daily=False),
        UsageRange("7d", "last 7 days", "7 days", 7, daily=True),
        UsageRange("30d", "last 30 days", "30 days", 30, daily=True),
    )
}
DEFAULT_RANGE = RANGES["24h"]


@dataclass(frozen=True)
class UsageFilters:
    """What the page shows: a range, and optionally one balancer and one API key (or none)."""

    range: UsageRange = DEFAULT_RANGE
    balancer: Balancer | None = None
    api_key: ApiKey | None = None
    without_key: bool = False  # requests without a valid API key: the playground, smoke tests, 401s

    @property
    def key_param(self) -> str:
        return "none" if self.without_key else str(self.api_key.pk) if self.api_key else ""

    def query(self, **changes: Any) -> str:
        """The GET parameters for these filters (with changes), defaults left out."""
        params = {
            "range": self.range.key,
            "balancer": self.balancer.name if self.balancer else "",
            "key": self.key_param,
            **changes,
        }
        if params["range"] == DEFAULT_RANGE.key:
            del params["range"]
        return urlencode({k: v for k, v in params.items() if v})

    def condition(self) -> Q:
        """The filter on balancer and key; UsageEvent and UsageHourly name these fields alike."""
        condition = Q()
        if self.balancer is not None:
            condition &= Q(balancer_id=self.balancer.pk)
        if self.without_key:
            condition &= Q(api_key_id__isnull=True)
        elif self.api_key is not None:
            condition &= Q(api_key_id=self.api_key.pk)
        return condition

    @property
    def narrowed(self) -> bool:
        return self.balancer is not None or self.api_key is not None or self.without_key

    @property
    def description(self) -> str:
        parts = [self.range.label]
        if self.balancer is not None:
            parts.append(f"balancer {self.balancer.name}")
        if self.without_key:
            parts.append("requests without an API key")
        elif self.api_key is not None:
            parts.append(f"API key {self.api_key.name}")
        return ", ".join(parts)


@dataclass
class UsageTotals:
    requests: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: Decimal = Decimal(0)
    latency_ms_sum: float = 0.0
    streamed: int = 0

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None

    @property
    def mean_latency_ms(self) -> float | None:
        return self.latency_ms_sum / self.requests if self.requests else None

    def add(self, row: Mapping[str, Any]) -> None:
        self.requests += row["n"] or 0
        self.errors += row["failed"] or 0
        self.prompt_tokens += row["prompt"] or 0
        self.completion_tokens += row["completion"] or 0
        self.cost += row["cost"] or Decimal(0)
        self.latency_ms_sum += row["latency"] or 0.0
        self.streamed += row["streams"] or 0


SUMS = {
    "n": Sum("requests"),
    "failed": Sum("errors"),
    "prompt": Sum("prompt_tokens"),
    "completion": Sum("completion_tokens"),
    "cost": Sum("cost_usd"),
    "latency": Sum("latency_ms_sum"),
    "streams": Sum("streamed"),
}


def usage_hours(*, filters: UsageFilters, start: datetime, end: datetime) -> QuerySet[UsageHourly]:
    return UsageHourly.objects.filter(filters.condition(), hour__gte=start, hour__lt=end).order_by()


def usage_totals(*, filters: UsageFilters, start: datetime, end: datetime) -> UsageTotals:
    totals = UsageTotals()
    totals.add(usage_hours(filters=filters, start=start, end=end).aggregate(**SUMS))
    return totals


def usage_exists() -> bool:
    """Has the gateway ever recorded a request (rollups outlive the raw events)?"""
    return UsageHourly.objects.exists() or UsageEvent.objects.exists()


# -- the chart ----------------------------------------------------------------------------------

BAND = 100.0  # each band's height in SVG units; the width is 10 units per bucket
SLOT = 10.0
MIN_BAR = 1.5  # a bucket with any cost or traffic stays visible


@dataclass
class ChartBar:
    start: datetime
    title: str
    axis_label: str
    cost: Decimal
    requests: int
    errors: int
    x: float = 0.0
    width: float = 0.0
    cost_height: float = 0.0
    ok_height: float = 0.0
    error_height: float = 0.0
    anomaly: bool = False  # a cost anomaly was raised for an hour in this bucket

    @property
    def cost_y(self) -> float:
        return BAND - self.cost_height

    @property
    def ok_y(self) -> float:
        return BAND - self.ok_height - self.error_height

    @property
    def error_y(self) -> float:
        return BAND - self.error_height


@dataclass
class UsageChart:
    bars: list[ChartBar]
    unit: str  # "hour" | "day"
    peak_cost: Decimal = Decimal(0)
    peak_requests: int = 0
    peak_bar: ChartBar | None = None

    @property
    def width(self) -> float:
        return SLOT * len(self.bars)

    @property
    def height(self) -> float:
        return BAND


def _bar_height(value: float, peak: float) -> float:
    if not value or not peak:
        return 0.0
    return max(MIN_BAR, value / peak * (BAND - 2))


def _bucket_labels(start: datetime, usage_range: UsageRange) -> tuple[str, str]:
    """(hover title, axis label) for the bucket starting at `start`."""
    if usage_range.daily:
        return (
            f"{start:%a %d %b %Y}",
            f"{start:%d %b}" if usage_range.buckets > 7 else f"{start:%a %d}",
        )
    end = start + HOUR
    return f"{start:%a %d %b, %H:%M}\N{EN DASH}{end:%H:%M} UTC", f"{start:%H:%M}"


def usage_chart(*, filters: UsageFilters, start: datetime, end: datetime) -> UsageChart:
    usage_range = filters.range
    per_bucket: dict[datetime, UsageTotals] = {}
    rows = usage_hours(filters=filters, start=start, end=end).values("hour").annotate(**SUMS)
    for row in rows:
        hour = row["hour"].astimezone(UTC)
        bucket = hour.replace(hour=0) if usage_range.daily else hour
        per_bucket.setdefault(bucket, UsageTotals()).add(row)
    bars = []
    label_every = {24: 3, 7: 1, 30: 5}.get(usage_range.buckets, 1)
    for index in range(usage_range.buckets):
        bucket = start + index * usage_range.step
        totals = per_bucket.get(bucket, UsageTotals())
        title, axis = _bucket_labels(bucket, usage_range)
        failed = f" ({totals.errors:,} failed)" if totals.errors else ""
        bars.append(
            ChartBar(
                start=bucket,
                cost=totals.cost,
                requests=totals.requests,
                errors=totals.errors,
                title=f"{title}: {format_usd(totals.cost)}, {totals.requests:,} "
                f"request{'s' if totals.requests != 1 else ''}{failed}",
                # Label the latest bucket and every few before it, so the labels never crowd.
                axis_label=axis if (usage_range.buckets - 1 - index) % label_every == 0 else "",
            )
        )
    chart = UsageChart(bars=bars, unit="day" if usage_range.daily else "hour")
    chart.peak_cost = max((b.cost for b in bars), default=Decimal(0))
    chart.peak_requests = max((b.requests for b in bars), default=0)
    if chart.peak_cost:
        chart.peak_bar = max(bars, key=lambda b: b.cost)
    fill = 0.5 if len(bars) <= 7 else 0.7
    for index, bar in enumerate(bars):
        bar.width = SLOT * fill
        bar.x = index * SLOT + (SLOT - bar.width) / 2
        bar.cost_height = _bar_height(float(bar.cost), float(chart.peak_cost))
        total = _bar_height(bar.requests, chart.peak_requests)
        bar.error_height = _bar_height(bar.errors, chart.peak_requests) if bar.errors else 0.0
        bar.ok_height = max(total - bar.error_height, 0.0)
    return chart


# -- breakdowns ---------------------------------------------------------------------------------


@dataclass
class BreakdownRow:
    label: str
    sub: str = ""
    url: str = ""
    totals: UsageTotals = field(default_factory=UsageTotals)
    share: float = 0.0  # of the filtered range's cost

    @property
    def share_percent(self) -> float:
        return self.share * 100


def _balancer_label(
    balancers: dict[int, Balancer], balancer_id: int | None, serving_name: str
) -> tuple[str, str]:
    balancer = balancers.get(balancer_id) if balancer_id is not None else None
    if balancer is not None:
        return balancer.name, reverse("balancer-detail", args=[balancer.name])
    if (
        not serving_name
    ):  # refused before a model was read (no key, bad JSON, unknown path) or the model list
        return "no model named", ""
    return f"{serving_name} ({unbound_note(serving_name)})", ""


def _rows(
    hours: QuerySet[UsageHourly],
    fields: Iterable[str],
    label: Callable[[dict[str, Any]], tuple[Any, str, str, str]],
    total_cost: Decimal,
) -> list[BreakdownRow]:
    """Sum the rollups by `fields`; `label(row)` gives (merge key, label, sub, url) for each
    group."""
    merged: dict[Any, BreakdownRow] = {}
    for row in hours.values(*fields).annotate(**SUMS):
        key, text, sub, url = label(row)
        entry = merged.setdefault(key, BreakdownRow(label=text, sub=sub, url=url))
        entry.totals.add(row)
    rows = sorted(merged.values(), key=lambda r: (-r.totals.cost, -r.totals.requests, r.label))
    for row in rows:
        row.share = float(row.totals.cost / total_cost) if total_cost else 0.0
    return rows


def usage_breakdowns(
    *, filters: UsageFilters, start: datetime, end: datetime, total_cost: Decimal
) -> dict[str, list[BreakdownRow]]:
    """The range's usage by balancer, route, instance and model, API key, team and use case;
    costliest first."""
    hours = usage_hours(filters=filters, start=start, end=end)
    balancer_ids = set(
        hours.filter(balancer_id__isnull=False).values_list("balancer_id", flat=True).distinct()
    )
    balancers = Balancer.objects.in_bulk(balancer_ids)
    instance_ids = set(hours.values_list("instance", flat=True).distinct())
    instances = set(
        Instance.objects.filter(instance_id__in=instance_ids).values_list("instance_id", flat=True)
    )
    key_ids = set(hours.exclude(api_key_id=None).values_list("api_key_id", flat=True).distinct())
    keys = ApiKey.objects.in_bulk(key_ids)
    teams = Team.objects.in_bulk(
        set(hours.filter(team_id__isnull=False).values_list("team_id", flat=True).distinct())
    )

    def by_balancer(row: dict[str, Any]) -> tuple[Any, str, str, str]:
        text, url = _balancer_label(balancers, row["balancer_id"], row["serving_name"])
        key = row["balancer_id"] if row["balancer_id"] in balancers else row["serving_name"]
        balancer = balancers.get(row["balancer_id"])
        sub = (
            balancer.serving_name
            if balancer is not None and balancer.serving_name != balancer.name
            else ""
        )
        return key, text, sub, url

    def by_route(row: dict[str, Any]) -> tuple[Any, str, str, str]:
        text, url = _balancer_label(balancers, row["balancer_id"], row["serving_name"])
        key = row["balancer_id"] if row["balancer_id"] in balancers else row["serving_name"]
        route = row["route"] or "no route answered"
        return (key, row["route"]), f"{text} / {route}", "", url

    def by_instance(row: dict[str, Any]) -> tuple[Any, str, str, str]:
        instance = row["instance"]
        url = reverse("instance-detail", args=[instance]) if instance in instances else ""
        return (instance, row["model"]), instance or "no instance answered", row["model"], url

    def by_key(row: dict[str, Any]) -> tuple[Any, str, str, str]:
        key = keys.get(row["api_key_id"]) if row["api_key_id"] is not None else None
        if key is not None:
            return key.pk, key.name, f"{key.prefix}…" + (" · revoked" if key.revoked_at else ""), ""
        if row["api_key_id"] is not None:
            return row["api_key_id"], f"deleted key #{row['api_key_id']}", "", ""
        return None, "No API key", "playground, smoke tests, and refusals without a valid key", ""

    def by_team(row: dict[str, Any]) -> tuple[Any, str, str, str]:
        team = teams.get(row["team_id"]) if row["team_id"] is not None else None
        if team is not None:
            return team.pk, team.name, team.description[:80], ""
        if row["team_id"] is not None:
            return row["team_id"], f"deleted team #{row['team_id']}", "", ""
        return None, "No team", "keys without a team, and requests without a key", ""

    def by_use_case(row: dict[str, Any]) -> tuple[Any, str, str, str]:
        if row["use_case"]:
            return row["use_case"], row["use_case"], "", ""
        return "", "No use case", "neither the key nor the request named one", ""

    return {
        "balancer": _rows(hours, ("balancer_id", "serving_name"), by_balancer, total_cost),
        "route": _rows(hours, ("balancer_id", "serving_name", "route"), by_route, total_cost),
        "instance": _rows(hours, ("instance", "model"), by_instance, total_cost),
        "api_key": _rows(hours, ("api_key_id",), by_key, total_cost),
        "team": _rows(hours, ("team_id",), by_team, total_cost),
        "use_case": _rows(hours, ("use_case",), by_use_case, total_cost),
    }


# -- CSV rows -----------------------------------------------------------------------------------

EXPORT_COLUMNS = [
    "from",
    "to",
    "balancer",
    "serving_name",
    "route",
    "instance",
    "model",
    "api_key_id",
    "api_key",
    "team",
    "use_case",
    "requests",
    "errors",
    "prompt_tokens",
    "completion_tokens",
    "cost_usd",
    "cost_share",
    "mean_latency_ms",
    "streamed",
]


@dataclass
class UsageRow:
    """One balancer, route, instance, model, API key, team and use case over a range."""

    balancer: str  # empty when the balancer was deleted since
    serving_name: str
    route: str
    instance: str
    model: str
    api_key_id: int | None
    api_key: str
    team: str  # its name; empty without a team (or when it was deleted since)
    use_case: str
    totals: UsageTotals
    cost_share: Decimal  # of the range's cost, 0..1


def usage_rows(*, filters: UsageFilters, start: datetime, end: datetime) -> list[UsageRow]:
    """One row per balancer, route, instance, model, API key, team and use case over the range;
    costliest first.

    The rows do not overlap, so a spreadsheet can sum or pivot them any way.
    """
    hours = usage_hours(filters=filters, start=start, end=end)
    fields = (
        "balancer_id",
        "serving_name",
        "route",
        "instance",
        "model",
        "api_key_id",
        "team_id",
        "use_case",
    )
    groups = list(hours.values(*fields).annotate(**SUMS))
    teams = Team.objects.in_bulk({g["team_id"] for g in groups if g["team_id"] is not None})
    balancers = Balancer.objects.in_bulk(
        {g["balancer_id"] for g in groups if g["balancer_id"] is not None}
    )
    keys = ApiKey.objects.in_bulk({g["api_key_id"] for g in groups if g["api_key_id"] is not None})
    total_cost = sum((g["cost"] or Decimal(0) for g in groups), Decimal(0))
    groups.sort(
        key=lambda g: (
            -(g["cost"] or 0),
            -(g["n"] or 0),
            g["serving_name"],
            g["route"],
            g["instance"],
            g["model"],
            g["api_key_id"] or 0,
            g["team_id"] or 0,
            g["use_case"],
        )
    )
    rows = []
    for group in groups:
        totals = UsageTotals()
        totals.add(group)
        balancer = balancers.get(group["balancer_id"])
        key = keys.get(group["api_key_id"])
        team = teams.get(group["team_id"])
        rows.append(
            UsageRow(
                balancer=balancer.name if balancer else "",
                serving_name=group["serving_name"],
                route=group["route"],
                instance=group["instance"],
                model=group["model"],
                api_key_id=group["api_key_id"],
                api_key=key.name if key else "",
                team=team.name if team else "",
                use_case=group["use_case"],
                totals=totals,
                cost_share=totals.cost / total_cost if total_cost else Decimal(0),
            )
        )
    return rows


def usage_csv_row(row: UsageRow, *, start: datetime, end: datetime) -> list[Any]:
    """A row under EXPORT_COLUMNS."""
    totals, mean = row.totals, row.totals.mean_latency_ms
    return [
        start.isoformat(),
        end.isoformat(),
        row.balancer,
        row.serving_name,
        row.route,
        row.instance,
        row.model,
        row.api_key_id or "",
        row.api_key,
        row.team,
        row.use_case,
        totals.requests,
        totals.errors,
        totals.prompt_tokens,
        totals.completion_tokens,
        f"{totals.cost:.10f}",
        f"{row.cost_share:.6f}" if row.cost_share else "0",
        f"{mean:.1f}" if mean is not None else "",
        totals.streamed,
    ]


# -- recent requests ----------------------------------------------------------------------------


def usage_recent_events(
    *, filters: UsageFilters, start: datetime, limit: int = RECENT_LIMIT
) -> list[UsageEvent]:
    """The latest raw events for the filters (within the range, while retention keeps them)."""
    return list(
        UsageEvent.objects.filter(filters.condition(), created_at__gte=start)
        .select_related("balancer")
        .defer("prompt_text")
        .order_by("-created_at", "-pk")[:limit]
    )


# -- the page -----------------------------------------------------------------------------------


def usage_report(*, filters: UsageFilters, now: datetime) -> dict[str, Any]:
    """Everything the usage page shows, for its template."""
    start, end = filters.range.window(now)
    totals = usage_totals(filters=filters, start=start, end=end)
    report: dict[str, Any] = {
        "start": start,
        "end": end,
        "totals": totals,
        "ranges": [(r, filters.query(range=r.key), r == filters.range) for r in RANGES.values()],
        "export_query": filters.query(),
        "has_traffic": totals.requests > 0 or usage_exists(),
    }
    if totals.requests:
        report["chart"] = usage_chart(filters=filters, start=start, end=end)
        report["breakdowns"] = usage_breakdowns(
            filters=filters, start=start, end=end, total_cost=totals.cost
        )
        report["events"] = usage_recent_events(filters=filters, start=start)
        report["savings"] = savings_report(filters=filters, start=start, end=end)
        report["capacity"] = capacity_report(start=start, end=end)
        report["failover"] = failover_incidents(start=start, end=end, condition=filters.condition())
    # Budgets and cost anomalies (docs/cost.md): the budgets' current periods whatever the range,
    # the alerts and anomalies raised within it.
    from gateway.budgets import budget_alerts, budget_statuses
    from gateway.reporting.anomalies import anomalies_between

    report["budgets"] = budget_statuses(now=now)
    report["budget_alerts"] = budget_alerts(since=start)
    report["anomalies"] = anomalies_between(start=start, end=end)
    report["anomaly_k"] = settings.GATEWAY_ANOMALY_K
    if "chart" in report and report["anomalies"]:
        marked = {floor_hour(a.period_start) for a in report["anomalies"]}
        for bar in report["chart"].bars:
            span = DAY if filters.range.daily else HOUR
            bar.anomaly = any(bar.start <= hour < bar.start + span for hour in marked)
    return report


def savings_report(*, filters: UsageFilters, start: datetime, end: datetime) -> SavingsReport:
    """Cache savings, and savings against the priciest and the baseline routes
    (gateway.reporting.savings)."""
    reserved = {
        row.instance: row.effective_price_per_million or Decimal(0)
        for row in capacity_report(start=start, end=end).rows
    }
    return usage_savings(
        hours=usage_hours(filters=filters, start=start, end=end), reserved_prices=reserved
    )


# -- formatting (also the templates' `usd` filter) ----------------------------------------------

CENT = Decimal("0.01")
MICRO = Decimal("0.000001")


def format_usd(value: Decimal | float | int | None) -> str:
    """Dollars with the precision the amount needs: LLM requests often cost a fraction of a cent."""
    amount = Decimal(str(value or 0))
    if amount == 0:
        return "$0.00"
    sign, amount = ("-" if amount < 0 else ""), abs(amount)
    if amount >= 1:
        return f"{sign}${amount:,.2f}"
    if amount >= CENT:
        return f"{sign}${amount:.4f}"
    if amount >= MICRO:
        return f"{sign}${amount:.6f}"
    return f"{sign}<$0.000001"


# --- Active health probes -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProbeSummary:
    """An instance's active-health state and its latest probes, newest first."""

    status: str  # unknown | healthy | degraded | unavailable
    checked_at: datetime | None
    detail: str
    history: list[ProbeRecord]

    @property
    def css(self) -> str:
        return {"healthy": "ok", "degraded": "warn", "unavailable": "bad"}.get(self.status, "")


def probe_summaries(pks: Iterable[int], *, history: int = 10) -> dict[int, ProbeSummary]:
    """Each instance's probe state (unknown until its first probe) with up to `history` probes."""
    pks = list(pks)
    states = {h.instance_id: h for h in InstanceHealth.objects.filter(instance_id__in=pks)}
    records: dict[int, list[ProbeRecord]] = {pk: [] for pk in pks}
    if history:
        # The table holds at most GATEWAY_PROBE_HISTORY rows per instance: reading them all is
        # cheap.
        for record in ProbeRecord.objects.filter(instance_id__in=pks).order_by("-id"):
            if len(records[record.instance_id]) < history:
                records[record.instance_id].append(record)
    summaries = {}
    for pk in pks:
        state = states.get(pk)
        summaries[pk] = ProbeSummary(
            status=state.status if state else "unknown",
            checked_at=state.checked_at if state else None,
            detail=state.detail if state else "",
            history=records[pk],
        )
    return summaries
