"""One Redis client per process (sync) and per event loop (async), behind one circuit breaker.

Redis holds shared state only (rate-limit counts, health transitions, the config
version); every use has a process-local fallback. So a Redis that is down or
hung must cost a request at most GATEWAY_REDIS_TIMEOUT_SECONDS, and only once:

- Every command on the event loop runs within GATEWAY_REDIS_TIMEOUT_SECONDS
  (connect included), with no client-side retries. The sync client (pages,
  configuration writes, Celery tasks: never a /v1 request) waits up to 0.5 s.
- Two failures in a row open the breaker (one late answer, say while the event
  loop was busy, only sends that one call to its fallback, silently): for
  GATEWAY_REDIS_RETRY_SECONDS every caller gets `RedisUnavailable` at once,
  without touching the network, and uses its local fallback. Then one caller (a
  request or the background tick) tries again: on success the breaker closes,
  on failure it stays open for another back-off.
- The outage is logged once when it starts ("Redis unavailable: <reason>, using
  local state"), then as a summary every GATEWAY_REDIS_LOG_SUMMARY_SECONDS while
  it lasts, and once when it ends ("Redis back after N s"): never per request.

The breaker is per process and thread-safe (the event loop and the page threads
share it); its fast path, Redis up, takes no lock.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis
import redis.asyncio as aredis
from django.conf import settings
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

logger = logging.getLogger(__name__)

T = TypeVar("T")

LOG_SUMMARY_SECONDS = 60.0

_async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aredis.Redis] = (
    weakref.WeakKeyDictionary()
)


class RedisUnavailable(Exception):
    """Redis is down, hung or the breaker is open: use the local fallback."""


class RedisBreaker:
    """Closed (Redis in use) or open (skip Redis until `retry_at`, then one trial at a time)."""

    def __init__(
        self,
        *,
        retry_seconds: float,
        summary_seconds: float = LOG_SUMMARY_SECONDS,
        failures_to_open: int = 2,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.retry_seconds = retry_seconds
        self.failures_to_open = failures_to_open
        self.failures = 0  # in a row, while closed
        self.summary_seconds = summary_seconds
        self.clock = clock
        self._lock = threading.Lock()
        self.down_since: float | None = None  # None: closed
        self.retry_at = 0.0
        self.trial = False
        self.reason = ""
        self.skipped = 0  # calls answered locally since the last log line
        self.failed_trials = 0
        self._summary_at = 0.0

    @property
    def is_open(self) -> bool:
        return self.down_since is not None

    def allow(self) -> bool:
        """May this caller use Redis now? When True and the breaker is open, the caller is the trial."""
        if self.down_since is None:
            return True
        with self._lock:
            if self.down_since is None:
                return True
            now = self.clock()
            if self.trial or now < self.retry_at:
                self.skipped += 1
                self._maybe_summarise(now)
                return False
            self.trial = True
            return True

    def succeeded(self) -> None:
        if self.down_since is None:
            if self.failures:
                self.failures = 0
            return
        with self._lock:
            if self.down_since is None:
                return
            logger.warning(
                "Redis back after %.1f s (%d calls used local state meanwhile)",
                self.clock() - self.down_since,
                self.skipped,
            )
            self.down_since = None
            self.failures = 0
            self.trial = False
            self.skipped = self.failed_trials = 0

    def failed(self, exc: BaseException) -> None:
        with self._lock:
            now = self.clock()
            self.trial = False
            self.reason = describe(exc)
            if self.down_since is None:
                self.failures += 1
                if self.failures < self.failures_to_open:
                    return
            self.retry_at = now + self.retry_seconds
            if self.down_since is None:
                self.down_since = now
                self._summary_at = now + self.summary_seconds
                self.skipped = self.failed_trials = 0
                logger.warning(
                    "Redis unavailable: %s, using local state (retrying every %g s)",
                    self.reason,
                    self.retry_seconds,
                )
            else:
                self.failed_trials += 1
                self._maybe_summarise(now)

    def abandoned(self) -> None:
        """The caller was cancelled before Redis answered: no verdict, free the trial."""
        if self.trial:
            with self._lock:
                self.trial = False

    def _maybe_summarise(self, now: float) -> None:
        if self.down_since is not None and now >= self._summary_at:
            self._summary_at = now + self.summary_seconds
            logger.warning(
                "Redis still unavailable after %.0f s: %s; %d calls used local state, "
                "%d retries failed",
                now - self.down_since,
                self.reason,
                self.skipped,
                self.failed_trials,
            )
            self.skipped = self.failed_trials = 0


def describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError | redis.TimeoutError):
        return "no answer within the timeout (hung or overloaded)"
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@functools.cache
def breaker() -> RedisBreaker:
    return RedisBreaker(
        retry_seconds=settings.GATEWAY_REDIS_RETRY_SECONDS,
        summary_seconds=settings.GATEWAY_REDIS_LOG_SUMMARY_SECONDS,
    )


# What counts as "Redis is not there": refused, reset, timed out, or a protocol-level error
# (asyncio's and the socket's TimeoutError are OSErrors).
_FAILURES = (redis.RedisError, OSError)


async def call_async(command: Callable[[Any], Awaitable[T]]) -> T:
    """Run `command(client)` on this loop's client within the timeout, through the breaker."""
    gate = breaker()
    if not gate.allow():
        raise RedisUnavailable(gate.reason)
    try:
        async with asyncio.timeout(settings.GATEWAY_REDIS_TIMEOUT_SECONDS):
            result = await command(redis_async())
    except _FAILURES as exc:
        gate.failed(exc)
        raise RedisUnavailable(gate.reason) from None
    except BaseException:
        gate.abandoned()
        raise
    gate.succeeded()
    return result


def call_sync(command: Callable[[Any], T]) -> T:
    """Run `command(client)` on the process's sync client (socket timeouts), through the breaker."""
    gate = breaker()
    if not gate.allow():
        raise RedisUnavailable(gate.reason)
    try:
        result = command(redis_sync())
    except _FAILURES as exc:
        gate.failed(exc)
        raise RedisUnavailable(gate.reason) from None
    except BaseException:
        gate.abandoned()
        raise
    gate.succeeded()
    return result


# The sync client serves pages, configuration writes and Celery tasks, never a /v1 request:
# it may wait longer, so that a busy Redis does not lose a config version publish.
SYNC_TIMEOUT_SECONDS = 0.5


@functools.cache
def redis_sync() -> redis.Redis:
    # No client-side retries: redis-py 6 retries 3 times with a back-off by default, which
    # turned one hung Redis into seconds per request. The breaker decides when to retry.
    timeout = max(SYNC_TIMEOUT_SECONDS, settings.GATEWAY_REDIS_TIMEOUT_SECONDS)
    return redis.Redis.from_url(
        settings.REDIS_URL,
        retry=Retry(NoBackoff(), 0),
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
    )


def redis_async() -> aredis.Redis:
    loop = asyncio.get_running_loop()
    client = _async_clients.get(loop)
    if client is None:
        timeout = settings.GATEWAY_REDIS_TIMEOUT_SECONDS
        client = aredis.Redis.from_url(
            settings.REDIS_URL,
            retry=AsyncRetry(NoBackoff(), 0),
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
        )
        _async_clients[loop] = client
    return client
