"""Latency threshold and hedging (issue 12, brief 003) against real loopback upstreams made slow.

A route's `latency_threshold_ms`: an attempt with no first byte (a stream: no first event) by
then gives way to the next target; with `hedge` the slow attempt keeps running and races it.
The loser is cancelled (the slow upstream sees its connection closed), only the winner is
billed and recorded as served, and the loser's attempt is in the usage event's attempt log.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest

from tests.factories import make_balancer, make_instance
from tests.gateway.slow_upstream import SlowUpstream
from tests.gateway.test_openai_sdk import wait_for_events
from tests.upstream_server import Behaviour

pytestmark = pytest.mark.django_db(transaction=True)

HELLO = [{"role": "user", "content": "hello"}]
# 11 prompt and 7 completion tokens (both upstreams report these) at 0.50 / 1.50 per million.
WINNER_COST = Decimal("0.000016")


@pytest.fixture
def slow() -> Iterator[SlowUpstream]:
    server = SlowUpstream().start()
    yield server
    server.stop()


def slow_instance(server: SlowUpstream, model: str) -> Any:
    # The loser's prices are far higher: billing it would show in the event's cost.
    return make_instance(
        provider="openai",
        base_url=server.base_url,
        model=model,
        api_key="upstream-secret-slow",
        input_price_per_million="900",
        output_price_per_million="900",
    )


def threshold_balancer(
    first: Any, second: Any, *, threshold_ms: int, hedge: bool, serving_name: str
) -> Any:
    return make_balancer(
        serving_name=serving_name,
        routes=[
            {
                "name": "primary",
                "intent": "First.",
                "instance": first,
                "priority": 1,
                "is_default": True,
                "latency_threshold_ms": threshold_ms,
                "hedge": hedge,
            },
            {"name": "fallback", "intent": "Second.", "instance": second, "priority": 2},
        ],
    )


def test_past_the_threshold_the_next_target_answers_and_the_slow_one_is_cut(setup, slow):
    slow.delay = 20.0
    primary = slow_instance(slow, "slow-model")
    fallback = setup.instance("quick-model", Behaviour(content="from fallback"))
    balancer = threshold_balancer(
        primary, fallback, threshold_ms=300, hedge=False, serving_name="threshold"
    )
    client = setup.client()
    started = time.monotonic()
    raw = client.chat.completions.with_raw_response.create(model="threshold", messages=HELLO)
    took = time.monotonic() - started
    assert raw.parse().choices[0].message.content == "from fallback"
    assert raw.headers["x-balancer-instance"] == fallback.instance_id
    assert raw.headers["x-balancer-attempts"] == "2"
    assert took < slow.delay  # the slow upstream never answered it
    # The slow upstream saw its connection closed at the threshold, long before it would answer.
    [closed_after] = slow.wait_closed(1)
    assert closed_after < 10.0 and slow.answered == 0
    [event] = wait_for_events(1, balancer=balancer)
    assert [(a["instance"], a["outcome"]) for a in event.attempt_log] == [
        (primary.instance_id, "latency_threshold"),
        (fallback.instance_id, "ok"),
    ]
    assert event.attempt_log[0]["ms"] >= 300
    assert event.latency_ms < 5000  # the gateway's own figure: the threshold, then the fallback
    assert event.instance == fallback.instance_id and event.route == "fallback"
    assert event.cost_usd == WINNER_COST


def test_a_fast_first_target_is_not_affected_by_its_threshold(setup, slow):
    first = setup.instance("fast-first", Behaviour(content="first"))
    second = slow_instance(slow, "never-called")
    threshold_balancer(first, second, threshold_ms=2000, hedge=True, serving_name="fast-first")
    raw = setup.client().chat.completions.with_raw_response.create(
        model="fast-first", messages=HELLO
    )
    assert raw.parse().choices[0].message.content == "first"
    assert raw.headers["x-balancer-attempts"] == "1"
    assert slow.requests == []


def test_with_nothing_to_try_instead_the_slow_target_is_waited_for(setup, slow):
    slow.delay = 0.8
    only = slow_instance(slow, "only-slow")
    make_balancer(
        serving_name="lonely",
        routes=[
            {
                "name": "only",
                "intent": "All.",
                "instance": only,
                "priority": 1,
                "is_default": True,
                "latency_threshold_ms": 100,
            }
        ],
    )
    raw = setup.client().chat.completions.with_raw_response.create(model="lonely", messages=HELLO)
    assert raw.parse().choices[0].message.content == "from the slow upstream"
    assert raw.headers["x-balancer-attempts"] == "1"
    assert slow.closed == []


def test_a_hedge_races_the_next_target_and_the_first_answer_wins(setup, slow):
    slow.delay = 20.0
    primary = slow_instance(slow, "slow-hedged")
    fallback = setup.instance("hedge-winner", Behaviour(content="hedge won"))
    balancer = threshold_balancer(
        primary, fallback, threshold_ms=200, hedge=True, serving_name="hedged"
    )
    started = time.monotonic()
    raw = setup.client().chat.completions.with_raw_response.create(model="hedged", messages=HELLO)
    assert time.monotonic() - started < slow.delay  # the slow upstream never answered it
    assert raw.parse().choices[0].message.content == "hedge won"
    assert raw.headers["x-balancer-instance"] == fallback.instance_id
    [closed_after] = slow.wait_closed(1)  # the loser was cancelled: its connection closed
    assert closed_after < 10.0 and slow.answered == 0
    [event] = wait_for_events(1, balancer=balancer)
    log = [(a["instance"], a["outcome"], a.get("hedge", False)) for a in event.attempt_log]
    assert log == [
        (primary.instance_id, "hedge_lost", False),
        (fallback.instance_id, "ok", True),
    ]
    assert event.instance == fallback.instance_id and event.status_code == 200
    assert event.cost_usd == WINNER_COST  # one billed answer: the winner's
    assert (event.prompt_tokens, event.completion_tokens) == (11, 7)


def test_in_a_hedge_the_first_target_can_still_win_and_the_hedge_is_cancelled(setup, slow):
    slow.delay = 20.0
    first = setup.instance("slowish-first", Behaviour(delay=1.0, content="first won"))
    hedge = slow_instance(slow, "slow-hedge")
    balancer = threshold_balancer(first, hedge, threshold_ms=200, hedge=True, serving_name="h2")
    raw = setup.client().chat.completions.with_raw_response.create(model="h2", messages=HELLO)
    assert raw.parse().choices[0].message.content == "first won"
    assert raw.headers["x-balancer-instance"] == first.instance_id
    assert raw.headers["x-balancer-attempts"] == "2"
    assert len(slow.requests) == 1  # the hedge was sent...
    [closed_after] = slow.wait_closed(1)  # ...and cancelled when the first target answered
    assert closed_after < 10.0 and slow.answered == 0
    [event] = wait_for_events(1, balancer=balancer)
    assert [(a["instance"], a["outcome"]) for a in event.attempt_log] == [
        (hedge.instance_id, "hedge_lost"),
        (first.instance_id, "ok"),
    ]
    assert event.instance == first.instance_id and event.route == "primary"
    assert event.cost_usd == WINNER_COST


def test_a_stream_whose_first_event_is_late_loses_the_hedge(setup, slow):
    # Headers at once, the first event only after 20 s: time to first byte is the first event.
    slow.delay, slow.headers_first = 20.0, True
    primary = slow_instance(slow, "slow-stream")
    fallback = setup.instance("stream-winner", Behaviour(content="streamed hedge answer", chunks=3))
    balancer = threshold_balancer(
        primary, fallback, threshold_ms=300, hedge=True, serving_name="hedged-stream"
    )
    client = setup.client()
    started = time.monotonic()
    stream = client.chat.completions.create(model="hedged-stream", messages=HELLO, stream=True)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert time.monotonic() - started < slow.delay  # the slow upstream never answered it
    assert text == "streamed hedge answer"
    [closed_after] = slow.wait_closed(1)
    assert closed_after < 10.0 and slow.answered == 0
    [event] = wait_for_events(1, balancer=balancer)
    assert event.stream and event.status_code == 200
    assert [(a["instance"], a["outcome"]) for a in event.attempt_log] == [
        (primary.instance_id, "hedge_lost"),
        (fallback.instance_id, "ok"),
    ]
    assert event.instance == fallback.instance_id
    assert event.cost_usd == WINNER_COST


def test_a_stream_past_its_threshold_without_hedge_moves_to_the_next_target(setup, slow):
    slow.delay, slow.headers_first = 20.0, True
    primary = slow_instance(slow, "slow-stream-cut")
    fallback = setup.instance("stream-next", Behaviour(content="next target", chunks=2))
    balancer = threshold_balancer(
        primary, fallback, threshold_ms=300, hedge=False, serving_name="cut-stream"
    )
    stream = setup.client().chat.completions.create(model="cut-stream", messages=HELLO, stream=True)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text == "next target"
    assert slow.wait_closed(1) and slow.answered == 0
    [event] = wait_for_events(1, balancer=balancer)
    assert [a["outcome"] for a in event.attempt_log] == ["latency_threshold", "ok"]


def test_explain_shows_the_thresholds_of_the_routes_in_order(setup, slow):
    primary = slow_instance(slow, "explained")
    fallback = setup.instance("explained-fb")
    threshold_balancer(primary, fallback, threshold_ms=750, hedge=True, serving_name="explained")
    client = setup.client()
    response = httpx.post(
        setup.gateway.v1 + "/explain",
        json={"model": "explained", "messages": HELLO},
        headers={"Authorization": f"Bearer {client.api_key}"},
    )
    assert response.status_code == 200
    body = response.json()
    assert body["order"] == ["primary", "fallback"]
    assert body["latency_thresholds"] == [{"route": "primary", "threshold_ms": 750, "hedge": True}]
    assert slow.requests == []  # explaining calls no upstream


def test_a_hedge_that_fails_is_replaced_at_once_while_the_slow_one_still_races(setup, slow):
    slow.delay = 20.0
    primary = slow_instance(slow, "slow-three")
    broken = setup.instance("broken-hedge", Behaviour(status=500))
    third = setup.instance("third-wins", Behaviour(content="third"))
    balancer = make_balancer(
        serving_name="three",
        attempt_budget=3,
        routes=[
            {
                "name": "primary",
                "intent": "First.",
                "instance": primary,
                "priority": 1,
                "is_default": True,
                "latency_threshold_ms": 200,
                "hedge": True,
            },
            {"name": "second", "intent": "Second.", "instance": broken, "priority": 2},
            {"name": "third", "intent": "Third.", "instance": third, "priority": 3},
        ],
    )
    started = time.monotonic()
    raw = setup.client().chat.completions.with_raw_response.create(model="three", messages=HELLO)
    assert time.monotonic() - started < slow.delay  # the slow upstream never answered it
    assert raw.parse().choices[0].message.content == "third"
    assert raw.headers["x-balancer-attempts"] == "3"
    assert slow.wait_closed(1) and slow.answered == 0
    [event] = wait_for_events(1, balancer=balancer)
    assert [(a["route"], a["outcome"]) for a in event.attempt_log] == [
        ("second", "status"),
        ("primary", "hedge_lost"),
        ("third", "ok"),
    ]


def test_an_instances_threshold_applies_when_its_route_sets_none(setup, slow):
    """Instance.latency_threshold_ms: the fallback when the route has no threshold (a route's
    own wins, and there is no hedging at instance level: the slow attempt is cut)."""
    slow.delay = 20.0
    primary = slow_instance(slow, "slow-model")
    primary.latency_threshold_ms = 300
    primary.save()
    fallback = setup.instance("quick-model", Behaviour(content="from fallback"))
    balancer = setup.failover_balancer(primary, fallback, serving_name="instance-threshold")
    assert balancer.routes.get(name="primary").latency_threshold_ms is None
    client = setup.client()
    started = time.monotonic()
    raw = client.chat.completions.with_raw_response.create(
        model="instance-threshold", messages=HELLO
    )
    took = time.monotonic() - started
    assert raw.parse().choices[0].message.content == "from fallback"
    assert raw.headers["x-balancer-attempts"] == "2"
    assert took < slow.delay
    [closed_after] = slow.wait_closed(1)
    assert closed_after < 10.0 and slow.answered == 0
    [event] = wait_for_events(1, balancer=balancer)
    assert [(a["instance"], a["outcome"]) for a in event.attempt_log] == [
        (primary.instance_id, "latency_threshold"),
        (fallback.instance_id, "ok"),
    ]
    assert event.attempt_log[0]["ms"] >= 300
    assert event.cost_usd == WINNER_COST
    explained = httpx.post(
        setup.gateway.v1 + "/explain",
        json={"model": "instance-threshold", "messages": HELLO},
        headers={"Authorization": f"Bearer {client.api_key}"},
    ).json()
    assert explained["latency_thresholds"] == [
        {"route": "primary", "instance": primary.instance_id, "threshold_ms": 300, "hedge": False}
    ]


def test_a_routes_threshold_wins_over_its_instances(setup, slow):
    slow.delay = 1.0
    primary = slow_instance(slow, "slow-model")
    primary.latency_threshold_ms = 100  # would cut at 0.1 s
    primary.save()
    fallback = setup.instance("quick-model", Behaviour(content="from fallback"))
    threshold_balancer(primary, fallback, threshold_ms=5000, hedge=False, serving_name="rt")
    raw = setup.client().chat.completions.with_raw_response.create(model="rt", messages=HELLO)
    assert raw.headers["x-balancer-instance"] == primary.instance_id  # waited: 1 s < 5 s
    assert raw.headers["x-balancer-attempts"] == "1"


def test_the_instance_api_and_form_take_a_latency_threshold(admin_client, setup):
    instance = setup.instance("api-model")
    response = admin_client.patch(
        f"/api/instances/{instance.instance_id}/",
        {"latency_threshold_ms": 750},
        content_type="application/json",
    )
    assert response.status_code == 200, response.content
    assert response.json()["latency_threshold_ms"] == 750
    refused = admin_client.patch(
        f"/api/instances/{instance.instance_id}/",
        {"latency_threshold_ms": 5},
        content_type="application/json",
    )
    assert refused.status_code == 400 and "latency_threshold_ms" in refused.json()
    page = admin_client.get(f"/instances/{instance.instance_id}/").content.decode()
    assert 'name="latency_threshold_ms"' in page and 'value="750"' in page
