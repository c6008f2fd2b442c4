"""Broken, stalled and endless streams; each timeout with its own reason."""

from __future__ import annotations

import time

import httpx
import orjson
import pytest

from tests.factories import make_api_key
from tests.gateway.hostile_upstream import Script
from tests.gateway.test_faults_upstream_answers import hostile_instance, one_route, two_routes
from tests.gateway.test_openai_sdk import wait_for_events
from tests.upstream_server import Behaviour

pytestmark = pytest.mark.django_db(transaction=True)

HELLO = [{"role": "user", "content": "hello"}]


def stream_events(
    gateway, secret: str, model: str, timeout: float = 60
) -> tuple[list[bytes], float]:
    """The SSE data lines of one streamed chat request, and how long it took."""
    started = time.monotonic()
    with httpx.stream(
        "POST",
        gateway.v1 + "/chat/completions",
        headers={"Authorization": f"Bearer {secret}"},
        json={"model": model, "messages": HELLO, "stream": True},
        timeout=timeout,
    ) as response:
        assert response.status_code == 200
        lines = [line.encode() for line in response.iter_lines() if line.startswith("data:")]
    return lines, time.monotonic() - started


def client_secret(setup) -> str:
    _, secret = make_api_key()
    setup.gateway.wait_for_config()
    return secret


def test_streams_cut_after_their_first_event_cool_the_instance_down(setup):
    broken = setup.instance(
        "cuts-streams", Behaviour(content="a b c", chunks=3, break_after_chunks=0)
    )
    spare = setup.instance("streams-fine", Behaviour(content="a b c", chunks=3))
    balancer = setup.failover_balancer(broken, spare, serving_name="cutting")
    secret = client_secret(setup)
    served = []
    for _ in range(30):
        with httpx.stream(
            "POST",
            setup.gateway.v1 + "/chat/completions",
            headers={"Authorization": f"Bearer {secret}"},
            json={"model": "cutting", "messages": HELLO, "stream": True},
            timeout=20,
        ) as response:
            served.append(response.headers["x-balancer-instance"])
            response.read()
    # Three broken streams trip the circuit (the default policy); later ones go to the fallback.
    print(
        f"figure: {setup.upstream.count('cuts-streams')} of 30 streams went to the instance that "
        "cuts them"
    )
    assert setup.upstream.count("cuts-streams") <= 4
    assert served.count(spare.instance_id) >= 26
    events = wait_for_events(30, balancer=balancer)
    broken_events = [e for e in events if e.instance == broken.instance_id]
    assert broken_events and all(
        e.error_type == "stream_interrupted" and e.status_code == 502 for e in broken_events
    )
    assert all(e.attempt_log[-1]["outcome"] == "stream_interrupted" for e in broken_events)


@pytest.mark.parametrize("keeps_sending", ["content", "comments"])
def test_a_long_stream_ends_at_the_request_timeout_with_an_error_event(
    setup, hostile_upstream, keeps_sending
):
    endless = hostile_instance(
        hostile_upstream,
        f"endless-{keeps_sending}",
        Script(stream=keeps_sending, pace=0.5, duration=40),
    )
    balancer = one_route(endless, f"endless-{keeps_sending}", request_timeout=2)
    lines, took = stream_events(setup.gateway, client_secret(setup), balancer.serving_name)
    print(
        f"figure: a 40 s stream of {keeps_sending} ended after {took:.2f} s (request_timeout 2 s)"
    )
    assert 1.8 < took < 5, f"the stream lasted {took:.1f}s against a 2s request_timeout"
    assert lines[-1] == b"data: [DONE]"
    error = orjson.loads(lines[-2][5:])["error"]
    assert error["code"] == "request_timeout" and "request_timeout" in error["message"]
    [event] = wait_for_events(1, balancer=balancer)
    assert (event.status_code, event.error_type) == (504, "request_timeout")
    assert event.attempt_log[-1]["outcome"] == "request_timeout"


def test_a_stalled_stream_ends_with_a_stall_timeout(setup, hostile_upstream):
    stalled = hostile_instance(
        hostile_upstream,
        "stalls-stream",
        Script(stream="stall", duration=20),
        first_byte_timeout=0.5,
    )
    balancer = one_route(stalled, "stalled-stream")
    lines, took = stream_events(setup.gateway, client_secret(setup), "stalled-stream")
    print(
        f"figure: a stream stalled after its first event ended after {took:.2f} s "
        "(first_byte_timeout 0.5 s)"
    )
    assert took < 4
    assert orjson.loads(lines[-2][5:])["error"]["code"] == "stall_timeout"
    [event] = wait_for_events(1, balancer=balancer)
    assert (event.status_code, event.error_type) == (504, "stall_timeout")


def test_a_body_stall_is_a_stall_timeout_not_a_first_byte_timeout(setup, hostile_upstream):
    stalled = hostile_instance(
        hostile_upstream,
        "stalls-body",
        Script(body_stall=True, duration=20),
        first_byte_timeout=0.5,
    )
    balancer = one_route(stalled, "stalled-body")
    secret = client_secret(setup)
    started = time.monotonic()
    response = httpx.post(
        setup.gateway.v1 + "/chat/completions",
        headers={"Authorization": f"Bearer {secret}"},
        json={"model": "stalled-body", "messages": HELLO},
        timeout=20,
    )
    took = time.monotonic() - started
    print(
        f"figure: a body stalled after its headers was a 504 after {took:.2f} s "
        "(first_byte_timeout 0.5 s)"
    )
    assert response.status_code == 504 and took < 4
    assert response.json()["error"]["code"] == "upstream_timeout"
    [event] = wait_for_events(1, balancer=balancer)
    assert event.error_type == "stall_timeout"
    assert event.attempt_log[0]["outcome"] == "stall_timeout"


def test_a_body_stall_fails_over_in_time(setup, hostile_upstream):
    stalled = hostile_instance(
        hostile_upstream,
        "stalls-body-fo",
        Script(body_stall=True, duration=20),
        first_byte_timeout=0.5,
    )
    sound = hostile_instance(hostile_upstream, "answers-body-fo")
    balancer = two_routes(stalled, sound, "stall-fo")
    response = httpx.post(
        setup.gateway.v1 + "/chat/completions",
        headers={"Authorization": f"Bearer {client_secret(setup)}"},
        json={"model": "stall-fo", "messages": HELLO},
        timeout=20,
    )
    assert (
        response.status_code == 200 and response.headers["x-balancer-instance"] == sound.instance_id
    )
    [event] = wait_for_events(1, balancer=balancer)
    assert [a["outcome"] for a in event.attempt_log] == ["stall_timeout", "ok"]


def test_a_silent_upstream_is_still_a_first_byte_timeout(setup):
    silent = setup.instance("silent-headers", Behaviour(delay=3.0), first_byte_timeout=0.3)
    balancer = one_route(silent, "silent-headers")
    response = httpx.post(
        setup.gateway.v1 + "/chat/completions",
        headers={"Authorization": f"Bearer {client_secret(setup)}"},
        json={"model": "silent-headers", "messages": HELLO},
        timeout=20,
    )
    assert response.status_code == 504
    [event] = wait_for_events(1, balancer=balancer)
    assert event.error_type == "first_byte_timeout"


def test_a_request_timeout_shorter_than_the_first_byte_timeout_is_a_request_timeout(setup):
    silent = setup.instance("silent-request", Behaviour(delay=3.0), first_byte_timeout=30)
    balancer = one_route(silent, "silent-request", request_timeout=0.5)
    response = httpx.post(
        setup.gateway.v1 + "/chat/completions",
        headers={"Authorization": f"Bearer {client_secret(setup)}"},
        json={"model": "silent-request", "messages": HELLO},
        timeout=20,
    )
    assert response.status_code == 504
    [event] = wait_for_events(1, balancer=balancer)
    assert event.error_type == "request_timeout"
