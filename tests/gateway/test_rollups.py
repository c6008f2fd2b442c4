"""Hourly usage rollups: exact, incremental, late events in their own hour, retention, concurrent
runs."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection, connections, transaction
from django.utils import timezone

from gateway.hotpath.runtime import EmbeddedJob
from gateway.models import UsageEvent, UsageHourly, UsageRollupState
from gateway.reporting.rollups import _prune, floor_hour, rollup_usage, rollup_usage_in_thread
from tests.factories import make_api_key, make_balancer

NOW = datetime(2026, 3, 10, 15, 42, tzinfo=UTC)
_ids = itertools.count(1)


def event(
    at: datetime,
    *,
    balancer: Any = None,
    route: str = "main",
    instance: str = "inst_a",
    model: str = "m-a",
    key: Any = None,
    status: int = 200,
    prompt: int = 100,
    completion: int = 20,
    cost: str = "0.0000450000",
    latency: float = 120.0,
    stream: bool = False,
) -> UsageEvent:
    return UsageEvent.objects.create(
        created_at=at,
        request_id=f"req-{next(_ids)}",
        endpoint="chat",
        balancer=balancer,
        serving_name=balancer.serving_name if balancer else "gone",
        route=route,
        instance=instance,
        model=model,
        api_key=key,
        status_code=status,
        stream=stream,
        latency_ms=latency,
        prompt_tokens=prompt,
        completion_tokens=completion,
        cost_usd=Decimal(cost),
    )


def traffic(balancers: list[Any], keys: list[Any], *, hours: int = 6, end: datetime = NOW) -> None:
    """A few hours of varied events: two balancers, routes, instances, keys, failures and
    streams."""
    for n in range(hours * 7):
        at = end - timedelta(minutes=17 * n + 3)
        event(
            at,
            balancer=balancers[n % 2],
            route=("fast", "smart", "")[n % 3],
            instance=f"inst_{n % 4}",
            model=f"model-{n % 4}",
            key=(keys + [None] * 3)[n % 3],
            status=(200, 200, 429, 502, 200)[n % 5],
            prompt=37 * n + 1,
            completion=11 * n,
            cost=f"0.{n:04d}123457",
            latency=50.0 + n,
            stream=n % 4 == 0,
        )


def by_hour_from_events() -> dict[tuple[Any, ...], dict[str, Any]]:
    sums: dict[tuple[Any, ...], dict[str, Any]] = defaultdict(lambda: defaultdict(int))
    for e in UsageEvent.objects.all():
        key = (
            floor_hour(e.created_at),
            e.balancer_id,
            e.serving_name,
            e.route,
            e.instance,
            e.model,
            e.api_key_id,
        )
        row = sums[key]
        row["requests"] += 1
        row["errors"] += e.status_code >= 400
        row["prompt_tokens"] += e.prompt_tokens
        row["completion_tokens"] += e.completion_tokens
        row["cost_usd"] += e.cost_usd
        row["latency_ms_sum"] += e.latency_ms
        row["streamed"] += e.stream
    return {k: dict(v) for k, v in sums.items()}


def by_hour_from_rollups() -> dict[tuple[Any, ...], dict[str, Any]]:
    rows = {}
    for r in UsageHourly.objects.all():
        key = (r.hour, r.balancer_id, r.serving_name, r.route, r.instance, r.model, r.api_key_id)
        assert key not in rows, f"two rollup rows for {key}"
        rows[key] = {
            "requests": r.requests,
            "errors": r.errors,
            "prompt_tokens": r.prompt_tokens,
            "completion_tokens": r.completion_tokens,
            "cost_usd": r.cost_usd,
            "latency_ms_sum": r.latency_ms_sum,
            "streamed": r.streamed,
        }
    return rows


def assert_rollups_match_events() -> None:
    expected, actual = by_hour_from_events(), by_hour_from_rollups()
    assert actual.keys() == expected.keys()
    for key, row in expected.items():
        # Floats summed in another order may differ in the last digit; everything else is exact.
        assert actual[key].pop("latency_ms_sum") == pytest.approx(row.pop("latency_ms_sum")), key
        assert actual[key] == row, key


@pytest.mark.django_db
def test_rollups_are_the_raw_events_summed_exactly_per_hour() -> None:
    balancers = [make_balancer(), make_balancer()]
    keys = [make_api_key()[0], make_api_key()[0]]
    traffic(balancers, keys)
    result = rollup_usage(now=NOW)
    assert result.events == UsageEvent.objects.count() == 42
    assert result.hours == len({floor_hour(e.created_at) for e in UsageEvent.objects.all()})
    assert_rollups_match_events()
    assert all(r.hour.minute == 0 and r.hour.second == 0 for r in UsageHourly.objects.all())
    total = sum((r.cost_usd for r in UsageHourly.objects.all()), Decimal(0))
    assert total == sum((e.cost_usd for e in UsageEvent.objects.all()), Decimal(0))
    assert (
        UsageRollupState.objects.get().last_event_id
        == UsageEvent.objects.order_by("-pk").first().pk
    )


@pytest.mark.django_db
def test_a_run_only_recomputes_the_hours_of_new_events() -> None:
    balancer = make_balancer()
    traffic([balancer, balancer], [], hours=4)
    rollup_usage(now=NOW)
    before = {r.pk: r.hour for r in UsageHourly.objects.all()}
    assert rollup_usage(now=NOW).events == 0  # nothing new: nothing touched
    assert {r.pk: r.hour for r in UsageHourly.objects.all()} == before

    for _ in range(3):
        event(
            NOW,
            balancer=balancer,
            route="fast",
            instance="inst_1",
            model="model-1",
            cost="0.0000000001",
        )
    result = rollup_usage(now=NOW)
    assert (result.events, result.hours) == (3, 1)
    untouched = {pk: hour for pk, hour in before.items() if hour != floor_hour(NOW)}
    assert {
        pk: hour for pk, hour in before.items() if UsageHourly.objects.filter(pk=pk).exists()
    } == untouched
    assert_rollups_match_events()


@pytest.mark.django_db
def test_a_late_event_lands_in_its_own_old_hour() -> None:
    balancer = make_balancer()
    traffic([balancer, balancer], [])
    rollup_usage(now=NOW)
    old_hour = floor_hour(NOW - timedelta(hours=5))
    before = UsageHourly.objects.filter(hour=old_hour).count()
    # Written now (a new, higher id) for a request served five hours ago: the usage buffer
    # held it through a database outage.
    late = event(
        old_hour + timedelta(minutes=1), balancer=balancer, route="late-route", cost="1.2500000000"
    )
    result = rollup_usage(now=NOW)
    assert (result.events, result.hours) == (1, 1)
    row = UsageHourly.objects.get(hour=old_hour, route="late-route")
    assert (row.requests, row.cost_usd) == (1, Decimal("1.25"))
    assert UsageHourly.objects.filter(hour=old_hour).count() == before + 1
    assert UsageRollupState.objects.get().last_event_id == late.pk
    assert_rollups_match_events()


@pytest.mark.django_db
def test_retention_deletes_old_raw_events_and_keeps_their_rollups(settings) -> None:
    settings.GATEWAY_USAGE_RETENTION_DAYS = 2
    balancer = make_balancer()
    old = [
        event(NOW - timedelta(days=3, minutes=m), balancer=balancer, cost="0.0100000000")
        for m in range(5)
    ]
    recent = [
        event(NOW - timedelta(hours=h), balancer=balancer, cost="0.0020000000") for h in range(3)
    ]
    result = rollup_usage(now=NOW)
    assert result.pruned == len(old)
    assert sorted(UsageEvent.objects.values_list("pk", flat=True)) == sorted(e.pk for e in recent)
    old_hours = UsageHourly.objects.filter(hour__lt=NOW - timedelta(days=2))
    assert sum(r.requests for r in old_hours) == 5 and sum(
        r.cost_usd for r in old_hours
    ) == Decimal("0.05")
    state = UsageRollupState.objects.get()
    assert state.pruned_before == floor_hour(NOW - timedelta(days=2))

    # A request from that pruned day written only now: added to the kept rollup, not
    # recomputed from raw events that are gone; then pruned in turn.
    event(old[0].created_at, balancer=balancer, cost="0.0100000000")
    result = rollup_usage(now=NOW)
    assert (result.events, result.pruned) == (1, 1)
    old_hours = UsageHourly.objects.filter(hour__lt=NOW - timedelta(days=2))
    assert sum(r.requests for r in old_hours) == 6 and sum(
        r.cost_usd for r in old_hours
    ) == Decimal("0.06")
    assert UsageEvent.objects.count() == len(recent)


@pytest.mark.django_db
def test_an_event_committed_during_a_run_is_counted_once_even_when_its_hour_is_pruned(
    settings, monkeypatch
) -> None:
    settings.GATEWAY_USAGE_RETENTION_DAYS = 2
    hour = floor_hour(NOW - timedelta(days=2)) - timedelta(hours=1)  # pruned by this very run
    seen = event(hour + timedelta(minutes=5))
    event(hour + timedelta(minutes=6))  # committed after the run read its ceiling
    monkeypatch.setattr("gateway.reporting.rollups._committed_ceiling", lambda: seen.pk)
    rollup_usage(now=NOW)
    assert UsageHourly.objects.get(hour=hour).requests == 1  # only what the mark has passed
    monkeypatch.undo()
    rollup_usage(now=NOW)
    assert UsageHourly.objects.get(hour=hour).requests == 2 and not UsageEvent.objects.exists()


@pytest.mark.django_db
def test_retention_keeps_events_that_are_not_rolled_up_yet(settings) -> None:
    settings.GATEWAY_USAGE_RETENTION_DAYS = 1
    balancer = make_balancer()
    rollup_usage(now=NOW)
    rolled = event(NOW - timedelta(days=5), balancer=balancer)
    # The mark has not reached this event yet (a run that saw only `rolled`): prune spares it.
    UsageRollupState.objects.update(last_event_id=rolled.pk)
    pending = event(NOW - timedelta(days=5), balancer=balancer)
    state = UsageRollupState.objects.get()
    assert _prune(state, NOW) == 1
    assert list(UsageEvent.objects.values_list("pk", flat=True)) == [pending.pk]


@pytest.mark.django_db
def test_retention_zero_keeps_every_raw_event(settings) -> None:
    settings.GATEWAY_USAGE_RETENTION_DAYS = 0
    event(NOW - timedelta(days=400))
    assert rollup_usage(now=NOW).pruned == 0
    assert UsageEvent.objects.count() == 1 and UsageHourly.objects.count() == 1


def _in_thread(target: Any, results: list[Any]) -> threading.Thread:
    def run() -> None:
        try:
            results.append(target())
        except BaseException as exc:  # reported by the test, not lost in the thread
            results.append(exc)
        finally:
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


@pytest.mark.django_db(transaction=True)
def test_concurrent_runs_do_not_double_count() -> None:
    # Start from nothing: the in-process usage writer may still hold earlier tests' events.
    from gateway.hotpath.usage import recorder
    from gateway.models import UsageRollupState

    writer = threading.Thread(target=recorder.flush)
    writer.start()
    writer.join(10)
    UsageEvent.objects.all().delete()
    UsageHourly.objects.all().delete()
    UsageRollupState.objects.all().delete()
    balancers = [make_balancer(), make_balancer()]
    for _round in range(3):
        traffic(balancers, [], hours=3)
        barrier = threading.Barrier(3)
        results: list[Any] = []

        def run_together(barrier: threading.Barrier = barrier) -> Any:
            barrier.wait()
            return rollup_usage(now=NOW)

        threads = [_in_thread(run_together, results) for _ in range(3)]
        for thread in threads:
            thread.join(30)
        assert len(results) == 3 and not any(isinstance(r, BaseException) for r in results), results
        assert sum(r.events for r in results) == 21  # between them, each new event summed once
        assert_rollups_match_events()
    assert (
        sum(UsageHourly.objects.values_list("requests", flat=True))
        == UsageEvent.objects.count()
        == 3 * 21
    )


@pytest.mark.django_db(transaction=True)
def test_a_run_waits_for_events_still_being_written() -> None:
    """Ids are drawn at insert, not at commit: a batch in flight holds ids below committed ones."""
    balancer = make_balancer()
    inserted, commit = threading.Event(), threading.Event()
    writer_results: list[Any] = []

    def slow_writer() -> None:
        with transaction.atomic():
            event(NOW, balancer=balancer, route="slow")
            inserted.set()
            commit.wait(30)

    writer = _in_thread(slow_writer, writer_results)
    assert inserted.wait(30)
    event(NOW, balancer=balancer, route="quick")  # a higher id, committed first
    run_results: list[Any] = []
    runner = _in_thread(lambda: rollup_usage(now=NOW), run_results)
    _wait_for_lock_wait()  # the run is queued behind the writer's uncommitted insert
    commit.set()
    writer.join(30)
    runner.join(30)
    assert (
        writer_results == [None]
        and len(run_results) == 1
        and not isinstance(run_results[0], BaseException)
    )
    assert run_results[0].events == 2
    assert sorted(UsageHourly.objects.values_list("route", flat=True)) == ["quick", "slow"]


def _wait_for_lock_wait() -> None:
    with connection.cursor() as cursor:
        for _ in range(300):
            cursor.execute(
                "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = %s::regclass AND "
                "database = (SELECT oid FROM pg_database WHERE datname = current_database())",
                [UsageEvent._meta.db_table],
            )
            if cursor.fetchone()[0]:
                return
            time.sleep(0.1)
    raise AssertionError("the rollup never waited for the insert in flight")


@pytest.mark.django_db(transaction=True)
def test_embedded_mode_rolls_up_from_the_gateway_tick(settings) -> None:
    settings.REDIS_URL = ""
    settings.GATEWAY_ROLLUP_SECONDS = 3600
    event(timezone.now())
    hook = EmbeddedJob(rollup_usage_in_thread, "GATEWAY_ROLLUP_SECONDS")
    asyncio.run(hook())
    assert UsageHourly.objects.get().requests == 1
    event(timezone.now())
    asyncio.run(hook())  # within GATEWAY_ROLLUP_SECONDS of the last run: nothing to do yet
    assert UsageHourly.objects.get().requests == 1
    settings.REDIS_URL = "redis://elsewhere"  # production: Celery beat runs it, not the gateway
    hook.last = None
    asyncio.run(hook())
    assert UsageHourly.objects.get().requests == 1


@pytest.mark.django_db
def test_the_celery_task_runs_the_rollup() -> None:
    from gateway.tasks import rollup_usage as task

    event(timezone.now())
    event(timezone.now())
    assert task() == 2
    assert UsageHourly.objects.get().requests == 2


@pytest.mark.django_db
def test_a_retention_backlog_is_deleted_over_several_runs(settings, monkeypatch) -> None:
    import gateway.reporting.rollups

    settings.GATEWAY_USAGE_RETENTION_DAYS = 1
    monkeypatch.setattr(gateway.reporting.rollups, "PRUNE_BATCH", 2)
    balancer = make_balancer()
    for hours_ago in (50, 49, 48, 47, 46):
        event(NOW - timedelta(hours=hours_ago), balancer=balancer)
    recent = event(NOW - timedelta(minutes=5), balancer=balancer)

    assert [rollup_usage(now=NOW).pruned for _ in range(4)] == [2, 2, 1, 0]
    assert list(UsageEvent.objects.values_list("pk", flat=True)) == [recent.pk]
    assert (
        sum(UsageHourly.objects.values_list("requests", flat=True)) == 6
    )  # the rollups keep all six
