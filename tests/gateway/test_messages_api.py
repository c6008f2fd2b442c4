"""POST /v1/messages (Anthropic's Messages API) in a real uvicorn process, called with the official
anthropic SDK."""

from __future__ import annotations

import anthropic
import httpx
import orjson
import pytest

from gateway.hotpath import messages_wire
from tests.factories import make_api_key, make_balancer
from tests.gateway.test_anthropic import anthropic_instance
from tests.gateway.test_openai_sdk import wait_for_events
from tests.upstream_server import Behaviour

pytestmark = pytest.mark.django_db(transaction=True)

IMAGE = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAA"
    "DUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)


def claude(setup, secret: str | None = None, *, bearer: bool = False) -> anthropic.Anthropic:
    if secret is None:
        _, secret = make_api_key()
    setup.gateway.wait_for_config()
    if bearer:
        return anthropic.Anthropic(
            base_url=setup.gateway.base_url,
            auth_token=secret,
            api_key=None,
            max_retries=0,
            timeout=20,
        )
    return anthropic.Anthropic(
        base_url=setup.gateway.base_url, api_key=secret, max_retries=0, timeout=20
    )


def one_route(serving_name: str, instance) -> object:
    return make_balancer(
        serving_name=serving_name,
        routes=[
            {
                "name": "main",
                "intent": "All.",
                "instance": instance,
                "priority": 1,
                "is_default": True,
            }
        ],
    )


def test_a_message_is_routed_to_an_openai_upstream_as_a_chat_request_and_answered_in_messages_shape(
    setup,
):
    inst = setup.instance("oa-msg", Behaviour(content="Hi there"))
    balancer = one_route("support", inst)
    raw = claude(setup).messages.with_raw_response.create(
        model="support",
        max_tokens=64,
        system="Be brief.",
        extra_body={"temperature": 0.3},
        stop_sequences=["END"],
        metadata={"user_id": "u-7"},
        messages=[
            {"role": "user", "content": "Hello"},
            {"role": "assistant", "content": "Hi."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": IMAGE},
                    },
                ],
            },
        ],
    )
    message = raw.parse()
    assert message.type == "message" and message.role == "assistant"
    assert [b.type for b in message.content] == ["text"] and message.content[0].text == "Hi there"
    assert (
        message.stop_reason == "end_turn"
        and message.model == "oa-msg"
        and message.id.startswith("msg_")
    )
    assert (message.usage.input_tokens, message.usage.output_tokens) == (11, 7)
    assert (
        raw.headers["x-balancer-route"] == "main"
        and raw.headers["x-balancer-instance"] == inst.instance_id
    )
    sent = setup.upstream.requests[-1]
    assert sent["model"] == "oa-msg" and sent["max_tokens"] == 64 and sent["temperature"] == 0.3
    assert sent["stop"] == ["END"] and sent["user"] == "u-7"
    assert sent["messages"][:3] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "Hi."},
    ]
    assert sent["messages"][3]["content"][1] == {
        "type": "image_url",
        "image_url": {"url": f"data:image/png;base64,{IMAGE}"},
    }
    [event] = wait_for_events(1, balancer=balancer)
    assert (event.endpoint, event.status_code, event.route) == ("messages", 200, "main")
    assert (event.prompt_tokens, event.completion_tokens) == (11, 7)
    assert float(event.cost_usd) == pytest.approx((11 * 0.5 + 7 * 1.5) / 1e6)


def test_bearer_auth_works_like_x_api_key(setup):
    one_route("bearer", setup.instance("oa-bearer"))
    message = claude(setup, bearer=True).messages.create(
        model="bearer", max_tokens=10, messages=[{"role": "user", "content": "x"}]
    )
    assert message.content[0].text == "Hello from the fake upstream."


def test_a_stream_is_the_messages_event_stream_with_usage(setup):
    inst = setup.instance("oa-stream", Behaviour(content="one two three", chunks=3))
    balancer = one_route("streamer", inst)
    client = claude(setup)  # waits for the new key to reach the gateway
    with httpx.stream(
        "POST",
        setup.gateway.v1 + "/messages",
        headers={"x-api-key": client.api_key, "anthropic-version": "2023-06-01"},
        json={
            "model": "streamer",
            "max_tokens": 20,
            "stream": True,
            "messages": [{"role": "user", "content": "Hi"}],
        },
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        names = [line[7:] for line in response.iter_lines() if line.startswith("event: ")]
    assert names == [
        "message_start",
        "ping",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    with client.messages.stream(
        model="streamer", max_tokens=20, messages=[{"role": "user", "content": "Hi"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "one two three" and final.content[0].text == text
    assert (final.usage.input_tokens, final.usage.output_tokens) == (
        11,
        7,
    ) and final.stop_reason == "end_turn"
    events = wait_for_events(2, balancer=balancer)
    assert all(e.endpoint == "messages" and e.stream and e.completion_tokens == 7 for e in events)


def test_an_anthropic_upstream_serves_tools_and_tool_results(setup):
    inst = anthropic_instance(setup, "claude-up", Behaviour(content="Checking."))
    one_route("claude", inst)
    client = claude(setup)
    tools = [
        {
            "name": "weather",
            "description": "Weather by city.",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
        }
    ]
    first = client.messages.create(
        model="claude",
        max_tokens=100,
        tools=tools,
        tool_choice={"type": "any"},
        messages=[{"role": "user", "content": "Weather in Paris?"}],
    )
    assert first.stop_reason == "tool_use"
    assert [b.type for b in first.content] == ["text", "tool_use"]
    call = first.content[1]
    assert (call.name, call.input, call.id) == ("weather", {"city": "Paris"}, "toolu_1")
    sent = setup.upstream.requests[-1]
    assert sent["tools"] == [
        {
            "name": "weather",
            "description": "Weather by city.",
            "input_schema": tools[0]["input_schema"],
        }
    ]
    assert sent["tool_choice"] == {"type": "any"}
    client.messages.create(
        model="claude",
        max_tokens=100,
        messages=[
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": [b.model_dump(exclude_none=True) for b in first.content],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C, sunny"}
                ],
            },
        ],
    )
    turns = setup.upstream.requests[-1]["messages"]
    assert turns[1] == {
        "role": "assistant",
        "content": [
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}},
        ],
    }
    assert turns[2] == {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C, sunny"}],
    }


def test_a_failing_route_fails_over_to_the_next(setup):
    busy = anthropic_instance(setup, "claude-down", Behaviour(status=529))
    spare = setup.instance("oa-spare", Behaviour(content="Spare here"))
    balancer = setup.failover_balancer(busy, spare, serving_name="fo")
    raw = claude(setup).messages.with_raw_response.create(
        model="fo", max_tokens=10, messages=[{"role": "user", "content": "x"}]
    )
    assert raw.parse().content[0].text == "Spare here"
    assert (
        raw.headers["x-balancer-instance"] == spare.instance_id
        and raw.headers["x-balancer-attempts"] == "2"
    )
    [event] = wait_for_events(1, balancer=balancer)
    assert event.endpoint == "messages" and event.attempts == 2


def test_errors_are_anthropic_shaped(setup):
    one_route("errs", setup.instance("oa-errs"))
    client = claude(setup)
    with pytest.raises(anthropic.NotFoundError) as missing:
        client.messages.create(
            model="nope", max_tokens=10, messages=[{"role": "user", "content": "x"}]
        )
    assert missing.value.body == {
        "type": "error",
        "error": {
            "type": "not_found_error",
            "message": "The model 'nope' does not exist or is disabled.",
        },
    }
    with pytest.raises(anthropic.BadRequestError) as bad:
        client.messages.create(model="errs", max_tokens=10, messages=[])
    assert bad.value.body["error"]["type"] == "invalid_request_error"
    wrong_key = anthropic.Anthropic(
        base_url=setup.gateway.base_url, api_key="sb-wrong", max_retries=0
    )
    with pytest.raises(anthropic.AuthenticationError) as unauthenticated:
        wrong_key.messages.create(
            model="errs", max_tokens=10, messages=[{"role": "user", "content": "x"}]
        )
    assert unauthenticated.value.body["type"] == "error"
    no_max = httpx.post(
        setup.gateway.v1 + "/messages",
        headers={"x-api-key": client.api_key},
        json={"model": "errs", "messages": [{"role": "user", "content": "x"}]},
    )
    assert no_max.status_code == 400 and no_max.json()["error"]["message"].startswith("max_tokens")
    server_tool = httpx.post(
        setup.gateway.v1 + "/messages",
        headers={"x-api-key": client.api_key},
        json={
            "model": "errs",
            "max_tokens": 5,
            "messages": [{"role": "user", "content": "x"}],
            "tools": [{"type": "web_search_20250305", "name": "web_search"}],
        },
    )
    assert (
        server_tool.status_code == 400 and "server tool" in server_tool.json()["error"]["message"]
    )


def test_count_tokens_is_the_gateways_estimate_and_checks_the_model(setup):
    one_route("counted", setup.instance("oa-count"))
    client = claude(setup)
    turns = [{"role": "user", "content": "How many tokens is this?"}]
    counted = client.messages.count_tokens(model="counted", system="Be brief.", messages=turns)
    assert counted.input_tokens == messages_wire.count_tokens(
        {"model": "counted", "system": "Be brief.", "messages": turns}
    )
    assert (
        counted.input_tokens == 4 + 3 + 4 + 6 + 3
    )  # framing + "Be brief." + framing + 6 words/marks + priming
    with pytest.raises(anthropic.NotFoundError):
        client.messages.count_tokens(model="nope", messages=turns)


def test_a_streamed_tool_loop_runs_on_the_simulator(setup):
    from tests.factories import make_instance

    one_route("sim-agent", make_instance(provider="simulator", model="sim-tools", options={}))
    client = claude(setup)
    tools = [
        {
            "name": "lookup",
            "input_schema": {
                "type": "object",
                "properties": {"order": {"type": "integer", "minimum": 7}},
            },
        }
    ]
    with client.messages.stream(
        model="sim-agent",
        max_tokens=50,
        tools=tools,
        messages=[{"role": "user", "content": "Where is my order?"}],
    ) as stream:
        first = stream.get_final_message()
    assert first.stop_reason == "tool_use"
    [call] = first.content
    assert (call.type, call.name, call.input) == ("tool_use", "lookup", {"order": 7})
    second = client.messages.create(
        model="sim-agent",
        max_tokens=50,
        tools=tools,
        messages=[
            {"role": "user", "content": "Where is my order?"},
            {"role": "assistant", "content": [call.model_dump(exclude_none=True)]},
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": call.id,
                        "content": [{"type": "text", "text": "shipped"}],
                    }
                ],
            },
        ],
    )
    assert (
        second.stop_reason == "end_turn"
        and second.content[0].text == "The lookup tool returned: shipped."
    )


def test_a_tool_loop_fails_over_mid_loop_from_an_anthropic_route_to_the_simulator(setup):
    from tests.factories import make_instance

    claude_up = anthropic_instance(setup, "claude-mid", Behaviour(content="Looking."))
    balancer = setup.failover_balancer(
        claude_up,
        make_instance(provider="simulator", model="sim-mid", options={}),
        serving_name="mid-loop",
    )
    client = claude(setup)
    tools = [
        {
            "name": "weather",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
        }
    ]
    turns = [{"role": "user", "content": "Weather in Paris?"}]
    first = client.messages.create(model="mid-loop", max_tokens=50, tools=tools, messages=turns)
    call = next(b for b in first.content if b.type == "tool_use")
    setup.upstream.behaviours["claude-mid"] = Behaviour(status=529)
    turns += [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "18C"}],
        },
    ]
    with client.messages.stream(
        model="mid-loop", max_tokens=50, tools=tools, messages=turns
    ) as stream:
        final = stream.get_final_message()
    assert final.content[0].text == "The weather tool returned: 18C."
    events = wait_for_events(2, balancer=balancer)
    assert [(e.endpoint, e.route, e.attempts) for e in events] == [
        ("messages", "primary", 1),
        ("messages", "fallback", 2),
    ]


def test_a_stream_cut_after_its_first_byte_ends_with_an_error_event(setup):
    one_route(
        "cut",
        setup.instance("oa-cut", Behaviour(content="a b c d", chunks=4, break_after_chunks=2)),
    )
    client = claude(setup)
    with pytest.raises(anthropic.APIStatusError) as cut:
        with client.messages.stream(
            model="cut", max_tokens=20, messages=[{"role": "user", "content": "x"}]
        ) as stream:
            for _ in stream:
                pass
    assert cut.value.body["type"] == "error" and cut.value.body["error"]["type"] == "api_error"


def test_an_anthropic_instance_gets_the_clients_body_and_answers_untranslated(setup):
    inst = anthropic_instance(setup, "claude-native", Behaviour(content="Native."))
    balancer = one_route("native", inst)
    client = claude(setup)
    turns = [
        {
            "role": "user",
            "content": [{"type": "text", "text": "Hi", "cache_control": {"type": "ephemeral"}}],
        }
    ]
    raw = client.messages.with_raw_response.create(
        model="native",
        max_tokens=30,
        messages=turns,
        extra_body={"top_k": 5},
        system=[{"type": "text", "text": "Be brief."}],
    )
    sent = setup.upstream.requests[-1]
    # What a translation through chat would lose (top_k, cache_control, system blocks) arrives as
    # sent.
    assert sent == {
        "model": "claude-native",
        "max_tokens": 30,
        "messages": turns,
        "top_k": 5,
        "system": [{"type": "text", "text": "Be brief."}],
        "stream": False,
    }
    assert setup.upstream.auth_headers[-1] == "sk-ant-test"
    assert orjson.loads(
        raw.http_response.content
    ) == {  # the instance's own body, byte for byte in content
        "id": "msg_fake",
        "type": "message",
        "role": "assistant",
        "model": "claude-native",
        "content": [{"type": "text", "text": "Native."}],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 13, "output_tokens": 5},
    }
    with httpx.stream(
        "POST",
        setup.gateway.v1 + "/messages",
        headers={"x-api-key": client.api_key},
        json={"model": "native", "max_tokens": 30, "stream": True, "messages": turns},
    ) as response:
        names = [line[7:] for line in response.iter_lines() if line.startswith("event: ")]
    # The fake instance's own order (its ping after content_block_start), not the gateway's
    # translation.
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    events = wait_for_events(2, balancer=balancer)
    assert [(e.endpoint, e.prompt_tokens, e.completion_tokens) for e in events] == [
        ("messages", 13, 5)
    ] * 2
