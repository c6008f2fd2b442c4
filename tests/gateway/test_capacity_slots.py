"""Reserved capacity shared by every worker (gateway/hotpath/capacity_slots.py): two real uvicorn
workers against a slow reserved simulator, and the leases themselves against the test Redis."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import redis

from gateway.engine.planner import Attempt
from gateway.engine.types import GroupSpec, InstanceSpec, MemberSpec, RouteSpec
from gateway.hotpath import capacity_slots
from targetgroups.models import TargetGroupMember
from tests.factories import make_api_key, make_balancer
from tests.factories import make_group as make_target_group
from tests.gateway.test_openai_sdk import wait_for_events
from tests.live_server import LiveGateway
from tests.upstream_server import Behaviour

HELLO = [{"role": "user", "content": "hello there"}]


@pytest.mark.django_db(transaction=True)
def test_two_workers_never_put_more_than_its_capacity_on_a_reserved_instance(setup):
    """Two uvicorn workers share the listening socket; rounds of 8 concurrent requests against a
    2-slot reserved upstream that answers in 1.5 s. The upstream itself counts the requests it
    is answering at once: never more than 2 (without the shared slots, each worker admitted 2:
    7 of 16 went to it, up to 4 at once)."""
    dedicated = setup.instance(
        "dedicated-shared",
        Behaviour(delay=1.5),
        instance_id="dedicated-shared",
        pricing="capacity",
        capacity_price_per_hour="3.00",
        capacity=2,
        capacity_unit="concurrent_requests",
    )
    metered = setup.instance("metered-shared", Behaviour(delay=0.05), instance_id="metered-shared")
    group = make_target_group(instances=[], selection_policy="capacity_first")
    TargetGroupMember.objects.create(group=group, instance=metered, priority=1)
    TargetGroupMember.objects.create(group=group, instance=dedicated, priority=2)
    balancer = make_balancer(
        serving_name="capshared",
        routes=[
            {
                "name": "pool",
                "intent": "All.",
                "target_group": group,
                "priority": 1,
                "is_default": True,
            }
        ],
    )
    _, secret = make_api_key()
    # A generous Redis bound: this pins the sharing. With the 50 ms default, on this 2-core
    # machine at load average 12, Redis answered late often enough to open the slots' breaker
    # for a moment (per-process counting then, as designed: docs/cost.md), and 3 went at once.
    gateway = LiveGateway(workers=2, extra_env={"GATEWAY_REDIS_TIMEOUT_SECONDS": "1.0"})
    try:
        gateway.wait_for_config()

        def ask(_: int) -> str:
            # A connection of its own each: the two workers share the listening socket.
            with httpx.Client(timeout=20) as client:
                response = client.post(
                    gateway.v1 + "/chat/completions",
                    json={"model": "capshared", "messages": HELLO},
                    headers={"Authorization": f"Bearer {secret}"},
                )
            assert response.status_code == 200, response.text
            return response.headers["x-balancer-instance"]

        served = []
        with ThreadPoolExecutor(8) as pool:
            for _ in range(3):
                served += list(pool.map(ask, range(8)))
        assert "Traceback" not in gateway.log()
    finally:
        gateway.stop()
    assert setup.upstream.peak_in_flight["dedicated-shared"] == 2, served
    assert served.count("dedicated-shared") >= 2 and served.count("metered-shared") >= 8
    events = wait_for_events(24, balancer=balancer)
    assert all(e.spilled for e in events if e.instance == "metered-shared")
    assert not any(e.spilled for e in events if e.instance == "dedicated-shared")


@pytest.mark.django_db(transaction=True)
def test_two_workers_spill_once_their_shared_throughput_reaches_the_capacity(setup, settings):
    """A reserved instance sold as 9 tokens/s, whose upstream answers 18 tokens (11 + 7) at
    once: its throughput saturates after 5 answers in 10 s (90 tokens), with never more than
    one request in flight. 40 requests one after another, each on a connection of its own,
    so the two workers share them: 5 on it, the other 35 spilled. Measured per process (the
    shared count off), each worker admitted its own 5: about 10."""
    dedicated = setup.instance(
        "dedicated-tps",
        Behaviour(delay=0.0),
        instance_id="dedicated-tps",
        pricing="capacity",
        capacity_price_per_hour="3.00",
        capacity=9,
        capacity_unit="tokens_per_second",
    )
    metered = setup.instance("metered-tps", Behaviour(delay=0.0), instance_id="metered-tps")
    group = make_target_group(instances=[], selection_policy="capacity_first")
    TargetGroupMember.objects.create(group=group, instance=metered, priority=1)
    TargetGroupMember.objects.create(group=group, instance=dedicated, priority=2)
    balancer = make_balancer(
        serving_name="captps",
        routes=[
            {
                "name": "pool",
                "intent": "All.",
                "target_group": group,
                "priority": 1,
                "is_default": True,
            }
        ],
    )
    _, secret = make_api_key()
    # A test database's pks restart in every session: an earlier run's count must not count.
    redis.Redis.from_url(settings.REDIS_URL).delete(capacity_slots.throughput_key_for(dedicated.pk))
    gateway = LiveGateway(workers=2, extra_env={"GATEWAY_REDIS_TIMEOUT_SECONDS": "1.0"})
    started = time.monotonic()
    try:
        gateway.wait_for_config()
        started = time.monotonic()
        served = []
        for _ in range(40):
            with httpx.Client(timeout=20) as client:
                response = client.post(
                    gateway.v1 + "/chat/completions",
                    json={"model": "captps", "messages": HELLO},
                    headers={"Authorization": f"Bearer {secret}"},
                )
            assert response.status_code == 200, response.text
            served.append(response.headers["x-balancer-instance"])
        elapsed = time.monotonic() - started
        assert "Traceback" not in gateway.log()
    finally:
        gateway.stop()
    assert elapsed < 9.0, elapsed  # all inside one 10 s window, or tokens would leave it
    assert served[:5] == ["dedicated-tps"] * 5, served
    # The answer's tokens are counted off its path: one request may overtake the last count.
    assert served.count("dedicated-tps") in (5, 6), served
    assert setup.upstream.peak_in_flight["dedicated-tps"] == 1
    events = wait_for_events(40, balancer=balancer)
    assert all(e.spilled for e in events if e.instance == "metered-tps")


def attempt_on(pk: int, capacity: int, unit: str = "concurrent_requests") -> Attempt:
    instance = InstanceSpec(
        pk=pk,
        instance_id="leased",
        display_name="leased",
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
        capacity=capacity,
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
    assert capacity_slots.checks_capacity(Attempt(1, route, member))
    return Attempt(1, route, member)


def test_a_lease_of_a_worker_that_never_released_it_expires(settings):
    """A killed worker never frees its slots: they lapse with their lease, and only then."""
    if not settings.REDIS_URL:
        pytest.skip("needs Redis")

    async def main() -> list[bool]:
        slots = capacity_slots.Slots()
        pk = 900_000_000 + time.time_ns() % 99_999_989
        first, second, third = (attempt_on(pk, 2) for _ in range(3))
        taken = [await slots.claim(first, 0.3), await slots.claim(second, 0.3)]
        taken.append(await slots.claim(third, 0.3))  # full
        await asyncio.sleep(0.4)  # neither was released: the leases lapse
        taken.append(await slots.claim(third, 0.3))
        slots.release(third)
        await asyncio.sleep(0.05)
        return taken

    assert asyncio.run(main()) == [True, True, False, True]


def test_the_shared_throughput_fills_with_every_answer_and_says_how_long_it_stays_full(settings):
    """Tokens served add up in Redis, whoever served them; full, the claim says how long the
    window stays full (its oldest second leaving it), and this process holds it that long,
    at least GATEWAY_CAPACITY_FULL_SECONDS."""
    if not settings.REDIS_URL:
        pytest.skip("needs Redis")
    settings.GATEWAY_CAPACITY_FULL_SECONDS = 0.1

    async def main() -> tuple[list[bool], float, float]:
        one, other = capacity_slots.Slots(), capacity_slots.Slots()  # two workers
        pk = 900_000_000 + time.time_ns() % 99_999_989
        attempt = attempt_on(pk, 10, "tokens_per_second")  # 100 tokens in the 10 s window
        room = [await one.claim(attempt, 60)]
        one.served(attempt.instance, 60)
        await asyncio.sleep(0.05)
        room.append(await other.claim(attempt, 60))  # 60 of 100: room
        other.served(attempt.instance, 40)
        await asyncio.sleep(0.05)
        room.append(await one.claim(attempt, 60))  # 100: full
        assert one.held() == 0  # a throughput claim holds nothing to release
        return room, one.full_for, one.full_until(1000.0)

    room, full_for, until = asyncio.run(main())
    assert room == [True, True, False]
    # The 100 tokens leave the window 9-10 s from now (their second's start + 10 s).
    assert 8.5 < full_for <= 10.0, full_for
    assert until == 1000.0 + full_for


def test_a_full_slot_holds_the_instance_for_the_setting(settings):
    """A concurrency slot may free any moment: a refused claim holds the instance full in this
    process for GATEWAY_CAPACITY_FULL_SECONDS (was a fixed 0.1 s)."""
    if not settings.REDIS_URL:
        pytest.skip("needs Redis")
    settings.GATEWAY_CAPACITY_FULL_SECONDS = 0.75

    async def main() -> tuple[bool, float]:
        slots = capacity_slots.Slots()
        pk = 900_000_000 + time.time_ns() % 99_999_989
        first, second = attempt_on(pk, 1), attempt_on(pk, 1)
        assert await slots.claim(first, 5)
        refused = await slots.claim(second, 5)
        slots.release(first)
        await asyncio.sleep(0.05)
        return refused, slots.full_until(1000.0)

    assert asyncio.run(main()) == (False, 1000.75)


def test_a_capacity_full_time_under_its_floor_stops_the_process():
    env = {
        **os.environ,
        "GATEWAY_CAPACITY_FULL_SECONDS": "0.001",
        "DJANGO_SETTINGS_MODULE": "config.settings",
    }
    out = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=Path(__file__).resolve().parents[2],
        env=env,
        capture_output=True,
        text=True,
    )
    assert out.returncode != 0
    assert "GATEWAY_CAPACITY_FULL_SECONDS must be at least 0.01" in out.stderr


def test_a_hung_redis_sends_throughput_back_to_per_process_without_an_error(settings):
    """Redis hung (SIGSTOP): the first late check spills (never over capacity); once the slots'
    breaker opens, checks pass at once and saturation is this process's own measure again
    (capacity_first's LoadStats); the tokens served meanwhile are dropped, never an error."""
    from gateway.hotpath import redis_client
    from tests.fault_servers import own_redis

    settings.GATEWAY_REDIS_RETRY_SECONDS = 30.0  # the breaker stays open for the test
    redis_client.capacity_breaker.cache_clear()
    try:
        with own_redis() as server:
            settings.REDIS_URL = server.url

            async def main() -> tuple[list[bool], list[float]]:
                slots = capacity_slots.Slots()
                attempt = attempt_on(7, 10, "tokens_per_second")
                room = [await slots.claim(attempt, 60)]
                slots.served(attempt.instance, 100)
                await asyncio.sleep(0.05)
                room.append(await slots.claim(attempt, 60))  # shared window full
                server.pause()
                took = []
                for _ in range(4):
                    started = time.monotonic()
                    room.append(await slots.claim(attempt, 60))
                    took.append(time.monotonic() - started)
                    slots.served(attempt.instance, 100)
                await asyncio.sleep(0.05)
                return room, took

            room, took = asyncio.run(main())
            server.resume()
        # Full, then one late check that spills, then the breaker opens: per process.
        assert room == [True, False, False, True, True, True], room
        assert redis_client.capacity_breaker().is_open
        assert max(took[2:]) < 0.01, took  # open: no wait at all
    finally:
        redis_client.capacity_breaker.cache_clear()
