"""POST /v1/responses (OpenAI's Responses API) in a real uvicorn process, called with the official
openai SDK."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from gateway.models import StoredResponse
from tests.factories import make_balancer, make_instance
from tests.gateway.test_anthropic import anthropic_instance
from tests.gateway.test_openai_sdk import wait_for_events
from tests.upstream_server import Behaviour

pytestmark = pytest.mark.django_db(transaction=True)

WEATHER = {
    "type": "function",
    "name": "weather",
    "description": "The weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {
            "city": {"type": "string", "enum": ["Paris", "Oslo"]},
            "unit": {"type": "string", "default": "C"},
        },
        "required": ["city"],
    },
}


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


def simulator(model: str = "sim-1"):
    return make_instance(provider="simulator", model=model, options={})


def test_a_string_input_is_answered_as_a_response_with_usage_and_recorded_as_responses(setup):
    inst = setup.instance("oa-resp", Behaviour(content="Hi there"))
    balancer = one_route("support", inst)
    raw = setup.client().responses.with_raw_response.create(
        model="support",
        input="Hello",
        instructions="Be brief.",
        max_output_tokens=50,
        temperature=0.2,
        metadata={"ticket": "42"},
        store=False,
        text={
            "format": {
                "type": "json_schema",
                "name": "reply",
                "schema": {"type": "object"},
                "strict": True,
            }
        },
    )
    response = raw.parse()
    assert (
        response.object == "response"
        and response.status == "completed"
        and response.id.startswith("resp_")
    )
    assert response.output_text == "Hi there" and response.model == "oa-resp"
    assert (
        response.usage.input_tokens,
        response.usage.output_tokens,
        response.usage.total_tokens,
    ) == (11, 7, 18)
    assert response.metadata == {"ticket": "42"} and response.instructions == "Be brief."
    assert raw.headers["x-balancer-route"] == "main"
    sent = setup.upstream.requests[-1]
    assert sent["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hello"},
    ]
    assert sent["max_tokens"] == 50 and sent["temperature"] == 0.2 and "metadata" not in sent
    assert sent["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "reply", "schema": {"type": "object"}, "strict": True},
    }
    [event] = wait_for_events(1, balancer=balancer)
    assert (event.endpoint, event.status_code, event.prompt_tokens, event.completion_tokens) == (
        "responses",
        200,
        11,
        7,
    )
    assert float(event.cost_usd) == pytest.approx((11 * 0.5 + 7 * 1.5) / 1e6)
    assert not StoredResponse.objects.exists()


def test_input_items_with_images_and_roles_become_chat_messages(setup):
    one_route("items", setup.instance("oa-items"))
    setup.client().responses.create(
        model="items",
        store=False,
        input=[
            {"role": "developer", "content": "Rules."},
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "What is this?"},
                    {
                        "type": "input_image",
                        "image_url": "https://example.com/a.png",
                        "detail": "low",
                    },
                ],
            },
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "A cat."}],
            },
            {"role": "user", "content": "Sure?"},
        ],
    )
    assert setup.upstream.requests[-1]["messages"] == [
        {"role": "system", "content": "Rules."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?"},
                {
                    "type": "image_url",
                    "image_url": {"url": "https://example.com/a.png", "detail": "low"},
                },
            ],
        },
        {"role": "assistant", "content": "A cat."},
        {"role": "user", "content": "Sure?"},
    ]


def test_a_function_tool_loop_runs_on_the_simulator_with_the_whole_input_and_previous_response_id(
    setup,
):
    one_route("agent", simulator())
    client = setup.client()
    first = client.responses.create(model="agent", input="Weather in Paris?", tools=[WEATHER])
    [call] = first.output
    assert (
        call.type == "function_call" and call.name == "weather" and call.call_id.startswith("call_")
    )
    assert json.loads(call.arguments) == {"city": "Paris", "unit": "C"}
    output = {"type": "function_call_output", "call_id": call.call_id, "output": "18C, sunny"}
    whole = client.responses.create(
        model="agent",
        tools=[WEATHER],
        store=False,
        input=[
            {"role": "user", "content": "Weather in Paris?"},
            call.model_dump(exclude_none=True),
            output,
        ],
    )
    assert whole.output_text == "The weather tool returned: 18C, sunny."
    chained = client.responses.create(
        model="agent", tools=[WEATHER], previous_response_id=first.id, input=[output]
    )
    assert chained.output_text == "The weather tool returned: 18C, sunny."
    assert chained.previous_response_id == first.id


def test_a_streamed_tool_loop_sends_the_responses_events(setup):
    one_route("streamer", simulator("sim-stream"))
    client = setup.client()
    events = list(
        client.responses.create(model="streamer", input="Weather?", tools=[WEATHER], stream=True)
    )
    assert [e.type for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    done = events[-1].response
    [call] = done.output
    assert (
        json.loads(call.arguments) == {"city": "Paris", "unit": "C"}
        and done.usage.output_tokens > 0
    )
    with client.responses.stream(
        model="streamer",
        tools=[WEATHER],
        previous_response_id=done.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "rain"}],
    ) as stream:
        kinds = [e.type for e in stream]
        final = stream.get_final_response()
    assert final.output_text == "The weather tool returned: rain."
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert "response.output_text.delta" in kinds


def test_stored_responses_are_scoped_to_their_key_and_can_be_deleted(setup):
    one_route("kept", setup.instance("oa-kept", Behaviour(content="Kept.")))
    client, other = setup.client(), setup.client()
    made = client.responses.create(model="kept", input="Remember this")
    assert client.responses.retrieve(made.id).output_text == "Kept."
    with pytest.raises(openai.NotFoundError):
        other.responses.retrieve(made.id)
    with pytest.raises(openai.BadRequestError) as foreign:
        other.responses.create(model="kept", input="x", previous_response_id=made.id)
    assert foreign.value.code == "previous_response_not_found"
    with pytest.raises(openai.NotFoundError):
        other.responses.delete(made.id)
    client.responses.delete(made.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(made.id)
    unstored = client.responses.create(model="kept", input="x", store=False)
    assert unstored.store is False
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(unstored.id)


def test_a_tool_loop_fails_over_mid_loop_from_an_anthropic_route_to_the_simulator(setup):
    claude = anthropic_instance(setup, "claude-loop", Behaviour(content="Checking."))
    balancer = setup.failover_balancer(claude, simulator("sim-spare"), serving_name="loop")
    client = setup.client()
    first = client.responses.create(model="loop", input="Weather in Paris?", tools=[WEATHER])
    call = next(item for item in first.output if item.type == "function_call")
    assert (call.name, json.loads(call.arguments)) == (
        "weather",
        {"city": "Paris"},
    )  # the Anthropic upstream's call
    setup.upstream.behaviours["claude-loop"] = Behaviour(status=529)
    second = client.responses.with_raw_response.create(
        model="loop",
        tools=[WEATHER],
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "18C"}],
    )
    assert (
        second.headers["x-balancer-route"] == "fallback"
        and second.headers["x-balancer-attempts"] == "2"
    )
    assert second.parse().output_text == "The weather tool returned: 18C."
    events = wait_for_events(2, balancer=balancer)
    assert [(e.endpoint, e.route, e.attempts) for e in events] == [
        ("responses", "primary", 1),
        ("responses", "fallback", 2),
    ]


def test_bad_requests_are_openai_shaped_400s(setup):
    one_route("strict", setup.instance("oa-strict"))
    client = setup.client()
    with pytest.raises(openai.BadRequestError) as builtin:
        client.responses.create(model="strict", input="x", tools=[{"type": "web_search"}])
    assert builtin.value.param == "tools[0]"
    with pytest.raises(openai.BadRequestError) as empty:
        client.responses.create(model="strict", input=[])
    assert empty.value.param == "input"
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="nope", input="x")
    unknown = httpx.get(
        setup.gateway.v1 + "/nothing-here", headers={"Authorization": f"Bearer {client.api_key}"}
    )
    assert unknown.status_code == 404 and "POST /v1/responses" in unknown.json()["error"]["message"]


def test_a_stream_cut_after_its_first_byte_ends_with_an_error_and_response_failed_and_is_not_stored(
    setup,
):
    one_route(
        "cut",
        setup.instance("oa-rcut", Behaviour(content="a b c d", chunks=4, break_after_chunks=2)),
    )
    events = list(setup.client().responses.create(model="cut", input="x", stream=True))
    assert [e.type for e in events][-2:] == ["error", "response.failed"]
    assert events[-1].response.status == "failed"
    assert not StoredResponse.objects.filter(pk=events[0].response.id).exists()
