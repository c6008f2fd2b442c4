"""Budgets across two gateway processes sharing one Redis: warning, refuse, downgrade, a
failed-but-billed stream, counters reconciled from the usage events, a hung Redis."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from types import MappingProxyType, SimpleNamespace
from typing import Any

import openai
import pytest

from gateway.budgets import budgets_reconcile
from gateway.engine.budgets import applicable, period_key, usd_to_units
from gateway.hotpath import budgets as counters
from gateway.hotpath import errors
from gateway.hotpath.redis_client import redis_sync
from gateway.hotpath.snapshot import budget_specs
from gateway.models import Budget, CostAlert, UsageEvent
from gateway.services import budget_create, team_create
from tests.factories import make_api_key, make_balancer
from tests.fault_servers import RedisServer, own_redis
from tests.live_server import LiveGateway
from tests.upstream_server import Behaviour
from tests.webhook_server import WebhookServer

pytestmark = pytest.mark.django_db(transaction=True)

HELLO = [{"role": "user", "content": "hello"}]
# The fake upstream answers 11 prompt and 7 completion tokens: at $1,000 per million tokens
# (in and out) a request costs exactly $0.018.
PRICE = "1000.00"
PER_REQUEST = Decimal("0.018")


@pytest.fixture(scope="module")
def second_gateway(django_db_setup: object, django_db_blocker: object) -> Iterator[LiveGateway]:
    server = LiveGateway()
    yield server
    server.stop()


@pytest.fixture
def webhook() -> Iterator[WebhookServer]:
    server = WebhookServer().start()
    yield server
    server.stop()


def client_for(server: LiveGateway, secret: str) -> openai.OpenAI:
    server.wait_for_config()
    return openai.OpenAI(base_url=server.v1, api_key=secret, max_retries=0, timeout=20)


def counted(budget: Budget) -> int:
    name = counters.counter_name(budget.pk, period_key(budget.period, datetime.now(UTC)))
    return int(redis_sync().get(name) or 0)


def wait_counted(budget: Budget, amount: Decimal, timeout: float = 5.0) -> None:
    """Until the shared counter holds `amount` (the increment is sent just after the answer)."""
    deadline = time.monotonic() + timeout
    while counted(budget) != usd_to_units(amount):
        assert time.monotonic() < deadline, f"counter at {counted(budget)}, wanted {amount}"
        time.sleep(0.02)


def wait_events(count: int, timeout: float = 5.0, **filters: Any) -> list[UsageEvent]:
    deadline = time.monotonic() + timeout
    while (found := UsageEvent.objects.filter(**filters).count()) < count:
        assert time.monotonic() < deadline, f"{found} usage events written, wanted {count}"
        time.sleep(0.05)
    return list(UsageEvent.objects.filter(**filters).order_by("created_at", "pk"))


def chat(client: openai.OpenAI, model: str) -> Any:
    return client.chat.completions.with_raw_response.create(model=model, messages=HELLO)


def test_a_team_budget_warns_then_refuses_across_two_processes_and_survives_a_lost_counter(
    setup, second_gateway, webhook, settings
):
    inst = setup.instance(
        "budget-refuse", input_price_per_million=PRICE, output_price_per_million=PRICE
    )
    make_balancer(
        serving_name="br",
        routes=[{"name": "m", "intent": "x", "instance": inst, "priority": 1, "is_default": True}],
    )
    team = team_create(name="support")
    budget = budget_create(
        team=team,
        period="daily",
        limit_usd=Decimal("0.05"),
        warn_share=Decimal("0.5"),
        action="refuse",
    )
    _, secret = make_api_key(team=team)
    a, b = client_for(setup.gateway, secret), client_for(second_gateway, secret)

    first = chat(a, "br")
    assert "x-balancer-budget" not in first.headers
    wait_counted(budget, PER_REQUEST)
    second = chat(b, "br")  # $0.018 spent: under the $0.025 warning
    assert "x-balancer-budget" not in second.headers
    wait_counted(budget, 2 * PER_REQUEST)
    third = chat(a, "br")  # $0.036 spent, counted by the other process: warning, still served
    assert third.headers["x-balancer-budget"] == "warning"
    wait_counted(budget, 3 * PER_REQUEST)
    for client in (b, a):  # $0.054: the limit is reached for every process
        with pytest.raises(openai.RateLimitError) as refused:
            client.chat.completions.create(model="br", messages=HELLO)
        assert refused.value.code == "insufficient_quota"
        assert refused.value.type == "insufficient_quota"
        assert "team support" in refused.value.message
    assert setup.upstream.count("budget-refuse") == 3

    # Exact after the fact: the usage events (refusals included, at no cost) sum to the spend.
    events = wait_events(5, team_id=team.pk)
    assert [e.status_code for e in events] == [200, 200, 200, 429, 429]
    (status,) = [s for s in budgets_reconcile() if s.budget.pk == budget.pk]
    assert status.spent == 3 * PER_REQUEST and status.state == "reached"

    # Redis loses the counter (a restart): the next request is let through on the empty count,
    # then the reconciling job puts the exact spend back and every process refuses again.
    redis_sync().delete(counters.counter_name(budget.pk, period_key("daily", datetime.now(UTC))))
    budgets_reconcile()
    assert counted(budget) == usd_to_units(3 * PER_REQUEST)
    with pytest.raises(openai.RateLimitError):
        b.chat.completions.create(model="br", messages=HELLO)

    # The alert: once per budget, period and level; sent to the webhook off the request path.
    alert = CostAlert.objects.get(kind="budget_reached", scope="team", subject_id=team.pk)
    assert alert.value == 3 * PER_REQUEST
    settings.GATEWAY_ALERT_WEBHOOK_URL = webhook.url
    from gateway.alerts import alerts_deliver

    assert alerts_deliver() == 1
    assert alerts_deliver() == 0
    (sent,) = webhook.received
    assert sent["kind"] == "budget_reached" and sent["subject"] == "team support"
    assert sent["value"] == "0.0540000000" and "refused" in sent["text"]


def test_a_balancer_budget_downgrades_to_the_cheapest_route_across_two_processes(
    setup, second_gateway
):
    pricey = setup.instance(
        "budget-pricey", input_price_per_million=PRICE, output_price_per_million=PRICE
    )
    cheap = setup.instance(
        "budget-cheap", input_price_per_million="0.10", output_price_per_million="0.10"
    )
    balancer = setup.failover_balancer(pricey, cheap, serving_name="bd")
    budget = budget_create(
        balancer=balancer,
        period="monthly",
        limit_usd=Decimal("0.05"),
        warn_share=Decimal("0.5"),
        action="downgrade",
    )
    _, secret = make_api_key()
    a, b = client_for(setup.gateway, secret), client_for(second_gateway, secret)

    assert chat(a, "bd").headers["x-balancer-route"] == "primary"
    wait_counted(budget, PER_REQUEST)
    assert chat(b, "bd").headers["x-balancer-route"] == "primary"
    wait_counted(budget, 2 * PER_REQUEST)
    wait_events(2, balancer_id=balancer.pk)
    budgets_reconcile()  # $0.036 of $0.05: a warning, raised once
    warning = CostAlert.objects.get(kind="budget_warning", scope="balancer")
    assert warning.subject == f"balancer {balancer.name}" and warning.threshold == Decimal("0.025")

    third = chat(a, "bd")
    assert third.headers["x-balancer-route"] == "primary"
    assert third.headers["x-balancer-budget"] == "warning"
    wait_counted(budget, 3 * PER_REQUEST)
    for client in (b, a):  # reached: both processes send it to the cheap route
        downgraded = chat(client, "bd")
        assert downgraded.headers["x-balancer-route"] == "fallback"
        assert downgraded.headers["x-balancer-instance"] == cheap.instance_id
        assert downgraded.headers["x-balancer-decision"] == "budget_downgrade"
        assert downgraded.headers["x-balancer-budget"] == "downgraded"
        assert downgraded.parse().choices[0].message.content
    assert setup.upstream.count("budget-pricey") == 3
    assert setup.upstream.count("budget-cheap") == 2
    events = wait_events(5, balancer_id=balancer.pk)
    assert [e.decision_reason for e in events][-2:] == ["budget_downgrade"] * 2
    budgets_reconcile()
    assert CostAlert.objects.filter(kind="budget_reached", scope="balancer").count() == 1


def test_a_stream_billed_and_then_broken_counts_against_the_budget(setup):
    inst = setup.instance(
        "budget-break",
        Behaviour(chunks=8, break_after_chunks=4),
        input_price_per_million=PRICE,
        output_price_per_million=PRICE,
    )
    make_balancer(
        serving_name="bb",
        routes=[{"name": "m", "intent": "x", "instance": inst, "priority": 1, "is_default": True}],
    )
    key, secret = make_api_key()
    budget = budget_create(api_key=key, limit_usd=Decimal("10"), action="refuse")
    client = client_for(setup.gateway, secret)
    with pytest.raises(openai.APIError):
        for _ in client.chat.completions.create(model="bb", messages=HELLO, stream=True):
            pass
    (event,) = wait_events(1, api_key_id=key.pk)
    assert event.status_code == 502 and event.error_type == "stream_interrupted"
    assert event.cost_usd > 0  # the tokens the upstream produced before it broke
    wait_counted(budget, event.cost_usd)
    (status,) = [s for s in budgets_reconcile() if s.budget.pk == budget.pk]
    assert status.spent == event.cost_usd


def test_budgets_are_checked_from_the_local_count_while_redis_hangs(settings, transactional_db):
    from gateway.hotpath import redis_client

    team = team_create(name="hung")
    budget_create(team=team, limit_usd=Decimal("1"), action="refuse")
    config = SimpleNamespace(budgets=MappingProxyType(budget_specs()))
    now = datetime.now(UTC)
    (spec,) = applicable(config.budgets, key_pk=None, team_pk=team.pk, balancer_pk=None)

    async def check() -> float:
        started = time.monotonic()
        try:
            await counters.check(config, key_pk=1, team_pk=team.pk, balancer_pk=0, now=now)
        except errors.GatewayError as exc:
            assert exc.status == 429
        else:
            raise AssertionError("not refused")
        return time.monotonic() - started

    server: RedisServer
    with own_redis() as server:
        settings.REDIS_URL = server.url
        redis_client.breaker.cache_clear()
        redis_client.redis_sync.cache_clear()
        try:
            # The last shared count this process saw: the whole budget.
            counters.raise_local(spec.pk, period_key(spec.period, now), spec.limit_units)
            server.pause()
            try:
                times = asyncio.run(_repeat(check, 20))
            finally:
                server.resume()
        finally:
            redis_client.breaker.cache_clear()
            redis_client.redis_sync.cache_clear()
    print(f"budget checks with Redis hung: max {max(times) * 1000:.1f} ms over {len(times)}")
    assert max(times) < settings.GATEWAY_REDIS_TIMEOUT_SECONDS + 0.15


async def _repeat(check: Any, times: int) -> list[float]:
    return [await check() for _ in range(times)]
