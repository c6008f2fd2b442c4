"""The built-in simulator provider: offline, deterministic, with knobs for the demo.

Instance options: latency_ms (time to first byte), tokens_per_second (stream pace),
error_rate (0..1, the share of requests answered 500, from a seeded sequence) and
down (refuse like a dead host). The answer text depends only on the prompt.

Tools, so that a whole tool loop runs offline: a chat request with `tools` (and a
`tool_choice` other than none) whose last message is not a tool result is
answered with one call of the first tool (or the one `tool_choice` names), its
arguments built from the tool's JSON schema (`tool_arguments`: every property,
an enum's first value, a default, a minimum, else a fixed example per type) and
its id from the prompt, finish_reason `tool_calls`. The turn that carries the
tool results is answered with text quoting them: "The <name> tool returned:
<result>." Streamed, the call comes as OpenAI sends it: a chunk naming the
function, then the arguments in two pieces.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import struct
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson

from gateway.engine.types import InstanceSpec
from gateway.text import estimate_tokens, last_user_text, message_text, prompt_tokens
from gateway.upstream.base import UpstreamFailure, UpstreamResponse, UpstreamStream

_SENTENCES = (
    "Here is a concise answer to your request.",
    "The key point is to confirm the details before acting.",
    "Based on the information given, the simplest option works best.",
    "I would start by checking the account history and the order status.",
    "A short summary: the customer wants a clear next step.",
    "The policy allows this when the conditions above are met.",
    "Let me break this down into three steps.",
    "First, gather the facts; second, compare them with the policy; third, decide.",
    "This reply keeps the tone friendly and the message short.",
    "If anything is unclear, ask one follow-up question.",
)

_rngs: dict[str, random.Random] = {}
EMBEDDING_DIMENSIONS = 256


def _error_roll(instance: InstanceSpec) -> float:
    rng = _rngs.get(instance.instance_id)
    if rng is None:
        rng = _rngs[instance.instance_id] = random.Random(instance.instance_id)
    return rng.random()


def answer_text(prompt: str, max_tokens: int | None) -> str:
    digest = hashlib.sha256(prompt.encode()).digest()
    count = 2 + digest[0] % 4
    text = " ".join(_SENTENCES[(digest[i + 1]) % len(_SENTENCES)] for i in range(count))
    if max_tokens is not None and max_tokens > 0:
        words = text.split(" ")
        text = " ".join(words[: max(1, max_tokens)])
    return text


def _embedding(text: str) -> list[float]:
    values: list[float] = []
    seed = hashlib.sha256(text.encode()).digest()
    block = seed
    while len(values) < EMBEDDING_DIMENSIONS:
        block = hashlib.sha256(block).digest()
        values.extend((v / 2**31) - 1.0 for v in struct.unpack("<8I", block))
    norm = sum(v * v for v in values[:EMBEDDING_DIMENSIONS]) ** 0.5 or 1.0
    return [round(v / norm, 6) for v in values[:EMBEDDING_DIMENSIONS]]


def _example(schema: Any, name: str, depth: int = 0) -> Any:
    if not isinstance(schema, dict):
        return f"example {name}"
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    if "default" in schema:
        return schema["default"]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if kind == "integer":
        return int(schema.get("minimum", 1))
    if kind == "number":
        return float(schema.get("minimum", 1.5))
    if kind == "boolean":
        return True
    if kind == "array":
        return [] if depth >= 4 else [_example(schema.get("items"), name, depth + 1)]
    if kind == "object" or "properties" in schema:
        return (
            {}
            if depth >= 4
            else {
                prop: _example(sub, prop, depth + 1)
                for prop, sub in (schema.get("properties") or {}).items()
            }
        )
    return f"example {name}"


def tool_arguments(parameters: Any) -> dict[str, Any]:
    """The arguments the simulator calls a tool with: an example of its parameters' schema."""
    value = _example(parameters if isinstance(parameters, dict) else {"type": "object"}, "value")
    return value if isinstance(value, dict) else {}


def _chosen_tool(payload: dict[str, Any]) -> dict[str, Any] | None:
    """The function tool to call, or None when this turn is answered with text."""
    tools: list[dict[str, Any]] = [
        t["function"]
        for t in payload.get("tools") or ()
        if isinstance(t, dict) and isinstance(t.get("function"), dict)
    ]
    choice = payload.get("tool_choice")
    messages = payload.get("messages") or []
    if (
        not tools
        or choice == "none"
        or (messages and isinstance(messages[-1], dict) and messages[-1].get("role") == "tool")
    ):
        return None
    if isinstance(choice, dict):
        wanted = (choice.get("function") or {}).get("name")
        return next((t for t in tools if t.get("name") == wanted), tools[0])
    return tools[0]


def _tool_results_text(messages: list[Any]) -> str | None:
    """The answer to a turn that carries tool results (None when the last message is not one)."""
    results: list[dict[str, Any]] = []
    for message in reversed(messages):
        if not isinstance(message, dict) or message.get("role") != "tool":
            break
        results.insert(0, message)
    if not results:
        return None
    names = {
        call.get("id"): (call.get("function") or {}).get("name", "the")
        for m in messages
        if isinstance(m, dict)
        for call in m.get("tool_calls") or ()
        if isinstance(call, dict)
    }
    return " ".join(
        f"The {names.get(r.get('tool_call_id'), 'the')} tool returned: "
        f"{message_text(r.get('content'))}."
        for r in results
    )


async def call(
    instance: InstanceSpec, *, endpoint: str, payload: dict[str, Any], stream: bool, deadline: float
) -> UpstreamResponse | UpstreamStream:
    options = instance.options
    if options.get("down"):
        raise UpstreamFailure("connect", "connection refused (simulator instance is down)")
    latency = float(options.get("latency_ms", 0)) / 1000.0
    budget = min(instance.first_byte_timeout, deadline - time.monotonic())
    if latency > budget:
        await asyncio.sleep(max(0.0, budget))
        raise UpstreamFailure("first_byte_timeout", f"no answer within {budget:g}s")
    if latency:
        await asyncio.sleep(latency)
    if _error_roll(instance) < float(options.get("error_rate", 0.0)):
        body = orjson.dumps(
            {
                "error": {
                    "message": "simulated upstream error",
                    "type": "server_error",
                    "param": None,
                    "code": None,
                }
            }
        )
        raise UpstreamFailure("status", "HTTP 500", status=500, body=body)
    created = int(time.time())
    if endpoint == "embeddings":
        raw = payload.get("input")
        inputs = [raw] if isinstance(raw, str) else list(raw or [])
        texts = [i if isinstance(i, str) else " ".join(map(str, i)) for i in inputs]
        tokens = sum(estimate_tokens(t) for t in texts)
        listing: dict[str, Any] = {
            "object": "list",
            "data": [
                {"object": "embedding", "index": n, "embedding": _embedding(t)}
                for n, t in enumerate(texts)
            ],
            "model": instance.model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        return UpstreamResponse(status=200, body=orjson.dumps(listing))

    messages = payload.get("messages") or []
    last = last_user_text(messages)
    max_tokens = payload.get("max_completion_tokens") or payload.get("max_tokens")
    tool = _chosen_tool(payload)
    tool_call: dict[str, Any] | None = None
    if tool is not None:
        name = str(tool.get("name", ""))
        arguments = orjson.dumps(tool_arguments(tool.get("parameters"))).decode()
        call_id = (
            "call_" + hashlib.sha256(f"{name}\n{last}\n{len(messages)}".encode()).hexdigest()[:24]
        )
        tool_call = {
            "id": call_id,
            "type": "function",
            "function": {"name": name, "arguments": arguments},
        }
        text = ""
    else:
        text = _tool_results_text(messages) or answer_text(
            last, max_tokens if isinstance(max_tokens, int) else None
        )
    usage = {
        "prompt_tokens": prompt_tokens(messages),
        "completion_tokens": estimate_tokens(
            text or (tool_call["function"]["arguments"] if tool_call else "")
        ),
    }
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    completion_id = f"chatcmpl-sim-{random.getrandbits(96):024x}"
    if not stream:
        reply: dict[str, Any] = {"role": "assistant", "content": text or None}
        if tool_call is not None:
            reply["tool_calls"] = [tool_call]
        completion: dict[str, Any] = {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": instance.model,
            "choices": [
                {
                    "index": 0,
                    "message": reply,
                    "finish_reason": "tool_calls" if tool_call else "stop",
                    "logprobs": None,
                }
            ],
            "usage": usage,
        }
        return UpstreamResponse(status=200, body=orjson.dumps(completion))

    include_usage = bool((payload.get("stream_options") or {}).get("include_usage"))
    pace = float(options.get("tokens_per_second", 0)) or 0.0

    def event(
        delta: dict[str, Any], finish: str | None = None, usage_: dict[str, int] | None = None
    ) -> bytes:
        chunk: dict[str, Any] = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": instance.model,
            "choices": []
            if usage_ is not None
            else [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
        }
        if usage_ is not None:
            chunk["usage"] = usage_
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

    words = text.split(" ")

    async def rest() -> AsyncIterator[bytes]:
        if tool_call is not None:
            function = tool_call["function"]
            half = len(function["arguments"]) // 2
            yield event(
                {
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": tool_call["id"],
                            "type": "function",
                            "function": {"name": function["name"], "arguments": ""},
                        }
                    ]
                }
            )
            for piece in (function["arguments"][:half], function["arguments"][half:]):
                yield event({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
            yield event({}, "tool_calls")
            if include_usage:
                yield event({}, usage_=usage)
            yield b"data: [DONE]\n\n"
            return
        for index, word in enumerate(words):
            if pace:
                await asyncio.sleep(1.0 / pace)
            yield event({"content": word if index == 0 else " " + word})
        yield event({}, "stop")
        if include_usage:
            yield event({}, usage_=usage)
        yield b"data: [DONE]\n\n"

    return UpstreamStream(
        status=200, first=event({"role": "assistant", "content": ""}), rest=rest()
    )
