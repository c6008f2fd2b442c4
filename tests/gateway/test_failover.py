"""Retries, failover, cooldowns and timeouts against a real loopback upstream."""

from __future__ import annotations

import time

import httpx
import openai
import pytest

from tests.factories import make_balancer
from tests.gateway.test_openai_sdk import wait_for_events
from tests.upstream_server import Behaviour

pytestmark = pytest.mark.django_db(transaction=True)

HELLO = [{"role": "user", "content": "hello"}]


def test_it_fails_over_when_the_primary_500s(setup):
    primary = setup.instance("p500", Behaviour(status=500))
    fallback = setup.instance("fb-ok", Behaviour(content="from fallback"))
    balancer = setup.failover_balancer(primary, fallback, serving_name="fo")
    raw = setup.client().chat.completions.with_raw_response.create(model="fo", messages=HELLO)
    assert raw.parse().choices[0].message.content == "from fallback"
    assert raw.headers["x-balancer-route"] == "fallback"
    assert raw.headers["x-balancer-attempts"] == "2"
    [event] = wait_for_events(1, balancer=balancer)
    assert [a["outcome"] for a in event.attempt_log] == ["status", "ok"]
    assert event.attempt_log[0]["status"] == 500


@pytest.mark.parametrize("status", [401, 403, 404, 408, 429, 503])
def test_it_retries_statuses_that_blame_the_instance(setup, status):
    primary = setup.instance(f"p{status}", Behaviour(status=status))
    fallback = setup.instance(f"fb{status}")
    setup.failover_balancer(primary, fallback, serving_name=f"fo{status}")
    raw = setup.client().chat.completions.with_raw_response.create(
        model=f"fo{status}", messages=HELLO
    )
    assert raw.headers["x-balancer-instance"] == fallback.instance_id


def test_other_client_errors_come_back_unchanged(setup):
    body = {
        "error": {
            "message": "max_tokens is too large",
            "type": "invalid_request_error",
            "param": "max_tokens",
            "code": "bad",
        }
    }
    primary = setup.instance("p400", Behaviour(status=400, error_body=body))
    fallback = setup.instance("fb400")
    setup.failover_balancer(primary, fallback, serving_name="fo400")
    with pytest.raises(openai.BadRequestError) as err:
        setup.client().chat.completions.create(model="fo400", messages=HELLO)
    assert err.value.body == body["error"]
    assert setup.upstream.count("fb400") == 0


def test_every_attempt_failing_is_a_502_naming_the_attempts_without_secrets(setup):
    a = setup.instance("dead-a", Behaviour(status=500))
    b = setup.instance("dead-b", Behaviour(status=502))
    setup.failover_balancer(a, b, serving_name="alldead")
    with pytest.raises(openai.APIStatusError) as err:
        setup.client().chat.completions.create(model="alldead", messages=HELLO)
    assert err.value.status_code == 502
    message = err.value.body["message"]
    assert a.instance_id in message and b.instance_id in message
    assert "upstream-secret" not in message


def test_a_time_to_first_byte_timeout_moves_on_and_the_last_timeout_is_a_504(setup):
    slow = setup.instance("slow", Behaviour(delay=2.0), first_byte_timeout=0.2)
    fast = setup.instance("fast")
    setup.failover_balancer(slow, fast, serving_name="ttfb")
    client = setup.client()
    started = time.monotonic()
    raw = client.chat.completions.with_raw_response.create(model="ttfb", messages=HELLO)
    assert raw.headers["x-balancer-instance"] == fast.instance_id
    assert time.monotonic() - started < 1.5
    slow2 = setup.instance("slow2", Behaviour(delay=2.0), first_byte_timeout=0.2)
    make_balancer(
        serving_name="only-slow",
        routes=[{"name": "m", "intent": "x", "instance": slow2, "priority": 1, "is_default": True}],
    )
    setup.gateway.wait_for_config()
    with pytest.raises(openai.APIStatusError) as err:
        client.chat.completions.create(model="only-slow", messages=HELLO)
    assert err.value.status_code == 504


def test_a_connection_refused_fails_over(setup):
    from tests.live_server import free_port

    gone = setup.instance("gone")
    gone.base_url = f"http://127.0.0.1:{free_port()}/v1"
    gone.save()
    ok = setup.instance("ok-after-refused")
    setup.failover_balancer(gone, ok, serving_name="refused")
    raw = setup.client().chat.completions.with_raw_response.create(model="refused", messages=HELLO)
    assert raw.headers["x-balancer-instance"] == ok.instance_id


def test_consecutive_failures_put_an_instance_in_cooldown(setup):
    bad = setup.instance("flaky", Behaviour(status=500))
    good = setup.instance("steady")
    setup.failover_balancer(bad, good, serving_name="cool")
    client = setup.client()
    for _ in range(6):
        client.chat.completions.create(model="cool", messages=HELLO)
    # Three consecutive failures trip the circuit; later requests skip the instance.
    assert setup.upstream.count("flaky") == 3
    assert setup.upstream.count("steady") == 6


def test_retry_after_sets_the_cooldown(setup):
    limited = setup.instance("limited", Behaviour(status=429, retry_after="1"))
    other = setup.instance("other")
    setup.failover_balancer(limited, other, serving_name="ra")
    client = setup.client()
    client.chat.completions.create(model="ra", messages=HELLO)
    client.chat.completions.create(model="ra", messages=HELLO)
    assert setup.upstream.count("limited") == 1
    setup.upstream.behaviours["limited"] = Behaviour()
    time.sleep(1.3)
    raw = client.chat.completions.with_raw_response.create(model="ra", messages=HELLO)
    assert (
        raw.headers["x-balancer-instance"] == limited.instance_id
    )  # the half-open trial succeeded


def test_when_everything_is_cooling_it_tries_the_least_recently_failed(setup):
    a = setup.instance("cool-a", Behaviour(status=500))
    b = setup.instance("cool-b", Behaviour(status=500))
    setup.failover_balancer(a, b, serving_name="allcool", attempt_budget=2)
    client = setup.client()
    for _ in range(3):
        with pytest.raises(openai.APIStatusError):
            client.chat.completions.create(model="allcool", messages=HELLO)
    before = setup.upstream.count("cool-a") + setup.upstream.count("cool-b")
    setup.upstream.behaviours["cool-a"] = Behaviour(content="back")
    setup.upstream.behaviours["cool-b"] = Behaviour(content="back")
    answer = client.chat.completions.create(model="allcool", messages=HELLO)
    assert answer.choices[0].message.content == "back"
    assert setup.upstream.count("cool-a") + setup.upstream.count("cool-b") == before + 1


def test_streams_fail_over_before_the_first_byte(setup):
    silent = setup.instance("silent", Behaviour(first_chunk_delay=2.0), first_byte_timeout=0.3)
    talker = setup.instance("talker", Behaviour(content="x y", chunks=2))
    setup.failover_balancer(silent, talker, serving_name="sfo")
    client = setup.client()
    with client.chat.completions.with_streaming_response.create(
        model="sfo", messages=HELLO, stream=True
    ) as response:
        assert response.headers["x-balancer-instance"] == talker.instance_id
        text = "".join(c.choices[0].delta.content or "" for c in response.parse() if c.choices)
    assert text == "x y"


def test_a_stream_broken_after_the_first_byte_ends_with_an_error_event(setup):
    broken = setup.instance("broken", Behaviour(content="a b c d", chunks=4, break_after_chunks=2))
    spare = setup.instance("spare")
    balancer = setup.failover_balancer(broken, spare, serving_name="sbreak")
    client = setup.client()
    received = []
    with pytest.raises(openai.APIError):
        for chunk in client.chat.completions.create(model="sbreak", messages=HELLO, stream=True):
            received.append(chunk)
    assert received  # the client had already seen bytes: no failover
    assert setup.upstream.count("spare") == 0
    [event] = wait_for_events(1, balancer=balancer)
    assert event.error_type == "stream_interrupted"


def test_the_route_override_header_picks_the_route(setup):
    a = setup.instance("ov-a")
    b = setup.instance("ov-b")
    setup.failover_balancer(a, b, serving_name="ov")
    client = setup.client(allow_route_override=True)
    raw = client.chat.completions.with_raw_response.create(
        model="ov", messages=HELLO, extra_headers={"X-Balancer-Route": "fallback"}
    )
    assert raw.headers["x-balancer-route"] == "fallback"
    assert raw.headers["x-balancer-decision"] == "override"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(
            model="ov", messages=HELLO, extra_headers={"X-Balancer-Route": "nope"}
        )


def test_weighted_mode_spreads_first_routes_by_weight(setup):
    a = setup.instance("w-a")
    b = setup.instance("w-b")
    make_balancer(
        serving_name="weighted",
        routing_mode="weighted",
        routes=[
            {
                "name": "a",
                "intent": "x",
                "instance": a,
                "priority": 1,
                "weight": 300,
                "is_default": True,
            },
            {"name": "b", "intent": "x", "instance": b, "priority": 2, "weight": 100},
        ],
    )
    client = setup.client()
    routes = [
        client.chat.completions.with_raw_response.create(model="weighted", messages=HELLO).headers[
            "x-balancer-route"
        ]
        for _ in range(8)
    ]
    assert routes.count("a") == 6 and routes.count("b") == 2


def test_a_target_group_rotates_members(setup):
    members = [setup.instance(f"grp-{n}") for n in range(3)]
    setup.group_balancer(members, serving_name="rotating")
    client = setup.client()
    seen = {
        client.chat.completions.with_raw_response.create(model="rotating", messages=HELLO).headers[
            "x-balancer-instance"
        ]
        for _ in range(6)
    }
    assert seen == {m.instance_id for m in members}


def test_healthz_reports_the_config_version(setup, gateway):
    body = httpx.get(gateway.base_url + "/healthz").json()
    assert body["status"] == "ok"
