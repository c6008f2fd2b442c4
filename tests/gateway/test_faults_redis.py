"""Redis down or hung: requests stay fast, served from local state, and the outage is logged once.

Each test runs the real gateway (uvicorn) against a redis-server of its own, which it
freezes (SIGSTOP), kills and brings back; the database stays the test PostgreSQL.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis

from gateway.hotpath.config_version import config_version_from_db
from gateway.models import ApiKey, hash_api_key
from gateway.services import api_key_revoke
from tests.factories import make_api_key, make_balancer
from tests.fault_servers import RedisServer, own_redis
from tests.live_server import LiveGateway

pytestmark = pytest.mark.django_db(transaction=True)

HELLO = {"model": "redis-faults", "messages": [{"role": "user", "content": "hello"}]}
# A generous ceiling for one request while Redis hangs: before the fix a request waited ~5 s
# (1 s socket timeouts, retried); the gateway's own bound is GATEWAY_REDIS_TIMEOUT_SECONDS (50 ms
# plus the event loop's lag). 1.0 s was missed once at 1.21 s in a CI run at load average 8-11.
PER_REQUEST_BOUND = 2.0
BACKOFF = 1.0  # GATEWAY_REDIS_RETRY_SECONDS for these tests


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with own_redis() as server:
        yield server


def start_gateway(redis_server: RedisServer) -> LiveGateway:
    return LiveGateway(
        extra_env={"REDIS_URL": redis_server.url, "GATEWAY_REDIS_RETRY_SECONDS": str(BACKOFF)}
    )


@pytest.fixture
def keys(setup: Any) -> dict[str, str]:
    inst = setup.instance("redis-faults-model")
    make_balancer(
        serving_name="redis-faults",
        routes=[
            {
                "name": "only",
                "intent": "Everything.",
                "instance": inst,
                "priority": 1,
                "is_default": True,
            }
        ],
    )
    _, limited = make_api_key(rate_limit_per_minute=100_000)
    _, plain = make_api_key()
    return {"limited": limited, "plain": plain}


def timed_post(base_url: str, secret: str, timeout: float = 3.0) -> tuple[float, int]:
    started = time.monotonic()
    response = httpx.post(
        base_url + "/v1/chat/completions",
        json=HELLO,
        timeout=timeout,
        headers={"Authorization": f"Bearer {secret}"},
    )
    return time.monotonic() - started, response.status_code


def redis_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if "redis" in line.lower() or "Traceback" in line]


def test_requests_stay_fast_while_redis_hangs(keys, redis_server):
    gateway = start_gateway(redis_server)
    try:
        gateway.wait_for_config()
        for secret in keys.values():
            assert timed_post(gateway.base_url, secret)[1] == 200
        redis_server.pause()
        times: dict[str, list[float]] = {"limited": [], "plain": []}
        deadline = (
            time.monotonic() + 2.5 * BACKOFF
        )  # long enough for retries against the hung Redis
        while time.monotonic() < deadline:
            for name, secret in keys.items():
                elapsed, status = timed_post(gateway.base_url, secret)
                assert status == 200
                times[name].append(elapsed)
        for name, values in times.items():
            print(
                f"{name}: {len(values)} requests, p50 {statistics.median(values) * 1000:.1f} ms, "
                f"max {max(values) * 1000:.1f} ms"
            )
            assert max(values) < PER_REQUEST_BOUND, (name, max(values))
        log = gateway.log()
        assert log.count("Redis unavailable:") == 1
        assert "Traceback" not in log
    finally:
        redis_server.resume()
        gateway.stop()


def test_a_cold_start_with_redis_hung_serves_concurrent_first_requests_quickly(keys, redis_server):
    redis_server.pause()
    gateway = start_gateway(redis_server)
    try:
        results: list[tuple[float, int]] = []

        def one(secret: str) -> None:
            results.append(timed_post(gateway.base_url, secret, timeout=10))

        threads = [
            threading.Thread(target=one, args=(secret,))
            for _ in range(10)
            for secret in keys.values()
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(15)
        assert len(results) == 20 and {status for _, status in results} == {200}
        times = sorted(elapsed for elapsed, _ in results)
        print(
            "cold start, 20 concurrent first requests with Redis hung: fastest "
            f"{times[0] * 1000:.0f} ms, "
            f"slowest {times[-1] * 1000:.0f} ms"
        )
        # The first load (imports, queries) takes 1.4-2.6 s on the shared test machine even with
        # Redis up, and twenty requests then share one CPU; they must share the load, not queue
        # for twenty loads in turn, each waiting out Redis timeouts (up to 16 s on main).
        assert times[-1] - times[0] < 2.5
        assert times[-1] < 8.0
        assert gateway.log().count("Redis unavailable:") == 1
    finally:
        redis_server.resume()
        gateway.stop()


def test_requests_are_served_while_redis_is_killed_and_shared_state_resumes_when_it_is_back(
    keys, redis_server
):
    gateway = start_gateway(redis_server)
    try:
        gateway.wait_for_config()
        assert timed_post(gateway.base_url, keys["limited"])[1] == 200
        redis_server.kill()
        for _ in range(50):
            for secret in keys.values():
                elapsed, status = timed_post(gateway.base_url, secret)
                assert status == 200 and elapsed < PER_REQUEST_BOUND
        lines = redis_lines(gateway.log())
        print(f"Redis killed, 100 requests: {len(lines)} log line(s): {lines}")
        assert len([line for line in lines if "Redis unavailable:" in line]) == 1, lines
        assert len(lines) <= 3, lines  # a handful of lines for 100 requests, not a traceback each
        assert "Traceback" not in gateway.log()

        redis_server.start()  # same port, empty
        client = redis.Redis.from_url(redis_server.url)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not client.keys("sb:rl:*"):
            timed_post(gateway.base_url, keys["limited"])
            time.sleep(0.1)
        assert client.keys("sb:rl:*"), "the rate limit is counted in Redis again"
        assert "Redis back after" in gateway.log()
        # The config version is shared again: the worker raised the emptied key from the database.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and client.get("sb:config_version") is None:
            time.sleep(0.1)
        assert int(client.get("sb:config_version") or 0) == config_version_from_db()
    finally:
        gateway.stop()


def test_a_key_revoked_while_redis_hangs_stops_working_and_redis_catches_up_when_it_resumes(
    keys, redis_server
):
    gateway = start_gateway(redis_server)
    try:
        gateway.wait_for_config()
        client = redis.Redis.from_url(redis_server.url)
        redis_server.pause()
        # The test process publishes config versions to the test Redis, not to this gateway's:
        # as for a publish lost in the outage, the gateway must learn the change from the database.
        api_key_revoke(key=ApiKey.objects.get(key_hash=hash_api_key(keys["plain"])))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and timed_post(gateway.base_url, keys["plain"])[1] != 401:
            time.sleep(0.1)
        assert timed_post(gateway.base_url, keys["plain"])[1] == 401
        redis_server.resume()
        deadline = time.monotonic() + 5
        while (
            time.monotonic() < deadline
            and int(client.get("sb:config_version") or 0) != config_version_from_db()
        ):
            time.sleep(0.1)
        assert int(client.get("sb:config_version") or 0) == config_version_from_db()  # shared again
        assert timed_post(gateway.base_url, keys["plain"])[1] == 401
        assert timed_post(gateway.base_url, keys["limited"])[1] == 200
    finally:
        redis_server.resume()
        gateway.stop()


@pytest.fixture
def gateway_redis(settings: Any, redis_server: RedisServer) -> Iterator[RedisServer]:
    """This process's gateway modules pointed at the test's own Redis, with a fresh breaker."""
    from gateway.hotpath import redis_client

    settings.REDIS_URL = redis_server.url
    settings.GATEWAY_REDIS_RETRY_SECONDS = BACKOFF
    redis_client.breaker.cache_clear()
    redis_client.redis_sync.cache_clear()
    yield redis_server
    redis_client.breaker.cache_clear()
    redis_client.redis_sync.cache_clear()


def test_a_hung_redis_costs_a_rate_limit_check_at_most_its_timeout(gateway_redis, settings):
    import asyncio

    from gateway.hotpath.ratelimit import check_rate_limit

    async def measure(seconds: float) -> list[float]:
        times = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            started = time.monotonic()
            assert await check_rate_limit(910_301, 1_000_000) is None
            times.append(time.monotonic() - started)
            await asyncio.sleep(0.005)
        return times

    gateway_redis.pause()
    try:
        times = asyncio.run(measure(3 * BACKOFF))
    finally:
        gateway_redis.resume()
    slow = [t for t in times if t > settings.GATEWAY_REDIS_TIMEOUT_SECONDS / 2]
    print(
        f"rate-limit checks with Redis hung: {len(times)} calls, p50 "
        f"{statistics.median(times) * 1e6:.0f} µs, "
        f"max {max(times) * 1000:.1f} ms, {len(slow)} waited for the timeout"
    )
    assert (
        max(times) < settings.GATEWAY_REDIS_TIMEOUT_SECONDS + 0.15
    )  # the timeout, plus scheduling slack
    # Two calls open the breaker, then one trial per back-off period: a few calls wait, not all.
    assert len(slow) <= 2 + 3 + 1
