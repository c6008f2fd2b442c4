"""Reserved capacity shared by every worker: a concurrency slot in Redis per request on it.

Capacity-first (gateway/engine/selection.py) judges a reserved instance saturated from its
requests in flight; each process only sees its own, so with N workers a capacity of C
admitted N x C. The rules that make C hold across workers and hosts:

- **Which attempts take a slot.** An attempt on a reserved instance whose capacity is in
  `concurrent_requests`, picked by a `capacity_first` group (not auto's ranking, not the
  last resort when everything cools down). Throughput capacity (tokens per second) stays
  measured per process.
- **The slot.** `sb:capacity:<instance pk>` is a sorted set of leases (one per attempt in
  flight, scored by its expiry in Redis's own clock). One Lua script drops the expired
  leases and adds this one only if fewer than the capacity remain: the check and the
  claim are atomic, so two workers never both take the last slot.
- **Full.** No slot left: the attempt is undone (no verdict, no place in the attempt
  budget: `AttemptPlan.full`), the instance counts as saturated in this process for
  FULL_SECONDS, and the next pick spills over to the token-billed members, or, with none,
  queues on a reserved one as before (without a slot: it is over capacity by then).
- **Release.** When the attempt gets its outcome (an answer, the first byte of a stream,
  a failure, a cut, a cancellation: whenever the process's own in-flight count ends), its
  lease is removed, off the request's path.
- **A killed worker.** Its leases expire on their own, LEASE_MARGIN_SECONDS after the
  balancer's request timeout: a slot never stays taken longer than a request may last.
- **Redis late or away.** Claims and releases have a breaker of their own
  (redis_client.call_capacity: other callers' late answers do not turn it over) and wait
  GATEWAY_REDIS_TIMEOUT_SECONDS plus the event loop's lag (as the cache's look-ups do: on a
  busy worker the answer is read late). One late answer (that breaker still closed): the lease is removed in case the claim landed,
  and the instance counts as full for this request (it spills: never over capacity).
  Redis away (the breaker open): the claim succeeds locally, and saturation is judged per
  process again (N x C with N workers) until Redis answers. Never an error.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Coroutine
from typing import Any

from gateway.engine.planner import Attempt
from gateway.engine.selection import CAPACITY_FIRST
from gateway.hotpath.redis_client import (
    RedisUnavailable,
    call_capacity,
    capacity_breaker,
)

logger = logging.getLogger(__name__)

KEY_PREFIX = "sb:capacity:"
LEASE_MARGIN_SECONDS = 5.0
FULL_SECONDS = 0.1  # a full instance is not asked again by this process for this long

# KEYS[1]: the instance's leases; ARGV: capacity, lease length (ms), lease id. 1: claimed.
CLAIM = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  return 0
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
return 1
"""


def takes_slot(attempt: Attempt) -> bool:
    instance = attempt.instance
    return (
        instance.reserved
        and instance.capacity > 0
        and instance.capacity_unit == "concurrent_requests"
        and attempt.route.group.selection_policy == CAPACITY_FIRST
        and attempt.ranked is None
        and not attempt.last_resort
    )


def key_for(pk: int) -> str:
    return f"{KEY_PREFIX}{pk}"


class Slots:
    """This process's leases, by attempt. Touched only from the event loop."""

    def __init__(self) -> None:
        self._held: dict[int, tuple[Attempt, str]] = {}  # id(attempt) -> (attempt, lease)
        self._background: set[asyncio.Task[Any]] = set()

    async def claim(self, attempt: Attempt, lease_seconds: float) -> bool:
        """A slot for the attempt: True when taken (or Redis is away), False when the instance is full."""
        instance = attempt.instance
        lease = uuid.uuid4().hex
        key = key_for(instance.pk)
        try:
            claimed = await call_capacity(
                lambda client: client.eval(
                    CLAIM, 1, key, instance.capacity, int(lease_seconds * 1000), lease
                )
            )
        except RedisUnavailable:
            if capacity_breaker().is_open:
                return True  # Redis away: per-process counting only; the breaker logs it
            # One late answer: the claim may have landed. Take it back, and count the
            # instance full rather than risk going over its capacity.
            self._spawn(_remove(key, lease))
            return False
        if not claimed:
            return False
        self._held[id(attempt)] = (attempt, lease)
        return True

    def release(self, attempt: Attempt) -> None:
        """The attempt has its outcome: free its slot (a task, off the request's path)."""
        held = self._held.pop(id(attempt), None)
        if held is None:
            return
        self._spawn(_remove(key_for(attempt.instance.pk), held[1]))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def held(self) -> int:
        return len(self._held)


async def _remove(key: str, lease: str) -> None:
    try:
        await call_capacity(lambda client: client.zrem(key, lease))
    except RedisUnavailable:
        pass  # the lease expires on its own


slots = Slots()
