"""The OpenAI Agents SDK (`openai-agents`) running a one-tool agent against the gateway only: its
Responses model and its chat-completions model, run and streamed, in a real uvicorn process, against
balancers served by the simulator, an OpenAI-wire and an Anthropic-wire upstream, and failing over
from one wire format to the other in the middle of its tool loop. Tracing is off (it would export to
OpenAI); nothing leaves 127.0.0.1."""

from __future__ import annotations

import asyncio

import pytest
from agents import (
    Agent,
    OpenAIChatCompletionsModel,
    OpenAIResponsesModel,
    Runner,
    function_tool,
    set_tracing_disabled,
)
from openai import AsyncOpenAI

from tests.factories import make_api_key
from tests.gateway.client_upstreams import KINDS, failing_over, served_by, tool_city
from tests.gateway.test_openai_sdk import wait_for_events
from tests.upstream_server import Behaviour

pytestmark = pytest.mark.django_db(transaction=True)

set_tracing_disabled(True)

calls: list[str] = []
on_call: list = []  # run when the tool is called: a test breaks an upstream mid-loop with one


@function_tool
def weather(city: str) -> str:
    """The weather in a city."""
    calls.append(city)
    for hook in on_call:
        hook()
    return f"18C in {city}"


def forecaster(setup, serving_name: str, kind: str) -> Agent:
    _, secret = make_api_key()
    setup.gateway.wait_for_config()
    client = AsyncOpenAI(base_url=setup.gateway.v1, api_key=secret, max_retries=0, timeout=20)
    model = (
        OpenAIResponsesModel(model=serving_name, openai_client=client)
        if kind == "responses"
        else OpenAIChatCompletionsModel(model=serving_name, openai_client=client)
    )
    return Agent(
        name="forecaster",
        instructions="Answer with the weather tool.",
        tools=[weather],
        model=model,
    )


@pytest.mark.parametrize("upstream_kind", KINDS)
@pytest.mark.parametrize("kind", ["responses", "chat"])
def test_a_one_tool_agent_runs_its_loop_through_the_gateway(setup, kind, upstream_kind):
    balancer = served_by(setup, upstream_kind, f"agents-{kind}-{upstream_kind}")
    agent = forecaster(setup, f"agents-{kind}-{upstream_kind}", kind)
    calls.clear()
    result = Runner.run_sync(agent, "What is the weather in Paris?")
    # The upstream calls the tool (the simulator with an example of its schema), then reads the
    # result.
    city = tool_city(upstream_kind)
    assert calls == [city]
    assert result.final_output == f"The weather tool returned: 18C in {city}."
    events = wait_for_events(2, balancer=balancer)
    assert [e.endpoint for e in events] == ["responses" if kind == "responses" else "chat"] * 2
    assert all(e.status_code == 200 for e in events)


@pytest.mark.parametrize("upstream_kind", KINDS)
def test_a_streamed_agent_run_gets_the_tool_call_and_the_answer(setup, upstream_kind):
    served_by(setup, upstream_kind, f"agents-stream-{upstream_kind}")
    agent = forecaster(setup, f"agents-stream-{upstream_kind}", "responses")
    calls.clear()

    async def run() -> tuple[list[str], str]:
        streamed = Runner.run_streamed(agent, "What is the weather in Paris?")
        kinds = [
            event.item.type
            async for event in streamed.stream_events()
            if event.type == "run_item_stream_event"
        ]
        return kinds, str(streamed.final_output)

    kinds, final = asyncio.run(run())
    city = tool_city(upstream_kind)
    # The Anthropic-wire upstream says something before its tool call, as Claude does.
    said_first = ["message_output_item"] if upstream_kind == "anthropic-wire" else []
    assert kinds == [*said_first, "tool_call_item", "tool_call_output_item", "message_output_item"]
    assert calls == [city]
    assert final == f"The weather tool returned: 18C in {city}."


def test_an_agent_fails_over_mid_loop_from_an_anthropic_to_an_openai_upstream(setup):
    balancer, primary = failing_over(setup, "anthropic-wire", "openai-wire", "agents-mid-loop")
    agent = forecaster(setup, "agents-mid-loop", "responses")
    calls.clear()
    on_call.append(lambda: setup.upstream.behaviours.update({primary: Behaviour(status=529)}))
    try:
        result = Runner.run_sync(agent, "What is the weather in Paris?")
    finally:
        on_call.clear()
    assert calls == ["Paris"]
    assert result.final_output == "The weather tool returned: 18C in Paris."
    events = wait_for_events(2, balancer=balancer)
    assert [(e.endpoint, e.route, e.attempts, e.status_code) for e in events] == [
        ("responses", "primary", 1, 200),
        ("responses", "fallback", 2, 200),
    ]
    # The second turn went to both: the Anthropic upstream (529), then the OpenAI-wire one.
    assert setup.upstream.requests[-1]["messages"][-1]["role"] == "tool"
    assert setup.upstream.requests[-2]["messages"][-1]["content"][0]["type"] == "tool_result"
