"""Hourly usage rollups, and how long raw usage events are kept.

`rollup_usage()` is incremental and exact. The one UsageRollupState row holds the
highest usage event id already summed into UsageHourly. A run takes the UTC hours
of the events above that mark, recomputes each of those hours whole from the raw
events up to its new mark (its rows deleted, the sums inserted) and moves the mark, all in one
transaction that holds the state row locked (SELECT ... FOR UPDATE): two runs take
turns and never count an event twice. An event written late (the usage buffer
keeps events through a database outage) has a new id and an old `created_at`, so
the run recomputes its own hour.

Where a run stops: event ids are drawn when a row is inserted, not when it commits,
so on PostgreSQL a batch still being written (another gateway process) can hold ids
below ids that have already committed. A mark moved past such a gap would skip those
events for good, so each run first takes a SHARE lock on the event table for a moment:
it waits for the inserts in flight, and below the highest id it then reads every
event has committed or rolled back. SQLite writes one transaction at a time, so its
ids commit in order.

Retention: raw events older than GATEWAY_USAGE_RETENTION_DAYS (whole hours, and only events already
rolled up) are deleted, and so are usage dead letters; their rollups stay. Such an hour can no
longer be recomputed from raw events, so an event arriving late for it is added to its rows.

Reserved capacity: each run first spreads the closed hours of instances priced as reserved
capacity over their events (gateway.reporting.capacity) and recomputes those hours too.

Production: Celery beat runs `gateway.tasks.rollup_usage` (config/celery.py). Embedded
mode (no Redis): the gateway process runs it every GATEWAY_ROLLUP_SECONDS. The usage
page runs it too before reading, so what it shows is never a minute behind.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connections, transaction
from django.db.models import Count, Max, Q, QuerySet, Sum
from django.db.models.functions import TruncHour
from django.utils import timezone

from gateway.db import in_thread
from gateway.models import UsageDeadLetter, UsageEvent, UsageHourly, UsageRollupState
from gateway.reporting.capacity import allocate_capacity

logger = logging.getLogger(__name__)

HOUR = timedelta(hours=1)
STATE_PK = 1
# What a rollup row is per hour: one row for each combination seen in that hour.
GROUP_FIELDS = (
    "balancer_id",
    "serving_name",
    "route",
    "instance",
    "model",
    "api_key_id",
    "team_id",
    "use_case",
)
SUM_FIELDS = (
    "requests",
    "errors",
    "prompt_tokens",
    "completion_tokens",
    "cost_usd",
    "latency_ms_sum",
    "streamed",
    "cache_hits",
    "savings_usd",
)


@dataclass(frozen=True, slots=True)
class RollupResult:
    events: int  # events newly summed (their ids were above the mark)
    hours: int  # hours recomputed or added to
    pruned: int  # raw events deleted by retention


def floor_hour(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


_running = threading.Lock()


def rollup_usage(*, now: datetime | None = None) -> RollupResult:
    """Sum the usage events written since the last run into their hours; prune old raw events."""
    # Runs in one process take turns here first: on SQLite (embedded mode) SELECT ... FOR
    # UPDATE is a no-op, and two transactions that both read, then write, fail with
    # "database is locked" instead of waiting (the page and the tick hook both run this).
    with _running:
        return _rollup(now)


def _rollup(now: datetime | None) -> RollupResult:
    ceiling = _committed_ceiling()
    with transaction.atomic():
        UsageRollupState.objects.bulk_create([UsageRollupState(pk=STATE_PK)], ignore_conflicts=True)
        state = UsageRollupState.objects.select_for_update().get(pk=STATE_PK)
        events, hours = 0, []
        # Reserved capacity: closed hours spread over their events first
        # (gateway.reporting.capacity),
        # so the hours recomputed below carry the spread cost.
        spread = allocate_capacity(
            now=now or timezone.now(), ceiling=ceiling, not_before=state.pruned_before
        )
        if ceiling > state.last_event_id:
            new = UsageEvent.objects.filter(pk__gt=state.last_event_id, pk__lte=ceiling)
            events = new.count()
            hours = sorted(
                new.annotate(at=TruncHour("created_at", tzinfo=UTC))
                .order_by()
                .values_list("at", flat=True)
                .distinct()
            )
            pruned_before = state.pruned_before
            _recompute(
                [h for h in hours if pruned_before is None or h >= pruned_before], ceiling=ceiling
            )
            _add_late(new, [h for h in hours if pruned_before is not None and h < pruned_before])
            state.last_event_id = ceiling
        respread = sorted(
            h
            for h in set(spread) - set(hours)
            if state.pruned_before is None or h >= state.pruned_before
        )
        _recompute(respread, ceiling=state.last_event_id)
        pruned = _prune(state, now or timezone.now())
        state.save()
    if events or pruned:
        logger.debug(
            "usage rollup: %d events in %d hours, %d raw events pruned", events, len(hours), pruned
        )
    return RollupResult(events=events, hours=len(hours), pruned=pruned)


def _committed_ceiling() -> int:
    """The highest event id at or below which no insert is still in flight (see the module's
    docstring)."""
    connection = connections[UsageEvent.objects.db]
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(
                    f"LOCK TABLE {connection.ops.quote_name(UsageEvent._meta.db_table)} IN SHARE "
                    "MODE"
                )
        return UsageEvent.objects.aggregate(top=Max("pk"))["top"] or 0


def _within(hours: Iterable[datetime]) -> Q:
    """Events created in any of these hours, as few ranges as the hours allow (index-friendly)."""
    spans: list[list[datetime]] = []
    for hour in sorted(hours):
        if spans and spans[-1][1] == hour:
            spans[-1][1] = hour + HOUR
        else:
            spans.append([hour, hour + HOUR])
    condition = Q()
    for start, end in spans:
        condition |= Q(created_at__gte=start, created_at__lt=end)
    return condition


def _sums(events: QuerySet[UsageEvent]) -> list[UsageHourly]:
    rows = (
        events.annotate(at=TruncHour("created_at", tzinfo=UTC))
        .order_by()
        .values("at", *GROUP_FIELDS)
        .annotate(
            n=Count("pk"),
            failed=Count("pk", filter=Q(status_code__gte=400)),
            prompt=Sum("prompt_tokens"),
            completion=Sum("completion_tokens"),
            cost=Sum("cost_usd"),
            latency=Sum("latency_ms"),
            streams=Count("pk", filter=Q(stream=True)),
            hits=Count("pk", filter=Q(cache_hit=True)),
            saved=Sum("savings_usd"),
        )
    )
    return [
        UsageHourly(
            hour=row["at"],
            **{name: row[name] for name in GROUP_FIELDS},
            requests=row["n"],
            errors=row["failed"],
            prompt_tokens=row["prompt"] or 0,
            completion_tokens=row["completion"] or 0,
            cost_usd=row["cost"] or 0,
            latency_ms_sum=row["latency"] or 0.0,
            streamed=row["streams"],
            cache_hits=row["hits"],
            savings_usd=row["saved"] or 0,
        )
        for row in rows
    ]


def _recompute(hours: list[datetime], *, ceiling: int) -> None:
    # Only events up to the new mark: an hour's rows always sum exactly the events the mark
    # has passed, so a later run can add to them (late events in a pruned hour) safely.
    if not hours:
        return
    UsageHourly.objects.filter(hour__in=hours).delete()
    events = UsageEvent.objects.filter(_within(hours), pk__lte=ceiling)
    UsageHourly.objects.bulk_create(_sums(events), batch_size=1000)


def _key(row: UsageHourly) -> tuple[Any, ...]:
    return (row.hour, *(getattr(row, name) for name in GROUP_FIELDS))


def _add_late(new: QuerySet[UsageEvent], hours: list[datetime]) -> None:
    """Add late events to hours whose raw events retention already deleted (rare)."""
    if not hours:
        return
    existing = {_key(row): row for row in UsageHourly.objects.filter(hour__in=hours)}
    for row in _sums(new.filter(_within(hours))):
        current = existing.get(_key(row))
        if current is None:
            row.save()
            continue
        for name in SUM_FIELDS:
            setattr(current, name, getattr(current, name) + getattr(row, name))
        current.save(update_fields=SUM_FIELDS)


# raw events deleted per run at most: a first backlog goes in steps, not one long transaction
PRUNE_BATCH = 50_000


def _prune(state: UsageRollupState, now: datetime) -> int:
    days = settings.GATEWAY_USAGE_RETENTION_DAYS
    if not days:
        return 0
    cutoff = floor_hour(now - timedelta(days=days))
    # Hours before the cutoff are no longer recomputed from raw events from now on (a late
    # event is added to their rows instead), so their remaining raw events, all rolled up,
    # can go over several runs.
    if state.pruned_before is None or cutoff > state.pruned_before:
        state.pruned_before = cutoff
    UsageDeadLetter.objects.filter(
        created_at__lt=cutoff
    ).delete()  # refused events go with the raw ones
    old = UsageEvent.objects.filter(created_at__lt=cutoff, pk__lte=state.last_event_id)
    last = old.order_by("pk").values_list("pk", flat=True)[PRUNE_BATCH - 1 : PRUNE_BATCH].first()
    deleted, _ = (old if last is None else old.filter(pk__lte=last)).delete()
    return deleted


async def rollup_usage_in_thread() -> RollupResult:
    """rollup_usage() for the gateway's event loop (embedded mode's tick)."""
    return await in_thread(rollup_usage)
