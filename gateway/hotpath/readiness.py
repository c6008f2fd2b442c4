"""Readiness (`/readyz`): may a load balancer send this worker traffic?

A worker is ready when all of these hold:

- its routing snapshot is loaded (a worker that has served nothing yet starts
  the load here, in the background, and is ready once it is in);
- the database answers `SELECT 1` within GATEWAY_READY_TIMEOUT_SECONDS;
- Redis, when REDIS_URL is set, answers PING within the same bound.

GATEWAY_READY_CHECKS (default `database,redis`) names the dependencies checked;
the snapshot always is. (Left out, a dependency reads "not checked".)

Otherwise it answers 503 in the OpenAI error shape, naming what is not ready.
`/healthz` stays liveness: it answers as long as the event loop runs.

Cheap under a load balancer's polling: one verdict is kept for
GATEWAY_READY_CACHE_SECONDS, and concurrent callers share one check. The checks
run in two threads of their own (never the threads the pages and the usage
writer use); a check that hangs past the bound leaves its thread waiting and
the worker reported not ready until it returns, rather than piling up threads.
The Redis ping bypasses the breaker (gateway/hotpath/redis_client.py): readiness
observes Redis, it does not steer the hot path. The verdict is logged when it
changes, never per probe.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import connection

from gateway.hotpath.snapshot import holder

logger = logging.getLogger(__name__)

SKIPPED = (
    "not configured",
    "not checked",
)  # Redis without REDIS_URL; left out by GATEWAY_READY_CHECKS

_threads = ThreadPoolExecutor(max_workers=2, thread_name_prefix="readyz")


@dataclass(frozen=True, slots=True)
class Verdict:
    ready: bool
    checks: dict[str, str]  # name -> "ok" | one of SKIPPED | why it is not ready
    config_version: int | None
    checked_at: float = field(default=0.0)

    def problems(self) -> list[str]:
        return [
            f"{name}: {state}"
            for name, state in self.checks.items()
            if state != "ok" and state not in SKIPPED
        ]


def _database_ping() -> None:
    # The thread keeps its connection between checks; one that failed is dropped, so
    # the next check after a database restart connects afresh.
    try:
        connection.close_if_unusable_or_obsolete()
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception:
        connection.close()
        raise


def _redis_ping() -> None:
    from gateway.hotpath.redis_client import redis_sync

    redis_sync().ping()  # socket timeouts of 0.5 s (or GATEWAY_REDIS_TIMEOUT_SECONDS when longer)


class Readiness:
    def __init__(self) -> None:
        self._verdict: Verdict | None = None
        self._pending: asyncio.Task[Verdict] | None = None
        self._in_flight: dict[str, Future[None]] = {}  # checks still running in their threads
        self._snapshot_load: asyncio.Task[Any] | None = None
        self._was_ready: bool | None = None

    async def verdict(self) -> Verdict:
        cached = self._verdict
        if (
            cached is not None
            and time.monotonic() - cached.checked_at < settings.GATEWAY_READY_CACHE_SECONDS
        ):
            return cached
        if self._pending is None or self._pending.done():
            self._pending = asyncio.get_running_loop().create_task(
                self._check_and_keep(), name="readyz-check"
            )
        # Shared by every caller meanwhile; a caller that goes away does not cancel it for the
        # others.
        return await asyncio.shield(self._pending)

    async def _check_and_keep(self) -> Verdict:
        verdict = await self._check()
        self._verdict = verdict
        self._log_change(verdict)
        return verdict

    async def _check(self) -> Verdict:
        bound = settings.GATEWAY_READY_TIMEOUT_SECONDS
        wanted = settings.GATEWAY_READY_CHECKS
        dependencies: dict[str, Callable[[], None]] = {}
        if "database" in wanted:
            dependencies["database"] = _database_ping
        if "redis" in wanted and settings.REDIS_URL:
            dependencies["redis"] = _redis_ping
        futures = {name: self._start(name, check) for name, check in dependencies.items()}
        waiting = [asyncio.wrap_future(future) for future in futures.values()]
        load = self._snapshot_load_task()
        if load is not None:
            waiting.append(asyncio.ensure_future(asyncio.shield(load)))
        if waiting:
            await asyncio.wait(waiting, timeout=bound)
        for (
            waiter
        ) in waiting:  # the checks and the load carry on past the bound; their waiters are dropped
            waiter.add_done_callback(_retrieve)
        checks = {"routing_snapshot": self._snapshot_state()}
        checks |= {name: _outcome(future, bound) for name, future in futures.items()}
        for name in ("database", "redis"):
            if name not in checks:
                checks[name] = (
                    "not configured"
                    if name == "redis" and not settings.REDIS_URL
                    else "not checked"
                )
        config = holder.peek()
        return Verdict(
            ready=all(state in SKIPPED or state == "ok" for state in checks.values()),
            checks=checks,
            config_version=config.version if config else None,
            checked_at=time.monotonic(),
        )

    def _start(self, name: str, check: Callable[[], None]) -> Future[None]:
        running = self._in_flight.get(name)
        if running is not None and not running.done():
            return running  # still hung from an earlier check: wait on it, do not start another
        future = self._in_flight[name] = _threads.submit(check)
        return future

    def _snapshot_load_task(self) -> asyncio.Task[Any] | None:
        """None when the snapshot is loaded; else the background load, started if none is
        running."""
        if holder.peek() is not None:
            return None
        load = self._snapshot_load
        if load is None or load.done():
            if load is not None:
                _retrieve(load)
            load = self._snapshot_load = asyncio.get_running_loop().create_task(
                holder.get(), name="readyz-snapshot-load"
            )
        return load

    def _snapshot_state(self) -> str:
        if holder.peek() is not None:
            return "ok"
        load = self._snapshot_load
        if load is None or not load.done():
            return "loading"
        exc = None if load.cancelled() else load.exception()
        return f"not loaded ({_describe(exc)})" if exc is not None else "not loaded"

    def _log_change(self, verdict: Verdict) -> None:
        if verdict.ready is self._was_ready:
            return
        if verdict.ready:
            logger.info("ready (config version %s)", verdict.config_version)
        else:
            logger.warning("not ready: %s", "; ".join(verdict.problems()))
        self._was_ready = verdict.ready


def _outcome(future: Future[None], bound: float) -> str:
    if not future.done():
        return f"no answer within {bound:g} s"
    if future.cancelled():
        return "check cancelled"
    exc = future.exception()
    return "ok" if exc is None else _describe(exc)


def _describe(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}"[:200] if lines else type(exc).__name__


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark a dropped waiter's outcome as seen (no "exception was never retrieved" at
    collection)."""
    if future.done() and not future.cancelled():
        future.exception()


readiness = Readiness()
