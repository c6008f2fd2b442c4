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

The response cache has a breaker of its own (`cache_breaker()`, `call_cache()`): its
look-ups are the Redis calls a saturated worker makes most, and on such a worker the
event loop reads Redis's answer late (tens of ms: it is running other requests), not
because Redis is slow. So a cache command's bound is GATEWAY_REDIS_TIMEOUT_SECONDS plus
the loop's current lag (`LoopLag`: a timer notes how late it runs), capped at
GATEWAY_CACHE_LAG_ALLOWANCE_SECONDS, and a cache timeout opens only the cache's breaker:
rate limits, budgets and health keep using Redis. A hung Redis still costs a cache
look-up at most the bound plus the lag every request of that loop suffers anyway, twice,
then nothing until the back-off ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
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
_cache_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aredis.Redis] = (
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
        label: str = "",
    ) -> None:
        self.label = label  # " for the response cache": which breaker a log line is about
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
        """May this caller use Redis now? When True and the breaker is open, the caller is the
        trial."""
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
                "Redis back%s after %.1f s (%d calls used local state meanwhile)",
                self.label,
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
                    "Redis unavailable%s: %s, using local state (retrying every %g s)",
                    self.label,
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
                "Redis still unavailable%s after %.0f s: %s; %d calls used local state, %d retries "
                "failed",
                self.label,
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


@functools.cache
def cache_breaker() -> RedisBreaker:
    return RedisBreaker(
        retry_seconds=settings.GATEWAY_REDIS_RETRY_SECONDS,
        summary_seconds=settings.GATEWAY_REDIS_LOG_SUMMARY_SECONDS,
        label=" for the response cache",
    )


@functools.cache
def capacity_breaker() -> RedisBreaker:
    return RedisBreaker(
        retry_seconds=settings.GATEWAY_REDIS_RETRY_SECONDS,
        summary_seconds=settings.GATEWAY_REDIS_LOG_SUMMARY_SECONDS,
        label=" for reserved capacity slots",
    )


class LoopLag:
    """How late an event loop runs its callbacks right now, in seconds.

    A timer every `INTERVAL` seconds notes how late it ran; `current()` is the larger of the
    last lateness (decaying by half a tick) and how overdue the next tick is at the moment of
    asking (the loop is busy now). The clock is time.monotonic(), not the loop's: uvloop's
    advances once per pass of the loop, so a long pass does not show on it. Costs one timer
    callback per INTERVAL.
    """

    INTERVAL = 0.01

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.lag = 0.0
        self.due = time.monotonic() + self.INTERVAL
        loop.call_later(self.INTERVAL, self._tick)

    def _tick(self) -> None:
        now = time.monotonic()
        late = max(0.0, now - self.due)
        self.lag = late if late >= self.lag else self.lag / 2
        self.due = now + self.INTERVAL
        self.loop.call_later(self.INTERVAL, self._tick)

    def current(self) -> float:
        return max(self.lag, time.monotonic() - self.due)


_loop_lags: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopLag] = (
    weakref.WeakKeyDictionary()
)


def loop_lag() -> LoopLag:
    loop = asyncio.get_running_loop()
    lag = _loop_lags.get(loop)
    if lag is None:
        lag = _loop_lags[loop] = LoopLag(loop)
    return lag


# What counts as "Redis is not there": refused, reset, timed out, or a protocol-level error
# (asyncio's and the socket's TimeoutError are OSErrors).
_FAILURES = (redis.RedisError, OSError)


async def call_async(command: Callable[[Any], Awaitable[T]]) -> T:
    """Run `command(client)` on this loop's client within the timeout, through the breaker."""
    return await _call(command, breaker(), settings.GATEWAY_REDIS_TIMEOUT_SECONDS, redis_async)


async def call_capacity(command: Callable[[Any], Awaitable[T]]) -> T:
    """call_async() for reserved capacity's slots (gateway/hotpath/capacity_slots.py): a breaker
    of their own, so that late answers to other callers (a config poll, a rate limit) do not
    send capacity back to per-process counting, and the loop's lag on top of the bound."""
    return await _call(
        command,
        capacity_breaker(),
        settings.GATEWAY_REDIS_TIMEOUT_SECONDS,
        redis_async,
        lag_allowance=settings.GATEWAY_CACHE_LAG_ALLOWANCE_SECONDS,
    )


async def call_cache(command: Callable[[Any], Awaitable[T]]) -> T:
    """call_async() for the response cache: its own breaker, and the loop's lag on top of the
    bound."""
    return await _call(
        command,
        cache_breaker(),
        settings.GATEWAY_REDIS_TIMEOUT_SECONDS,
        redis_async_for_cache,
        lag_allowance=settings.GATEWAY_CACHE_LAG_ALLOWANCE_SECONDS,
    )


async def _call(
    command: Callable[[Any], Awaitable[T]],
    gate: RedisBreaker,
    bound_seconds: float,
    client: Callable[[], aredis.Redis],
    *,
    lag_allowance: float = 0.0,
) -> T:
    if not gate.allow():
        raise RedisUnavailable(gate.reason)
    try:
        if lag_allowance:
            async with _lag_aware_timeout(bound_seconds, lag_allowance):
                result = await command(client())
        else:
            async with asyncio.timeout(bound_seconds):
                result = await command(client())
    except _FAILURES as exc:
        gate.failed(exc)
        raise RedisUnavailable(gate.reason) from None
    except BaseException:
        gate.abandoned()
        raise
    gate.succeeded()
    return result


@contextlib.asynccontextmanager
async def _lag_aware_timeout(bound_seconds: float, allowance: float) -> AsyncIterator[None]:
    """asyncio.timeout(bound_seconds), except that when the bound passes while the loop is lagging,
    the deadline moves on by the lag, again while it lags, `allowance` seconds in all at most.

    On a saturated loop every await of a command (connect, send, read) waits for a whole pass of
    the loop over the other requests: an answer Redis sent in time is read a pass or more later.
    On an idle loop (lag under a millisecond) the bound is the bound.
    """
    loop = asyncio.get_running_loop()
    lag = loop_lag()
    async with asyncio.timeout(None) as timeout:
        end = time.monotonic() + bound_seconds + allowance  # the latest it may ever end
        handles: list[asyncio.TimerHandle] = []

        def expire() -> None:
            now = time.monotonic()
            late = lag.current()
            if late > 0.001 and now < end:
                handles[0] = loop.call_later(min(late, end - now), expire)
            else:
                timeout.reschedule(loop.time())

        handles.append(loop.call_later(bound_seconds, expire))
        try:
            yield
        finally:
            handles[0].cancel()


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


POOL_CONNECTIONS = 64  # per event loop and client (the shared state's, the cache's)

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
    return _client_for_loop(_async_clients, settings.GATEWAY_REDIS_TIMEOUT_SECONDS)


def redis_async_for_cache() -> aredis.Redis:
    """The cache's own client (and connections): its socket timeout leaves room for the loop's lag,
    call_cache() bounds each command."""
    return _client_for_loop(
        _cache_clients,
        settings.GATEWAY_REDIS_TIMEOUT_SECONDS + settings.GATEWAY_CACHE_LAG_ALLOWANCE_SECONDS,
    )


def _client_for_loop(
    clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aredis.Redis], timeout: float
) -> aredis.Redis:
    loop = asyncio.get_running_loop()
    client = clients.get(loop)
    if client is None:
        # BlockingConnectionPool, not redis-py's default ConnectionPool: the default one checks a
        # connection (an await, so a pass of the loop) while holding the pool's lock, so N
        # concurrent commands queued N passes behind each other, which on a busy loop is
        # N x tens of ms (measured: bench/cache_cost.py --concurrency). This one checks
        # outside its lock. Its size bounds the connections per loop; a command that finds
        # none free waits within the caller's bound like any other.
        pool = aredis.BlockingConnectionPool.from_url(
            settings.REDIS_URL,
            max_connections=POOL_CONNECTIONS,
            timeout=None,
            retry=AsyncRetry(NoBackoff(), 0),
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
        )
        client = aredis.Redis.from_pool(pool)
        clients[loop] = client
    return client
