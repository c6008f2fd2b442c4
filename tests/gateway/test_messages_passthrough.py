"""Issue 17's leftovers on /v1/messages, with the official anthropic SDK in a real uvicorn process:
the client's anthropic-* headers forwarded on a pass-through to an Anthropic instance, the stop
sequence read back from OpenAI-compatible upstreams when it can be known, and a hedged race
between two Anthropic instances answering with the winner's own body."""

from __future__ import annotations

import httpx
import orjson
import pytest

from tests.factories import make_balancer
from tests.gateway.test_anthropic import anthropic_instance
from tests.gateway.test_messages_api import claude, one_route
from tests.gateway.test_openai_sdk import wait_for_events
from tests.upstream_server import Behaviour

pytestmark = pytest.mark.django_db(transaction=True)

HELLO = [{"role": "user", "content": "Count to five."}]


def test_anthropic_beta_and_version_headers_reach_an_anthropic_instance(setup):
    one_route("beta", anthropic_instance(setup, "claude-beta", Behaviour(content="Beta on.")))
    client = claude(setup)
    raw = client.beta.messages.with_raw_response.create(
        model="beta",
        max_tokens=30,
        messages=HELLO,
        betas=["token-efficient-tools-2025-02-19", "interleaved-thinking-2025-05-14"],
    )
    assert raw.parse().content[0].text == "Beta on."
    asked = raw.http_response.request.headers
    sent = setup.upstream.messages_headers[-1]
    assert (
        sent["anthropic-beta"]
        == asked["anthropic-beta"]
        == "token-efficient-tools-2025-02-19,interleaved-thinking-2025-05-14"
    )
    assert sent["anthropic-version"] == asked["anthropic-version"]  # the SDK's, passed on
    assert sent["x-api-key"] == "sk-ant-test"  # the instance's key, never the client's
    # A header the client did not send is not made up; other headers are not forwarded.
    httpx.post(
        setup.gateway.v1 + "/messages",
        headers={
            "x-api-key": client.api_key,
            "anthropic-version": "2023-01-01",
            "x-custom": "not forwarded",
        },
        json={"model": "beta", "max_tokens": 30, "messages": HELLO},
    ).raise_for_status()
    sent = setup.upstream.messages_headers[-1]
    assert sent["anthropic-version"] == "2023-01-01"
    assert "anthropic-beta" not in sent and "x-custom" not in sent


def test_anthropic_headers_do_not_reach_an_openai_compatible_upstream(setup):
    one_route("beta-oa", setup.instance("oa-beta", Behaviour(content="Translated.")))
    message = claude(setup).beta.messages.create(
        model="beta-oa", max_tokens=30, messages=HELLO, betas=["token-efficient-tools-2025-02-19"]
    )
    assert message.content[0].text == "Translated."
    assert setup.upstream.messages_headers == []  # it went to /v1/chat/completions


def test_a_stop_sequence_named_by_the_upstream_is_read_back(setup):
    one_route("stops", setup.instance("oa-stops", Behaviour(content="1 2 3", stop_reason="4")))
    client = claude(setup)
    message = client.messages.create(
        model="stops", max_tokens=30, messages=HELLO, stop_sequences=["4", "five"]
    )
    assert (message.stop_reason, message.stop_sequence) == ("stop_sequence", "4")
    assert setup.upstream.requests[-1]["stop"] == ["4", "five"]
    with client.messages.stream(
        model="stops", max_tokens=30, messages=HELLO, stop_sequences=["4", "five"]
    ) as stream:
        final = stream.get_final_message()
    assert (final.stop_reason, final.stop_sequence) == ("stop_sequence", "4")


def test_a_stop_string_left_in_the_text_is_read_back_and_an_unknown_one_is_end_turn(setup):
    one_route(
        "kept-stop", setup.instance("oa-kept-stop", Behaviour(content="one two END", chunks=3))
    )
    one_route("no-stop", setup.instance("oa-no-stop", Behaviour(content="one two")))
    client = claude(setup)
    message = client.messages.create(
        model="kept-stop", max_tokens=30, messages=HELLO, stop_sequences=["END"]
    )
    assert (message.stop_reason, message.stop_sequence) == ("stop_sequence", "END")
    with client.messages.stream(
        model="kept-stop", max_tokens=30, messages=HELLO, stop_sequences=["END"]
    ) as stream:
        final = stream.get_final_message()
    assert (final.stop_reason, final.stop_sequence) == ("stop_sequence", "END")
    # A plain OpenAI answer: finish_reason "stop" does not say a stop string matched.
    message = client.messages.create(
        model="no-stop", max_tokens=30, messages=HELLO, stop_sequences=["END"]
    )
    assert (message.stop_reason, message.stop_sequence) == ("end_turn", None)


def test_a_hedged_race_of_two_anthropic_instances_answers_with_the_winners_own_body(setup):
    slow = anthropic_instance(setup, "claude-slow", Behaviour(delay=5.0, content="Slow."))
    quick = anthropic_instance(setup, "claude-quick", Behaviour(content="Quick."))
    balancer = make_balancer(
        serving_name="claude-hedged",
        routes=[
            {
                "name": "primary",
                "intent": "First.",
                "instance": slow,
                "priority": 1,
                "is_default": True,
                "latency_threshold_ms": 200,
                "hedge": True,
            },
            {"name": "fallback", "intent": "Second.", "instance": quick, "priority": 2},
        ],
    )
    raw = claude(setup).messages.with_raw_response.create(
        model="claude-hedged", max_tokens=30, messages=HELLO
    )
    assert raw.headers["x-balancer-instance"] == quick.instance_id
    body = orjson.loads(raw.http_response.content)
    assert body["id"] == "msg_fake" and body["model"] == "claude-quick"  # untranslated
    assert body["content"] == [{"type": "text", "text": "Quick."}]
    [event] = wait_for_events(1, balancer=balancer)
    assert [a["outcome"] for a in event.attempt_log] == ["hedge_lost", "ok"]
