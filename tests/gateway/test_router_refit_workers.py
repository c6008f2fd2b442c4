"""A configuration change refits the built-in router in every gateway worker within a second: two
real uvicorn worker processes, the production poll interval (0.5 s).

The change reaches the workers by push (Redis pub/sub on the config version; the poll is the
fallback), the transaction bumps the version once, and the router is fitted by one worker and
loaded by the other (gateway/hotpath/router_share.py). Before those, the last worker settled
0.97 s after the change at load average 7.4 and 1.24-2.31 s at 9.5-10 on this shared 2-core
machine, and the bound here was 3 s; docs/routing.md ("Refit") has the figures since.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from django.db import transaction

from balancers.models import Route
from tests.factories import make_api_key, make_balancer, make_instance, make_router_model
from tests.gateway.test_observability import scrape
from tests.live_server import LiveGateway

pytestmark = pytest.mark.django_db(transaction=True)

TOKEN = "metrics-scrape-token-for-the-test"
COOKING = [
    "How long should I boil an egg?",
    "Give me a recipe for tomato soup.",
    "What temperature do I roast a chicken at?",
    "How do I make pancakes fluffy?",
]
FOOTBALL = [
    "Who won the last World Cup?",
    "Explain the offside rule.",
    "How many players are on a football team?",
    "When does the Premier League start?",
]
PROMPT = "What is the best way to bake bread at home?"
REFIT_SECONDS = 1.0


@pytest.fixture
def two_workers(transactional_db: Any) -> Iterator[LiveGateway]:
    server = LiveGateway(
        workers=2,
        extra_env={"GATEWAY_METRICS_TOKEN": TOKEN, "GATEWAY_CONFIG_POLL_SECONDS": "0.5"},
    )
    yield server
    server.stop()


def worker_versions(server: LiveGateway) -> dict[str, float]:
    """The config version each worker routes from, by pid (each writes it on its poll tick)."""
    samples = scrape(server)["gateway_worker_config_version"]
    return {labels["pid"]: value for labels, value in samples}


def routes_answered(server: LiveGateway, secret: str, n: int) -> set[str]:
    """The routes of n requests, each on a new connection (so both workers answer some)."""
    seen = set()
    for _ in range(n):
        response = httpx.post(
            server.v1 + "/chat/completions",
            json={"model": "kitchen", "messages": [{"role": "user", "content": PROMPT}]},
            headers={"Authorization": f"Bearer {secret}"},
            timeout=10,
        )
        assert response.status_code == 200, response.text
        assert response.headers["x-balancer-decision"] == "classified"
        seen.add(response.headers["x-balancer-route"])
    return seen


def test_a_config_change_refits_the_router_in_every_worker_within_a_second(two_workers) -> None:
    from gateway.hotpath.config_version import config_version_from_db

    server = two_workers
    balancer = make_balancer(
        name="kitchen",
        serving_name="kitchen",
        routing_mode="intent_classifier",
        router_model=make_router_model(),
        routes=[
            {
                "name": "alpha",
                "intent": "Questions.",
                "instance": make_instance(),
                "priority": 1,
                "is_default": True,
                "examples": COOKING,
            },
            {
                "name": "beta",
                "intent": "Questions.",
                "instance": make_instance(),
                "priority": 2,
                "examples": FOOTBALL,
            },
        ],
    )
    _, secret = make_api_key()
    server.wait_for_config(timeout=60)  # each worker loads the vectors and fits on its first load
    version = config_version_from_db()
    deadline = time.monotonic() + 30
    while True:  # until both workers have loaded the configuration (each on its first request)
        assert routes_answered(server, secret, 4) == {"alpha"}
        versions = worker_versions(server)
        if len(versions) == 2 and min(versions.values()) >= version:
            break
        assert time.monotonic() < deadline, f"both workers never loaded version {version}"
        time.sleep(0.1)

    # The change: the examples swap routes, in one transaction (the version is bumped on commit).
    with transaction.atomic():
        for route in Route.objects.filter(balancer=balancer):
            route.examples = FOOTBALL if route.name == "alpha" else COOKING
            route.save()
    changed_at = time.monotonic()
    wanted = config_version_from_db()
    assert wanted > version
    # Each /healthz answer (a new connection each, so both workers answer) says the version its
    # worker routes from; a worker installs a version only with the snapshot built for it, the
    # router fitted in it. Settled: the first of 10 answers in a row at the new version.
    streak, settled, answers = 0, 0.0, []
    fresh = httpx.Client(limits=httpx.Limits(max_keepalive_connections=0), timeout=5)
    while streak < 10:
        answer = fresh.get(server.base_url + "/healthz").json()["config_version"]
        now = time.monotonic() - changed_at
        answers.append((round(now, 2), answer == wanted))
        if answer is not None and answer >= wanted:
            settled = now if streak == 0 else settled
            streak += 1
        else:
            streak = 0
        assert now < 10, f"still answering from version {answer} after {now:.2f} s"
    fresh.close()
    print(f"every worker at version {wanted} {settled:.2f} s after the change: {answers}")
    assert settled < REFIT_SECONDS, (
        f"the workers settled {settled:.2f} s after the change: {answers}"
    )
    versions = worker_versions(server)
    assert len(versions) == 2 and min(versions.values()) >= wanted, versions
    assert routes_answered(server, secret, 12) == {"beta"}
