"""Process-wide routing state, and its sharing across gateway processes through Redis.

Each process keeps a RoutingState (health circuits, rotation counters, latency
and in-flight stats). Health transitions are what other processes must know:
every transition is queued and, on the next sync tick, written to the Redis hash
`sb:health`; the same tick reads the hash and merges what other processes saw.
Without Redis, or while it is down or hung, the state simply stays in process
(queued transitions are written once Redis answers again). Times are wall-clock
seconds so that processes on different hosts agree.

One owner: the health tracker is not thread-safe, so only the event loop that
serves /v1 (its requests and its sync tick) reads or writes it. Other threads —
the pages, probes run by Celery or a test — never touch it:

- they read `published`: an immutable copy of every circuit's view, replaced
  (never mutated) by the owner after each transition and each tick;
- they hand a state to the owner with `_post`: a lock-guarded inbox (one entry
  per instance) that the owner applies on its next tick; the state also goes
  into the published copy at once, so the pages show it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from types import MappingProxyType
from typing import Any

import orjson
from django.conf import settings

from gateway.engine.health import HEALTHY, HealthTracker, HealthView
from gateway.engine.planner import RoutingState

logger = logging.getLogger(__name__)

HEALTH_KEY = "sb:health"
# Operator resets ("end the cooldown now"), by instance pk: the wall-clock time of the reset.
RESETS_KEY = "sb:health_resets"
_UNKNOWN = HealthView(HEALTHY, None, 0, None, 0)

# Owner only: transitions not yet written to Redis, by instance pk; operator resets already applied.
_pending: dict[int, dict[str, float | int | str | None]] = {}
_resets_seen: dict[int, float] = {}

# Shared between threads, under _board_lock: states posted for the owner, and the copy the pages
# read.
_board_lock = threading.Lock()
_inbox: dict[int, dict[str, Any]] = {}
published: Mapping[int, HealthView] = MappingProxyType({})


def _queue_transition(pk: int, view: HealthView) -> None:
    _pending[pk] = {
        "cooldown_until": view.cooldown_until,
        "trips": view.trips,
        "last_failure_at": view.last_failure_at,
        "status": view.status,
        "at": time.time(),
    }
    _publish({pk: view})


routing = RoutingState(health=HealthTracker(on_change=_queue_transition), clock=time.time)


def _merged(view: HealthView, state: Mapping[str, Any], now: float) -> HealthView:
    return view.merged(
        state.get("cooldown_until"), int(state.get("trips") or 0), state.get("last_failure_at"), now
    )


def _publish(views: Mapping[int, HealthView], *, replace_all: bool = False) -> None:
    """Swap in a new published copy: `views` over the old copy (or instead of it), inbox on top."""
    global published
    now = time.time()
    with _board_lock:
        board = dict(views) if replace_all else {**published, **views}
        for pk, state in _inbox.items():
            if "reset_at" in state:
                board[pk] = _UNKNOWN
            else:
                board[pk] = _merged(board.get(pk, _UNKNOWN), state, now)
        published = MappingProxyType(board)


def _post(pk: int, state: dict[str, Any]) -> None:
    """From any thread: a state for the owner to apply, shown on the pages at once."""
    with _board_lock:
        _inbox[pk] = state
    _publish({})


def _apply_inbox() -> None:
    """Owner only."""
    with _board_lock:
        posted = dict(_inbox)
        _inbox.clear()
    for pk, state in posted.items():
        if "reset_at" in state:
            _apply_reset(pk, state["reset_at"])
            continue
        routing.health.apply_remote(
            pk,
            cooldown_until=state.get("cooldown_until"),
            trips=int(state.get("trips") or 0),
            last_failure_at=state.get("last_failure_at"),
        )


def _apply_reset(pk: int, reset_at: float) -> None:
    """Owner only. An operator's reset ends the circuit, unless it failed again since (a stale
    reset)."""
    if reset_at <= _resets_seen.get(pk, 0.0):
        return
    _resets_seen[pk] = reset_at
    last_failure = routing.health.state(pk, time.time()).last_failure_at
    if last_failure is None or last_failure <= reset_at:
        routing.health.reset(pk)


async def sync_health() -> None:
    """The owner's tick: apply posted states, publish this process's transitions and merge
    everyone else's (one round trip each way, skipped while Redis is away), publish the copy."""
    _apply_inbox()
    if settings.REDIS_URL:
        from gateway.hotpath.redis_client import RedisUnavailable, call_async

        batch = dict(_pending)
        try:
            if batch:
                mapping = {str(pk): orjson.dumps(state) for pk, state in batch.items()}
                await call_async(lambda client: client.hset(HEALTH_KEY, mapping=mapping))
                for pk, state in batch.items():
                    if _pending.get(pk) is state:  # not replaced by a newer transition meanwhile
                        del _pending[pk]
            raw = await call_async(lambda client: client.hgetall(HEALTH_KEY))
            resets = await call_async(lambda client: client.hgetall(RESETS_KEY))
        except RedisUnavailable:
            pass  # in-process state meanwhile; the breaker logs the outage
        else:
            _merge(raw)
            for raw_pk, raw_at in resets.items():
                _apply_reset(int(raw_pk), float(raw_at))
    now = time.time()
    _publish({pk: routing.health.state(pk, now) for pk in routing.health.known()}, replace_all=True)


def _merge(raw: dict[bytes, bytes]) -> None:
    """Owner only."""
    for raw_pk, raw_state in raw.items():
        state = orjson.loads(raw_state)
        routing.health.apply_remote(
            int(raw_pk),
            cooldown_until=state.get("cooldown_until"),
            trips=int(state.get("trips") or 0),
            last_failure_at=state.get("last_failure_at"),
        )


def health_snapshot(pks: list[int]) -> dict[int, HealthView]:
    """Each instance's circuit as the gateway sees it, for pages (any thread, sync): the owner's
    published copy, merged with what Redis holds. Never touches the tracker."""
    board = published
    now = time.time()
    views = {pk: board.get(pk, _UNKNOWN) for pk in pks}
    if settings.REDIS_URL and pks:
        from gateway.hotpath.redis_client import RedisUnavailable, call_sync

        try:
            values = call_sync(lambda client: client.hmget(HEALTH_KEY, [str(pk) for pk in pks]))
        except RedisUnavailable:
            pass  # this process's view only; the breaker logs the outage
        else:
            for pk, raw in zip(pks, values, strict=True):
                if raw is not None:
                    views[pk] = _merged(views[pk], orjson.loads(raw), now)
    return {pk: view.at(now) for pk, view in views.items()}


def mark_unavailable(pk: int, *, seconds: float) -> None:
    """An active probe found the instance unavailable (any thread): cool it down here, through
    the owner, and, through Redis, everywhere."""
    now = time.time()
    state = {
        "cooldown_until": now + seconds,
        "trips": 1,
        "last_failure_at": now,
        "status": "cooling",
        "at": now,
    }
    _post(pk, state)
    if settings.REDIS_URL:
        from gateway.hotpath.redis_client import RedisUnavailable, call_sync

        try:
            call_sync(lambda client: client.hset(HEALTH_KEY, str(pk), orjson.dumps(state)))
        except RedisUnavailable:
            pass  # the next probe publishes again; the breaker logs the outage


def mark_healthy(pk: int) -> None:
    """An operator ended the instance's cooldown (any thread): healthy here at once, through the
    owner, and, through Redis, in every process at its next sync tick."""
    now = time.time()
    _post(pk, {"reset_at": now})
    if settings.REDIS_URL:
        from gateway.hotpath.redis_client import RedisUnavailable, call_sync

        healthy = orjson.dumps(
            {
                "cooldown_until": None,
                "trips": 0,
                "last_failure_at": None,
                "status": "healthy",
                "at": now,
            }
        )
        try:
            call_sync(
                lambda client: (
                    client.pipeline()
                    .hset(HEALTH_KEY, str(pk), healthy)
                    .hset(RESETS_KEY, str(pk), repr(now))
                    .execute()
                )
            )
        except RedisUnavailable:
            pass  # this process only; the breaker logs the outage


class EmbeddedJob:
    """A periodic job run from the gateway's tick in embedded mode (no Redis; production
    runs it on Celery beat): at the first tick, then every `settings.<interval_setting>`
    seconds, never two runs at once."""

    def __init__(self, job: Callable[[], Awaitable[Any]], interval_setting: str) -> None:
        from gateway.outages import OutageLog

        self.job = job
        self.interval_setting = interval_setting
        self.last: float | None = None
        self.running = False
        # A failing run (the database down) is logged when it starts and ends, not at every run.
        self.outage = OutageLog(f"embedded job {getattr(job, '__name__', job)}", logger)

    async def __call__(self) -> None:
        if settings.REDIS_URL or self.running:
            return
        if self.last is not None and time.monotonic() - self.last < getattr(
            settings, self.interval_setting
        ):
            return
        self.running = True
        self.last = time.monotonic()
        try:
            await self.job()
        except Exception as exc:
            self.outage.failed(exc)
        else:
            self.outage.succeeded()
        finally:
            self.running = False


def _register() -> None:
    from gateway.hotpath.snapshot import holder
    from gateway.probes import probe_all
    from gateway.reporting.rollups import rollup_usage_in_thread

    if sync_health not in holder.tick_hooks:
        holder.tick_hooks.append(sync_health)
        holder.tick_hooks.append(EmbeddedJob(probe_all, "GATEWAY_PROBE_SECONDS"))
        holder.tick_hooks.append(EmbeddedJob(rollup_usage_in_thread, "GATEWAY_ROLLUP_SECONDS"))
        holder.tick_hooks.append(EmbeddedJob(purge_stored_responses, "GATEWAY_ROLLUP_SECONDS"))
        holder.tick_hooks.append(EmbeddedJob(reconcile_budgets, "GATEWAY_BUDGET_RECONCILE_SECONDS"))
        holder.tick_hooks.append(EmbeddedJob(detect_cost_anomalies, "GATEWAY_ANOMALY_SECONDS"))
        holder.tick_hooks.append(EmbeddedJob(deliver_alerts, "GATEWAY_ALERT_DELIVERY_SECONDS"))


async def purge_stored_responses() -> int:
    from gateway.db import in_thread
    from gateway.services import stored_responses_purge

    return await in_thread(stored_responses_purge)


async def reconcile_budgets() -> int:
    from gateway.budgets import budgets_reconcile
    from gateway.db import in_thread

    return len(await in_thread(budgets_reconcile))


async def detect_cost_anomalies() -> int:
    from gateway.db import in_thread
    from gateway.reporting.anomalies import detect_anomalies

    return len(await in_thread(detect_anomalies))


async def deliver_alerts() -> int:
    from gateway.alerts import alerts_deliver
    from gateway.db import in_thread

    return await in_thread(alerts_deliver)


_register()
