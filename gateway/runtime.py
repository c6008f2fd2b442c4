"""Process-wide routing state, and its sharing across gateway processes through Redis.

Each process keeps a RoutingState (health circuits, rotation counters, latency
and in-flight stats). Health transitions are what other processes must know:
every transition is queued and, on the next sync tick, written to the Redis hash
`sb:health`; the same tick reads the hash and merges what other processes saw.
Without Redis the state simply stays in process (embedded mode). Times are
wall-clock seconds so that processes on different hosts agree.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from django.conf import settings

from gateway.engine.health import HealthTracker, HealthView
from gateway.engine.planner import RoutingState

logger = logging.getLogger(__name__)

HEALTH_KEY = "sb:health"

_pending: dict[int, dict[str, float | int | None]] = {}


def _queue_transition(pk: int, view: HealthView) -> None:
    _pending[pk] = {
        "cooldown_until": view.cooldown_until,
        "trips": view.trips,
        "last_failure_at": view.last_failure_at,
        "status": view.status,
        "at": time.time(),
    }


routing = RoutingState(health=HealthTracker(on_change=_queue_transition), clock=time.time)


async def sync_health() -> None:
    """Publish this process's transitions and merge everyone else's (one round trip each way)."""
    if not settings.REDIS_URL:
        return
    from gateway.redis_client import redis_async

    client = redis_async()
    if _pending:
        mapping = {str(pk): orjson.dumps(state) for pk, state in _pending.items()}
        _pending.clear()
        await client.hset(HEALTH_KEY, mapping=mapping)
    _merge(await client.hgetall(HEALTH_KEY))


def _merge(raw: dict[bytes, bytes]) -> None:
    for raw_pk, raw_state in raw.items():
        state = orjson.loads(raw_state)
        routing.health.apply_remote(
            int(raw_pk),
            cooldown_until=state.get("cooldown_until"),
            trips=int(state.get("trips") or 0),
            last_failure_at=state.get("last_failure_at"),
        )


def health_snapshot(pks: list[int]) -> dict[int, HealthView]:
    """Each instance's circuit as the gateway sees it (for pages: sync, merges Redis first)."""
    if settings.REDIS_URL and pks:
        from gateway.redis_client import redis_sync

        try:
            values = redis_sync().hmget(HEALTH_KEY, [str(pk) for pk in pks])
        except Exception:
            logger.warning("Redis unreachable; showing this process's health view", exc_info=True)
        else:
            _merge({str(pk).encode(): v for pk, v in zip(pks, values, strict=True) if v is not None})
    now = time.time()
    return {pk: routing.health.state(pk, now) for pk in pks}


def mark_unavailable(pk: int, *, seconds: float) -> None:
    """An active probe found the instance unavailable: cool it down here and, through Redis, everywhere."""
    now = time.time()
    routing.health.apply_remote(pk, cooldown_until=now + seconds, trips=1, last_failure_at=now)
    _queue_transition(pk, routing.health.state(pk, now))
    if settings.REDIS_URL:
        from gateway.redis_client import redis_sync

        try:
            redis_sync().hset(HEALTH_KEY, str(pk), orjson.dumps(_pending.pop(pk)))
        except Exception:
            logger.warning("could not publish a probe result to Redis", exc_info=True)


class EmbeddedJob:
    """A periodic job run from the gateway's tick in embedded mode (no Redis; production
    runs it on Celery beat): at the first tick, then every `settings.<interval_setting>`
    seconds, never two runs at once."""

    def __init__(self, job: Callable[[], Awaitable[Any]], interval_setting: str) -> None:
        self.job = job
        self.interval_setting = interval_setting
        self.last: float | None = None
        self.running = False

    async def __call__(self) -> None:
        if settings.REDIS_URL or self.running:
            return
        if self.last is not None and time.monotonic() - self.last < getattr(settings, self.interval_setting):
            return
        self.running = True
        self.last = time.monotonic()
        try:
            await self.job()
        finally:
            self.running = False


def _register() -> None:
    from gateway.probes import probe_all
    from gateway.rollups import rollup_usage_in_thread
    from gateway.snapshot import holder

    if sync_health not in holder.tick_hooks:
        holder.tick_hooks.append(sync_health)
        holder.tick_hooks.append(EmbeddedJob(probe_all, "GATEWAY_PROBE_SECONDS"))
        holder.tick_hooks.append(EmbeddedJob(rollup_usage_in_thread, "GATEWAY_ROLLUP_SECONDS"))


_register()
