"""The simulator's tool calls: deterministic arguments from the schema, and the tool-result turn."""

from __future__ import annotations

import asyncio
import time

import orjson

from gateway.engine.types import InstanceSpec
from gateway.upstream import simulator


def test_arguments_follow_the_schema_enum_default_minimum_and_types():
    schema = {
        "type": "object",
        "properties": {
            "city": {"type": "string", "enum": ["Oslo", "Paris"]},
            "unit": {"type": "string", "default": "F"},
            "days": {"type": "integer", "minimum": 3},
            "ratio": {"type": "number"},
            "exact": {"type": "boolean"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "where": {"type": "object", "properties": {"zip": {"type": ["null", "string"]}}},
            "note": {"type": "string"},
        },
    }
    assert simulator.tool_arguments(schema) == {
        "city": "Oslo",
        "unit": "F",
        "days": 3,
        "ratio": 1.5,
        "exact": True,
        "tags": ["example tags"],
        "where": {"zip": "example zip"},
        "note": "example note",
    }
    assert simulator.tool_arguments(None) == {}


def _call(payload: dict) -> dict:
    instance = InstanceSpec(
        pk=1,
        instance_id="sim",
        display_name="sim",
        provider="simulator",
        base_url="",
        model="sim-1",
        api_key="",
        workload_kind="chat",
        input_price_per_million=0,
        output_price_per_million=0,
        quality_tier=1,
        connect_timeout=1,
        first_byte_timeout=5,
        request_timeout=5,
        enabled=True,
    )
    result = asyncio.run(
        simulator.call(
            instance, endpoint="chat", payload=payload, stream=False, deadline=time.monotonic() + 5
        )
    )
    return orjson.loads(result.body)


def test_a_tools_request_gets_the_same_call_every_time_and_none_when_tool_choice_is_none():
    tools = [
        {"type": "function", "function": {"name": "first", "parameters": {"type": "object"}}},
        {"type": "function", "function": {"name": "second", "parameters": {"type": "object"}}},
    ]
    payload = {"messages": [{"role": "user", "content": "go"}], "tools": tools}
    one, two = _call(payload), _call(payload)
    assert one["choices"][0]["message"]["tool_calls"] == two["choices"][0]["message"]["tool_calls"]
    assert one["choices"][0]["finish_reason"] == "tool_calls"
    named = _call({**payload, "tool_choice": {"type": "function", "function": {"name": "second"}}})
    assert named["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "second"
    assert "tool_calls" not in _call({**payload, "tool_choice": "none"})["choices"][0]["message"]
