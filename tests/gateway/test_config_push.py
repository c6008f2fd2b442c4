"""A configuration change is pushed to the workers (Redis pub/sub), with the poll as the fallback.

The gateways here poll the config version every POLL seconds, far longer than the bound on a
pushed change, so a change seen within PUSHED_WITHIN came by the push. With Redis killed the
worker keeps serving and learns changes from the database on its poll; when Redis is back it
subscribes again and changes are pushed again.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from gateway.hotpath.config_version import config_version_from_db
from tests.factories import make_api_key, make_balancer, make_instance
from tests.fault_servers import RedisServer, own_redis
from tests.live_server import LiveGateway

pytestmark = pytest.mark.django_db(transaction=True)

POLL = 5.0  # GATEWAY_CONFIG_POLL_SECONDS of the gateways under test
PUSHED_WITHIN = 2.5  # generous on a loaded machine; half the poll interval
BACKOFF = 1.0  # GATEWAY_REDIS_RETRY_SECONDS


def seen_within(server: LiveGateway, seconds: float) -> float:
    """Make one configuration change; the seconds until the gateway routes from it."""
    make_api_key()
    wanted = config_version_from_db()
    changed_at = time.monotonic()
    while True:
        version = httpx.get(server.base_url + "/healthz", timeout=5).json()["config_version"]
        elapsed = time.monotonic() - changed_at
        if version is not None and version >= wanted:
            return elapsed
        assert elapsed < seconds, f"version {wanted} not in use after {elapsed:.2f} s: {version}"
        time.sleep(0.02)


def served(server: LiveGateway, secret: str) -> int:
    response = httpx.post(
        server.v1 + "/chat/completions",
        json={"model": "pushed", "messages": [{"role": "user", "content": "hello"}]},
        headers={"Authorization": f"Bearer {secret}"},
        timeout=5,
    )
    return response.status_code


@pytest.fixture
def secret(transactional_db: Any) -> str:
    make_balancer(
        serving_name="pushed",
        routes=[
            {"name": "only", "intent": "All.", "instance": make_instance(), "is_default": True}
        ],
    )
    return make_api_key()[1]


def test_a_change_is_pushed_to_the_worker_before_its_poll(secret):
    server = LiveGateway(extra_env={"GATEWAY_CONFIG_POLL_SECONDS": str(POLL)})
    try:
        server.wait_for_config(timeout=30)
        times = [seen_within(server, PUSHED_WITHIN) for _ in range(3)]
        print(f"pushed changes in use after {[round(t, 3) for t in times]} s (poll {POLL} s)")
        assert served(server, secret) == 200
    finally:
        server.stop()


@pytest.fixture
def redis_server(settings: Any) -> Iterator[RedisServer]:
    """A Redis of the test's own, which this process's writes publish to as well."""
    from gateway.hotpath import redis_client

    with own_redis() as server:
        settings.REDIS_URL = server.url
        settings.GATEWAY_REDIS_RETRY_SECONDS = BACKOFF
        redis_client.breaker.cache_clear()
        redis_client.redis_sync.cache_clear()
        yield server
    redis_client.breaker.cache_clear()
    redis_client.redis_sync.cache_clear()


def redis_reachable_from_here(seconds: float) -> None:
    """Until this process's breaker lets a command through again (so its next bump publishes)."""
    from gateway.hotpath.redis_client import RedisUnavailable, call_sync

    deadline = time.monotonic() + seconds
    while True:
        try:
            call_sync(lambda client: client.ping())
            return
        except RedisUnavailable:
            assert time.monotonic() < deadline, "Redis did not come back for the test process"
            time.sleep(0.1)


def test_with_redis_down_changes_arrive_by_the_poll_and_are_pushed_again_when_it_is_back(
    secret, redis_server
):
    server = LiveGateway(
        extra_env={
            "REDIS_URL": redis_server.url,
            "GATEWAY_CONFIG_POLL_SECONDS": str(POLL),
            "GATEWAY_REDIS_RETRY_SECONDS": str(BACKOFF),
        }
    )
    try:
        server.wait_for_config(timeout=30)
        pushed = seen_within(server, PUSHED_WITHIN)

        redis_server.kill()
        for _ in range(10):  # serving goes on from the snapshot it has
            assert served(server, secret) == 200
        polled = seen_within(server, POLL + 5)  # from the database, on the poll
        assert served(server, secret) == 200

        redis_server.start()  # same port, empty
        redis_reachable_from_here(10)
        deadline = time.monotonic() + 15
        while "Redis back" not in server.log():
            assert time.monotonic() < deadline, server.log()
            served(server, secret)
            time.sleep(0.1)
        time.sleep(2 * BACKOFF)  # the worker subscribes again on its next attempt
        again = [seen_within(server, PUSHED_WITHIN) for _ in range(2)]
        print(f"pushed {pushed:.3f} s; Redis down: polled {polled:.3f} s; back: pushed {again}")
        assert served(server, secret) == 200
        assert "Traceback" not in server.log()
    finally:
        server.stop()
