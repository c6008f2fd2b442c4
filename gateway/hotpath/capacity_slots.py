"""Reserved capacity shared by every worker: concurrency slots and measured throughput in Redis.

Capacity-first (gateway/engine/selection.py) judges a reserved instance saturated from its
requests in flight or the tokens per second it served; each process only sees its own, so
with N workers a capacity of C admitted N x C. The rules that make C hold across workers
and hosts:

- **Which attempts are checked.** An attempt on a reserved instance with a capacity
  (`concurrent_requests` or `tokens_per_second`), picked by a `capacity_first` group (not
  auto's ranking, not the last resort when everything cools down): `checks_capacity`.
- **Concurrency: a slot.** `sb:capacity:<instance pk>` is a sorted set of leases (one per
  attempt in flight, scored by its expiry in Redis's own clock). One Lua script drops the
  expired leases and adds this one only if fewer than the capacity remain: the check and the
  claim are atomic, so two workers never both take the last slot.
- **Throughput: a shared count.** `sb:throughput:<instance pk>` is a hash of tokens served per
  second of Redis's clock (field: the Unix second, value: prompt + completion tokens), the
  key expiring THROUGHPUT_WINDOW + 1 s after its last answer. Every answer from a reserved
  tokens-per-second instance (whoever picked it) adds its tokens to the current second, off
  the request's path, and drops the seconds that left the window. The claim is the same
  script reading the window: the instance is full when the tokens of the last
  THROUGHPUT_WINDOW seconds (the current one included) reach capacity x THROUGHPUT_WINDOW,
  the same measure as the per-process one (selection.LoadStats.throughput), over every
  worker's answers. Tokens are known only once answered, so requests already in flight
  when it fills still land on it (as in one process).
- **Full.** No room: the attempt is undone (no verdict, no place in the attempt budget:
  `AttemptPlan.full`), and the next pick spills over to the token-billed members, or, with
  none, queues on a reserved one as before. The instance counts as saturated in this process
  until `full_until`: for throughput the script says how long the window stays full if no
  more tokens come (the time until enough of its oldest seconds leave it), at least
  GATEWAY_CAPACITY_FULL_SECONDS; for concurrency (a slot may free any moment)
  GATEWAY_CAPACITY_FULL_SECONDS (0.1 s, at least 0.01: below that nearly every request
  that spills pays a Redis round trip first).
- **Release.** When the attempt gets its outcome (an answer, the first byte of a stream,
  a failure, a cut, a cancellation: whenever the process's own in-flight count ends), its
  lease is removed, off the request's path. A throughput claim holds nothing.
- **A killed worker.** Its leases expire on their own, LEASE_MARGIN_SECONDS after the
  balancer's request timeout: a slot never stays taken longer than a request may last.
- **Redis late or away.** Claims, releases and token counts have a breaker of their own
  (redis_client.call_capacity: other callers' late answers do not turn it over) and wait
  GATEWAY_REDIS_TIMEOUT_SECONDS plus the event loop's lag (as the cache's look-ups do: on a
  busy worker the answer is read late). One late answer (that breaker still closed): a lease
  is removed in case the claim landed, and the instance counts as full for this request (it
  spills: never over capacity). Redis away (the breaker open): the claim succeeds locally,
  and saturation is judged per process again (N x C with N workers: in flight, or the tokens
  this process served) until Redis answers; the token counts not sent meanwhile are lost
  (the shared window is short of them for at most THROUGHPUT_WINDOW seconds). Never an error.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Coroutine
from typing import Any

from django.conf import settings

from gateway.engine.planner import Attempt
from gateway.engine.selection import CAPACITY_FIRST, THROUGHPUT_WINDOW, TOKENS_PER_SECOND
from gateway.engine.types import InstanceSpec
from gateway.hotpath.redis_client import (
    RedisUnavailable,
    call_capacity,
    capacity_breaker,
)

logger = logging.getLogger(__name__)

KEY_PREFIX = "sb:capacity:"
THROUGHPUT_PREFIX = "sb:throughput:"
LEASE_MARGIN_SECONDS = 5.0
CONCURRENT_REQUESTS = "concurrent_requests"
WINDOW = int(THROUGHPUT_WINDOW)  # whole seconds: the shared count is kept per second
ROOM = -1  # the claim script's answer when the instance has room

# KEYS[1]: the instance's leases (concurrency) or its tokens per second (throughput).
# ARGV: unit ('c' or 't'), capacity, lease length (ms) or window (s), lease id.
# Answers -1 (ROOM: a slot taken, or the throughput below capacity) or, full, how many ms it
# stays full for sure (0 for concurrency: a slot may free any moment).
CLAIM = """
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local capacity = tonumber(ARGV[2])
if ARGV[1] == 'c' then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms)
  if redis.call('ZCARD', KEYS[1]) >= capacity then
    return 0
  end
  redis.call('ZADD', KEYS[1], now_ms + tonumber(ARGV[3]), ARGV[4])
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]))
  return -1
end
local window = tonumber(ARGV[3])
local now = tonumber(t[1])
local limit = capacity * window
local seconds = {}
local total = 0
local fields = redis.call('HGETALL', KEYS[1])
for i = 1, #fields, 2 do
  local second = tonumber(fields[i])
  if second > now - window then
    local tokens = tonumber(fields[i + 1])
    total = total + tokens
    table.insert(seconds, {second, tokens})
  end
end
if total < limit then
  return -1
end
table.sort(seconds, function(a, b) return a[1] < b[1] end)
for _, entry in ipairs(seconds) do
  total = total - entry[2]
  if total < limit then
    return math.max((entry[1] + window) * 1000 - now_ms, 0)
  end
end
return 0
"""

# KEYS[1]: the instance's tokens per second; ARGV: tokens, window (s).
SERVED = """
local now = tonumber(redis.call('TIME')[1])
local window = tonumber(ARGV[2])
redis.call('HINCRBY', KEYS[1], now, tonumber(ARGV[1]))
for _, second in ipairs(redis.call('HKEYS', KEYS[1])) do
  if tonumber(second) <= now - window then
    redis.call('HDEL', KEYS[1], second)
  end
end
redis.call('EXPIRE', KEYS[1], window + 1)
return 1
"""


def checks_capacity(attempt: Attempt) -> bool:
    """Is the attempt checked against its instance's capacity shared by every worker?"""
    instance = attempt.instance
    return (
        instance.reserved
        and instance.capacity > 0
        and instance.capacity_unit in (CONCURRENT_REQUESTS, TOKENS_PER_SECOND)
        and attempt.route.group.selection_policy == CAPACITY_FIRST
        and attempt.ranked is None
        and not attempt.last_resort
    )


def takes_slot(attempt: Attempt) -> bool:
    """Does the attempt hold a concurrency slot (released with its outcome)?"""
    return checks_capacity(attempt) and attempt.instance.capacity_unit == CONCURRENT_REQUESTS


def counts_tokens(instance: InstanceSpec) -> bool:
    """Are the tokens it serves added to the shared throughput count?"""
    return (
        instance.reserved and instance.capacity > 0 and instance.capacity_unit == TOKENS_PER_SECOND
    )


def full_seconds() -> float:
    """How long a full instance counts as saturated in this process, at least."""
    return float(settings.GATEWAY_CAPACITY_FULL_SECONDS)


def key_for(pk: int) -> str:
    return f"{KEY_PREFIX}{pk}"


def throughput_key_for(pk: int) -> str:
    return f"{THROUGHPUT_PREFIX}{pk}"


class Slots:
    """This process's leases, by attempt. Touched only from the event loop."""

    def __init__(self) -> None:
        self._held: dict[int, tuple[Attempt, str]] = {}  # id(attempt) -> (attempt, lease)
        self._background: set[asyncio.Task[Any]] = set()
        # The last refused claim's wait (s) for sure before the instance has room: 0 unknown.
        self.full_for = 0.0

    async def claim(self, attempt: Attempt, lease_seconds: float) -> bool:
        """Room for the attempt: True when it has it (a slot taken, the shared throughput below
        the capacity, or Redis away), False when the instance is full (``full_until`` says
        until when it counts as full here)."""
        instance = attempt.instance
        self.full_for = 0.0
        if instance.capacity_unit == TOKENS_PER_SECOND:
            unit, key, length, lease = "t", throughput_key_for(instance.pk), WINDOW, ""
        else:
            unit, key, length = "c", key_for(instance.pk), int(lease_seconds * 1000)
            lease = uuid.uuid4().hex
        try:
            answer = await call_capacity(
                lambda client: client.eval(CLAIM, 1, key, unit, instance.capacity, length, lease)
            )
        except RedisUnavailable:
            if capacity_breaker().is_open:
                return True  # Redis away: per-process counting only; the breaker logs it
            # One late answer: a slot claim may have landed. Take it back, and count the
            # instance full rather than risk going over its capacity.
            if lease:
                self._spawn(_remove(key, lease))
            return False
        if int(answer) != ROOM:
            self.full_for = max(int(answer), 0) / 1000
            return False
        if lease:
            self._held[id(attempt)] = (attempt, lease)
        return True

    def full_until(self, now: float) -> float:
        """Until when the instance refused last counts as saturated in this process."""
        return now + max(self.full_for, full_seconds())

    def served(self, instance: InstanceSpec, tokens: int) -> None:
        """An answer of ``tokens`` from ``instance``: added to its shared throughput count (a
        task, off the request's path), for a reserved tokens-per-second instance."""
        if tokens <= 0 or not counts_tokens(instance):
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return  # not on an event loop (never on the hot path): per process only
        self._spawn(_add_tokens(throughput_key_for(instance.pk), tokens))

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


async def _add_tokens(key: str, tokens: int) -> None:
    try:
        await call_capacity(lambda client: client.eval(SERVED, 1, key, tokens, WINDOW))
    except RedisUnavailable:
        pass  # lost: the shared window is short of them until they would have left it


async def _remove(key: str, lease: str) -> None:
    try:
        await call_capacity(lambda client: client.zrem(key, lease))
    except RedisUnavailable:
        pass  # the lease expires on its own


slots = Slots()
