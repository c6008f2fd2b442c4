"""Reserved capacity: spreading a paid hour over the requests it served, and how full it was.

An instance priced as reserved capacity (`Instance.pricing == "capacity"`) costs its
`capacity_price_per_hour` for every UTC hour from the hour its pricing was switched on
(`capacity_since`) for as long as it stays on, whether it serves or not. Its requests record
no cost when they are served (gateway.hotpath.proxy); when an hour has closed,
`allocate_capacity()` spreads that hour's price over the usage events the instance answered
in it (cache hits excluded: they never reached it), in proportion to each one's tokens
(prompt + completion), and writes each share on its event as `cost_usd`. The shares are
rounded to the event's 10 decimal places by the largest-remainder method, so they add up to
the hour's price exactly. An hour in which the instance served no tokens keeps its price
on its `CapacityHour` row as idle capacity: paid, spread over nothing.

It runs inside the usage rollup's transaction (gateway.reporting.rollups), which then
recomputes the hourly rollups of the hours it spread, so every figure read from the rollups
(totals, breakdowns, savings, CSV, `/api/usage/`) carries the spread cost. An event that
arrives late for an hour already spread (the usage buffer kept it through a database outage)
has an id above that hour's `event_mark`: the next run spreads that hour again, whole.

Utilisation of an hour: tokens served / (capacity x 3600) for a capacity in tokens per
second; the served requests' latencies summed / (capacity x 3600) for one in concurrent
requests (their mean concurrency over the capacity). The effective price per million tokens
of a range is its paid hours' price over the tokens they served.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.db.models import Count, Max, Min, Sum
from django.db.models.functions import TruncHour

from gateway.models import CapacityHour, UsageEvent
from targetgroups.models import CapacityUnit, Instance, Pricing

HOUR = timedelta(hours=1)
SECONDS_PER_HOUR = 3600
# The events' cost has 10 decimal places: shares are whole units of 1e-10 USD.
UNIT = Decimal("1e-10")
UNITS_PER_USD = 10**10
MILLION = Decimal(1_000_000)
MAX_BACKLOG = timedelta(
    days=31
)  # a first run (or one after a long stop) spreads at most this far back


def floor_hour(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def spread(price: Decimal, weights: list[int]) -> list[Decimal]:
    """`price` split in proportion to `weights`, in units of 1e-10, adding up to `price` exactly.

    Each share is rounded down, then the units left over go one each to the largest
    remainders (ties to the earlier weight). All weights 0: every share is 0.
    """
    total = sum(weights)
    if total <= 0:
        return [Decimal(0)] * len(weights)
    units = int((price / UNIT).to_integral_value())
    base = [units * w // total for w in weights]
    remainders = sorted(range(len(weights)), key=lambda i: (-(units * weights[i] % total), i))
    for i in remainders[: units - sum(base)]:
        base[i] += 1
    return [Decimal(b) * UNIT for b in base]


def allocate_capacity(
    *, now: datetime, ceiling: int, not_before: datetime | None = None
) -> list[datetime]:
    """Spread every closed, not yet spread hour of every reserved instance (and hours with late
    events) over its usage events with ids up to `ceiling`; the hours whose events changed.

    `not_before`: hours before it lost their raw events to retention and are left alone."""
    closed = floor_hour(now)
    changed: set[datetime] = set()
    for instance in Instance.objects.filter(
        pricing=Pricing.CAPACITY, capacity_since__isnull=False
    ).order_by("pk"):
        if instance.capacity_since is None:
            continue
        first = max(floor_hour(instance.capacity_since), closed - MAX_BACKLOG)
        if not_before is not None:
            first = max(first, not_before)
        done = CapacityHour.objects.filter(
            instance=instance.instance_id, hour__gte=first
        ).aggregate(last=Max("hour"), mark=Min("event_mark"))
        start = first if done["last"] is None else max(first, done["last"] + HOUR)
        hours: set[datetime] = set()
        moment = start
        while moment < closed:
            hours.add(moment)
            moment += HOUR
        if done["last"] is not None:
            # Late events: written after their hour was spread, so with ids above its mark.
            marks = dict(
                CapacityHour.objects.filter(
                    instance=instance.instance_id, hour__gte=first, hour__lt=start
                ).values_list("hour", "event_mark")
            )
            late = (
                UsageEvent.objects.filter(
                    instance=instance.instance_id,
                    created_at__gte=first,
                    created_at__lt=start,
                    pk__gt=done["mark"] or 0,
                    pk__lte=ceiling,
                )
                .annotate(at=TruncHour("created_at", tzinfo=UTC))
                .order_by()
                .values("at")
                .annotate(top=Max("pk"))
            )
            hours.update(row["at"] for row in late if row["top"] > marks.get(row["at"], 0))
        for hour in sorted(hours):
            if _spread_hour(instance, hour, ceiling=ceiling):
                changed.add(hour)
    return sorted(changed)


def _spread_hour(instance: Instance, hour: datetime, *, ceiling: int) -> bool:
    """Spread one hour (again); True when any event's cost was written."""
    events = list(
        UsageEvent.objects.filter(
            instance=instance.instance_id,
            created_at__gte=hour,
            created_at__lt=hour + HOUR,
            pk__lte=ceiling,
            cache_hit=False,
        )
        .order_by("pk")
        .only("pk", "prompt_tokens", "completion_tokens", "latency_ms", "cost_usd")
    )
    price = instance.capacity_price_per_hour
    shares = spread(price, [e.prompt_tokens + e.completion_tokens for e in events])
    touched = []
    for event, share in zip(events, shares, strict=True):
        if event.cost_usd != share:
            event.cost_usd = share
            touched.append(event)
    if touched:
        UsageEvent.objects.bulk_update(touched, ["cost_usd"], batch_size=1000)
    CapacityHour.objects.update_or_create(
        instance=instance.instance_id,
        hour=hour,
        defaults={
            "price_usd": price,
            "unit": instance.capacity_unit,
            "capacity": instance.capacity,
            "requests": len(events),
            "prompt_tokens": sum(e.prompt_tokens for e in events),
            "completion_tokens": sum(e.completion_tokens for e in events),
            "busy_seconds": sum(e.latency_ms for e in events) / 1000,
            "spread_usd": sum(shares, Decimal(0)),
            "event_mark": ceiling,
        },
    )
    return bool(touched)


# -- the read side ------------------------------------------------------------------------------


@dataclass
class CapacityRow:
    """One reserved instance over a range: the hours it was paid, what they served."""

    instance: str
    model: str = ""
    unit: str = CapacityUnit.CONCURRENT_REQUESTS
    capacity: int = 0
    price_per_hour: Decimal = Decimal(0)
    hours: int = 0
    cost: Decimal = Decimal(0)
    spread: Decimal = Decimal(0)
    requests: int = 0
    tokens: int = 0
    used: float = 0.0  # tokens, or busy seconds, served
    offered: float = 0.0  # capacity x seconds paid
    exists: bool = True

    @property
    def idle_cost(self) -> Decimal:
        """Paid hours that served no tokens."""
        return self.cost - self.spread

    @property
    def utilisation(self) -> float | None:
        return self.used / self.offered if self.offered else None

    @property
    def utilisation_bar(self) -> float:
        """The utilisation as a bar's width in percent, at most 100."""
        return min(100.0, (self.utilisation or 0.0) * 100)

    @property
    def effective_price_per_million(self) -> Decimal | None:
        return self.cost / self.tokens * MILLION if self.tokens else None

    @property
    def unit_label(self) -> str:
        return "tokens/s" if self.unit == CapacityUnit.TOKENS_PER_SECOND else "concurrent requests"


@dataclass
class CapacityReport:
    rows: list[CapacityRow] = field(default_factory=list)

    @property
    def cost(self) -> Decimal:
        return sum((r.cost for r in self.rows), Decimal(0))

    @property
    def idle_cost(self) -> Decimal:
        return sum((r.idle_cost for r in self.rows), Decimal(0))


def capacity_report(*, start: datetime, end: datetime) -> CapacityReport:
    """Each reserved instance's closed hours in [start, end): cost, use, utilisation, $/1M
    tokens."""
    rows: dict[str, CapacityRow] = {}
    sums = (
        CapacityHour.objects.filter(hour__gte=start, hour__lt=end)
        .values("instance", "unit", "capacity")
        .annotate(
            n=Count("pk"),
            cost=Sum("price_usd"),
            spread=Sum("spread_usd"),
            requests=Sum("requests"),
            prompt=Sum("prompt_tokens"),
            completion=Sum("completion_tokens"),
            busy=Sum("busy_seconds"),
        )
        .order_by("instance")
    )
    for s in sums:
        row = rows.setdefault(s["instance"], CapacityRow(instance=s["instance"]))
        tokens = (s["prompt"] or 0) + (s["completion"] or 0)
        row.hours += s["n"]
        row.cost += s["cost"] or Decimal(0)
        row.spread += s["spread"] or Decimal(0)
        row.requests += s["requests"] or 0
        row.tokens += tokens
        seconds = s["n"] * SECONDS_PER_HOUR * s["capacity"]
        row.offered += seconds
        row.used += tokens if s["unit"] == CapacityUnit.TOKENS_PER_SECOND else s["busy"] or 0.0
    instances = {
        i.instance_id: i
        for i in Instance.objects.filter(instance_id__in=list(rows))
        | Instance.objects.filter(pricing=Pricing.CAPACITY)
    }
    for instance_id, instance in instances.items():
        row = rows.setdefault(instance_id, CapacityRow(instance=instance_id))
        row.model = instance.model
        row.unit = instance.capacity_unit
        row.capacity = instance.capacity
        row.price_per_hour = instance.capacity_price_per_hour
    for instance_id, row in rows.items():
        row.exists = instance_id in instances
    return CapacityReport(rows=sorted(rows.values(), key=lambda r: (-r.cost, r.instance)))


EXPORT_COLUMNS = [
    "from",
    "to",
    "instance",
    "model",
    "unit",
    "capacity",
    "price_per_hour_usd",
    "hours",
    "cost_usd",
    "spread_usd",
    "idle_cost_usd",
    "requests",
    "tokens",
    "utilisation",
    "effective_price_per_million_usd",
]


def capacity_csv_row(row: CapacityRow, *, start: datetime, end: datetime) -> list[object]:
    """A row under EXPORT_COLUMNS (the usage CSV's `table=capacity`)."""
    effective = row.effective_price_per_million
    return [
        start.isoformat(),
        end.isoformat(),
        row.instance,
        row.model,
        row.unit,
        row.capacity,
        f"{row.price_per_hour:.6f}",
        row.hours,
        f"{row.cost:.10f}",
        f"{row.spread:.10f}",
        f"{row.idle_cost:.10f}",
        row.requests,
        row.tokens,
        "" if row.utilisation is None else f"{row.utilisation:.6f}",
        "" if effective is None else f"{effective:.6f}",
    ]


def capacity_instances(ids: Iterable[str]) -> set[str]:
    """Which of these instance ids are priced as reserved capacity now."""
    return set(
        Instance.objects.filter(instance_id__in=list(ids), pricing=Pricing.CAPACITY).values_list(
            "instance_id", flat=True
        )
    )
