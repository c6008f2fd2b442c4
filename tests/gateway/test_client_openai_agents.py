"""The OpenAI Agents SDK (`openai-agents`) running a one-tool agent against the gateway only: its
Responses model and its chat-completions model, run and streamed, in a real uvicorn process.
Tracing is off (it would export to OpenAI); nothing leaves 127.0.0.1."""

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
from tests.gateway.test_client_langchain import simulated
from tests.gateway.test_openai_sdk import wait_for_events

pytestmark = pytest.mark.django_db(transaction=True)

set_tracing_disabled(True)

calls: list[str] = []


@function_tool
def weather(city: str) -> str:
    """The weather in a city."""
    calls.append(city)
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


@pytest.mark.parametrize("kind", ["responses", "chat"])
def test_a_one_tool_agent_runs_its_loop_through_the_gateway(setup, kind):
    balancer = simulated(f"agents-{kind}")
    agent = forecaster(setup, f"agents-{kind}", kind)
    calls.clear()
    result = Runner.run_sync(agent, "What is the weather in Paris?")
    # The simulator calls the first tool with an example of its schema, then reads the result.
    assert calls == ["example city"]
    assert result.final_output == "The weather tool returned: 18C in example city."
    events = wait_for_events(2, balancer=balancer)
    assert [e.endpoint for e in events] == ["responses" if kind == "responses" else "chat"] * 2
    assert all(e.status_code == 200 for e in events)


def test_a_streamed_agent_run_gets_the_tool_call_and_the_answer(setup):
    simulated("agents-stream")
    agent = forecaster(setup, "agents-stream", "responses")
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
    assert kinds == ["tool_call_item", "tool_call_output_item", "message_output_item"]
    assert calls == ["example city"]
    assert final == "The weather tool returned: 18C in example city."
