"""Budgets on the request path: each budget's spend so far, counted across workers and hosts.

The rules are in gateway/engine/budgets.py; this module counts. One Redis counter per
budget and period (`sb:budget:<budget pk>:<d20261202|m202612>`, integer units of 1e-10 USD):

- Checking a request under any budget costs one MGET (no call at all for a request under
  none). A request under no budget pays nothing else.
- Every usage event with a cost adds it to the counters of its budgets: the usage recorder
  tells `count()` (O(1), no I/O), which adds to this process's copy at once and leaves the
  INCRBY to one background task on the event loop, so the response never waits for Redis.
- While Redis is down or hung (gateway/hotpath/redis_client.py's breaker) each process
  counts on from the last shared count it saw plus its own spend, like the rate limiter: a
  counter outage never becomes a gateway outage, nor a wait. Increments that could not be
  sent are not replayed; the reconciling job (gateway.budgets.budgets_reconcile) puts the
  exact spend from the usage events back, raising a counter that is behind and never
  lowering one (the counters run ahead of the written events by design).
- Without Redis (embedded mode, one process) this process's copy is the count, and the
  reconciling job, run from the gateway's tick, raises it the same way.

Both dicts are bounded: budgets x current periods, cleared past 10,000 entries.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Any

from django.conf import settings

from gateway.engine.budgets import (
    DAILY,
    NO_BUDGET,
    BudgetSpec,
    BudgetVerdict,
    applicable,
    judge,
    period_key,
    units_to_usd,
    usd_to_units,
)
from gateway.hotpath import errors
from gateway.hotpath.snapshot import GatewayConfig, holder
from gateway.hotpath.usage import UsageRecord, recorder

logger = logging.getLogger(__name__)

PREFIX = "sb:budget:"
MAX_ENTRIES = 10_000
# A counter outlives its period by a day (daily) or a few days (monthly), for the pages.
TTL_SECONDS = {DAILY: 2 * 86_400, "monthly": 35 * 86_400}

_local: dict[tuple[int, str], int] = {}  # (budget pk, period key) -> units, as this process knows
_pending: dict[tuple[int, str, str], int] = {}  # (budget pk, period key, period) -> units to send
_flushing: set[asyncio.Task[None]] = set()

# Raise a counter to the exact spend, never lower it (the reconciling job).
RAISE_TO = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local exact = tonumber(ARGV[1])
if current < exact then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
  return exact
end
redis.call('EXPIRE', KEYS[1], ARGV[2])
return current
"""


def counter_name(budget_pk: int, period: str) -> str:
    return f"{PREFIX}{budget_pk}:{period}"


def _remember(key: tuple[int, str], units: int) -> None:
    if len(_local) > MAX_ENTRIES:
        _local.clear()
    _local[key] = units


async def spent(budgets: tuple[BudgetSpec, ...], now: datetime) -> list[int]:
    """Each budget's spend in its current period, in units (shared when Redis answers)."""
    keys = [(b.pk, period_key(b.period, now)) for b in budgets]
    values = [_local.get(key, 0) for key in keys]
    if settings.REDIS_URL:
        from gateway.hotpath.redis_client import RedisUnavailable, call_async

        names = [counter_name(*key) for key in keys]

        async def read(client: Any) -> list[Any]:
            return list(await client.mget(names))

        try:
            shared = await call_async(read)
        except RedisUnavailable:
            pass  # this process's count; the breaker logs the outage
        else:
            for index, raw in enumerate(shared):
                # Add what this process has not sent yet, so its own spend is never missed.
                value = int(raw or 0) + _pending.get((*keys[index], budgets[index].period), 0)
                values[index] = value
                _remember(keys[index], value)
    return values


async def check(
    config: GatewayConfig, *, key_pk: int, team_pk: int | None, balancer_pk: int, now: datetime
) -> BudgetVerdict:
    """The verdict on one request (gateway.engine.budgets rules 1 to 3); refused ones raise a
    429."""
    if not config.budgets:
        return NO_BUDGET
    budgets = applicable(
        config.budgets, key_pk=key_pk, team_pk=team_pk, balancer_pk=balancer_pk or None
    )
    if not budgets:
        return NO_BUDGET
    verdict = judge(zip(budgets, await spent(budgets, now), strict=True))
    if verdict.refused is not None:
        raise refusal(verdict.refused)
    return verdict


def refusal(budget: BudgetSpec) -> errors.GatewayError:
    period = "today's (UTC)" if budget.period == DAILY else "this month's (UTC)"
    return errors.GatewayError(
        429,
        f"The {budget.label} has reached {period} budget of ${units_to_usd(budget.limit_units):f}: "
        "requests are refused until the period ends or an operator raises the budget.",
        type="insufficient_quota",
        code="insufficient_quota",
    )


def count(record: UsageRecord) -> None:
    """A usage-recorder observer: add the event's cost to its budgets. O(1), no I/O."""
    if not record.cost_usd:
        return
    config = holder.peek()
    if config is None or not config.budgets:
        return
    budgets = applicable(
        config.budgets,
        key_pk=record.api_key_id,
        team_pk=record.team_id,
        balancer_pk=record.balancer_id,
    )
    if not budgets:
        return
    units = usd_to_units(record.cost_usd)
    for budget in budgets:
        key = (budget.pk, period_key(budget.period, record.created_at))
        _remember(key, _local.get(key, 0) + units)
        if settings.REDIS_URL:
            pending = (*key, budget.period)
            if len(_pending) > MAX_ENTRIES:
                _pending.clear()
            _pending[pending] = _pending.get(pending, 0) + units
    if settings.REDIS_URL and not _flushing:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop in this thread: sent with the next flush
        task = loop.create_task(flush(), name="budget-counters")
        _flushing.add(task)
        task.add_done_callback(_flushing.discard)


async def flush() -> None:
    """Send the pending increments, one pipeline a round, until none is left (increments made
    while a round is in flight go in the next one). On a Redis failure they stay local only."""
    from gateway.hotpath.redis_client import RedisUnavailable, call_async

    while _pending:
        batch = list(_pending.items())
        _pending.clear()

        async def send(
            client: Any, batch: list[tuple[tuple[int, str, str], int]] = batch
        ) -> list[Any]:
            async with client.pipeline(transaction=False) as pipe:
                for (pk, period_name, period), units in batch:
                    name = counter_name(pk, period_name)
                    pipe.incrby(name, units)
                    pipe.expire(name, TTL_SECONDS.get(period, TTL_SECONDS["monthly"]))
                return list(await pipe.execute())

        try:
            results = await call_async(send)
        except RedisUnavailable:
            return  # counted locally; the reconciling job brings Redis back to the exact spend
        for index, ((pk, period_name, _), _units) in enumerate(batch):
            # The shared total, plus what this process added since the round left.
            key = (pk, period_name)
            later = sum(u for (p, n, _), u in _pending.items() if (p, n) == key)
            _remember(key, int(results[2 * index]) + later)


recorder.observers.append(count)


def raise_local(budget_pk: int, period_name: str, units: int) -> int:
    """The reconciling job without Redis: raise this process's count to the exact spend."""
    key = (budget_pk, period_name)
    value = max(_local.get(key, 0), units)
    _remember(key, value)
    return value


def local_count(budget_pk: int, period_name: str) -> int:
    return _local.get((budget_pk, period_name), 0)
