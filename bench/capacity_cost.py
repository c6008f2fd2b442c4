"""What sharing reserved capacity through Redis costs a worker, in process (CPU time).

    REDIS_URL=redis://127.0.0.1:6379/<db> DATABASE_URL=... .venv/bin/python -m bench.capacity_cost

Per call of gateway/hotpath/capacity_slots.py on one event loop against the Redis of
REDIS_URL: the throughput check of a reserved tokens-per-second instance (one EVAL reading
the window's seconds), a concurrency slot claimed and then released (two round trips, the
release a task), and one answer's tokens added to the shared count (a task, off the path).
CPU is the thread's time (time.thread_time) over N calls; wall is the median call.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

import django

django.setup()

from gateway.engine.planner import Attempt  # noqa: E402
from gateway.engine.types import GroupSpec, InstanceSpec, MemberSpec, RouteSpec  # noqa: E402
from gateway.hotpath import capacity_slots  # noqa: E402

N = 2000


def attempt_on(pk: int, unit: str) -> Attempt:
    instance = InstanceSpec(
        pk=pk,
        instance_id=f"bench-{pk}",
        display_name="bench",
        provider="simulator",
        base_url="",
        model="m",
        api_key="",
        workload_kind="chat",
        input_price_per_million=0,
        output_price_per_million=0,
        quality_tier=3,
        connect_timeout=5,
        first_byte_timeout=30,
        request_timeout=60,
        enabled=True,
        pricing="capacity",
        capacity=10**9,  # never full: every call does the whole check
        capacity_unit=unit,
    )
    member = MemberSpec(instance=instance, weight=1, priority=1, enabled=True)
    group = GroupSpec(name="g", selection_policy="capacity_first", enabled=True, members=(member,))
    route = RouteSpec(
        name="pool",
        intent="All.",
        examples=(),
        group=group,
        priority=1,
        weight=1,
        is_default=True,
        enabled=True,
    )
    return Attempt(1, route, member)


async def main() -> None:
    slots = capacity_slots.Slots()
    base = 990_000_000 + time.time_ns() % 9_999_000
    tps, slot = attempt_on(base, "tokens_per_second"), attempt_on(base + 1, "concurrent_requests")
    for _ in range(50):
        slots.served(tps.instance, 10)
        await slots.claim(tps, 60)
    for name, attempt in (("throughput check", tps), ("slot claim + release", slot)):
        walls = []
        started = time.thread_time()
        for _ in range(N):
            began = time.perf_counter()
            await slots.claim(attempt, 60)
            walls.append(time.perf_counter() - began)
            slots.release(attempt)
            await asyncio.sleep(0)  # let the release run
        cpu = (time.thread_time() - started) / N
        wall = statistics.median(walls)
        print(f"{name}: {cpu * 1e6:.0f} us CPU per call, median call {wall * 1e6:.0f} us")
    # Answers arriving 0.5 ms apart (not one burst of N tasks); the same loop without the
    # counts is taken off, so the figure is the count's own CPU.
    spent = []
    for count in (False, True):
        started = time.thread_time()
        for _ in range(N):
            if count:
                slots.served(tps.instance, 10)
            await asyncio.sleep(0.0005)
        await asyncio.sleep(0.2)
        spent.append(time.thread_time() - started)
    cpu = (spent[1] - spent[0]) / N
    print(f"token count of one answer: {cpu * 1e6:.0f} us CPU (a task off the path)")


if __name__ == "__main__":
    asyncio.run(main())
