"""Anthropic's native Messages API, translated both ways.

Requests arrive in OpenAI's chat shape and leave as `POST {base_url}/messages`;
answers (whole or streamed) come back as OpenAI chat completions and chunks, so
clients never see the difference. Covered: system prompts, text and image-URL
parts, tools and tool results, stop sequences, temperature/top_p, max tokens,
streaming with usage.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson

from gateway.engine.types import InstanceSpec
from gateway.hotpath import tracing
from gateway.text import message_text
from gateway.upstream.answers import MalformedAnswer
from gateway.upstream.base import UpstreamFailure, UpstreamResponse, UpstreamStream
from gateway.upstream.openai_compat import post_attempt

API_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096
FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
}


def _content_blocks(content: Any) -> list[dict[str, Any]] | str:
    if isinstance(content, str) or content is None:
        return content or ""
    blocks: list[dict[str, Any]] = []
    for part in content:
        if not isinstance(part, dict):
            continue
        if part.get("type") == "text":
            blocks.append({"type": "text", "text": part.get("text", "")})
        elif part.get("type") == "image_url":
            url = (part.get("image_url") or {}).get("url", "")
            if url.startswith("data:") and ";base64," in url:
                media, data = url[5:].split(";base64,", 1)
                blocks.append(
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": media, "data": data},
                    }
                )
            else:
                blocks.append({"type": "image", "source": {"type": "url", "url": url}})
    return blocks


def to_anthropic(payload: dict[str, Any], model: str) -> dict[str, Any]:
    """An OpenAI chat-completions body as a Messages API body."""
    system: list[str] = []
    messages: list[dict[str, Any]] = []
    for message in payload.get("messages") or []:
        role = message.get("role")
        if role in ("system", "developer"):
            system.append(message_text(message.get("content")))
        elif role == "tool":
            block = {
                "type": "tool_result",
                "tool_use_id": message.get("tool_call_id", ""),
                "content": message_text(message.get("content")),
            }
            if (
                messages
                and messages[-1]["role"] == "user"
                and isinstance(messages[-1]["content"], list)
            ):
                messages[-1]["content"].append(block)
            else:
                messages.append({"role": "user", "content": [block]})
        elif role == "assistant" and message.get("tool_calls"):
            blocks: list[dict[str, Any]] = []
            text = message_text(message.get("content"))
            if text:
                blocks.append({"type": "text", "text": text})
            for call in message["tool_calls"]:
                function = call.get("function") or {}
                try:
                    arguments = orjson.loads(function.get("arguments") or "{}")
                except orjson.JSONDecodeError:
                    arguments = {}
                blocks.append(
                    {
                        "type": "tool_use",
                        "id": call.get("id", ""),
                        "name": function.get("name", ""),
                        "input": arguments,
                    }
                )
            messages.append({"role": "assistant", "content": blocks})
        else:
            messages.append(
                {
                    "role": "assistant" if role == "assistant" else "user",
                    "content": _content_blocks(message.get("content")),
                }
            )
    body: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "max_tokens": payload.get("max_completion_tokens")
        or payload.get("max_tokens")
        or DEFAULT_MAX_TOKENS,
    }
    if system:
        body["system"] = "\n\n".join(system)
    for key in ("temperature", "top_p", "stream"):
        if payload.get(key) is not None:
            body[key] = payload[key]
    stop = payload.get("stop")
    if stop:
        body["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if payload.get("tools"):
        body["tools"] = [
            {
                "name": t["function"]["name"],
                "description": t["function"].get("description", ""),
                "input_schema": t["function"].get("parameters")
                or {"type": "object", "properties": {}},
            }
            for t in payload["tools"]
            if t.get("type") == "function" and t.get("function")
        ]
        choice = payload.get("tool_choice")
        if choice == "required":
            body["tool_choice"] = {"type": "any"}
        elif choice == "auto":
            body["tool_choice"] = {"type": "auto"}
        elif isinstance(choice, dict) and choice.get("function"):
            body["tool_choice"] = {"type": "tool", "name": choice["function"]["name"]}
    if payload.get("user"):
        body["metadata"] = {"user_id": str(payload["user"])}
    return body


def to_openai(message: dict[str, Any]) -> dict[str, Any]:
    """A Messages API answer as an OpenAI chat completion."""
    text = "".join(
        b.get("text", "") for b in message.get("content") or [] if b.get("type") == "text"
    )
    tool_calls = [
        {
            "id": b.get("id", ""),
            "type": "function",
            "function": {
                "name": b.get("name", ""),
                "arguments": orjson.dumps(b.get("input") or {}).decode(),
            },
        }
        for b in message.get("content") or []
        if b.get("type") == "tool_use"
    ]
    reply: dict[str, Any] = {"role": "assistant", "content": text or None}
    if tool_calls:
        reply["tool_calls"] = tool_calls
    usage = message.get("usage") or {}
    if not isinstance(usage, dict):
        raise MalformedAnswer("usage is not an object")
    # The counts as reported: the gateway checks and costs them (gateway.upstream.answers).
    prompt, cached = _prompt_tokens(usage)
    completion = usage.get("output_tokens") or 0
    return {
        "id": message.get("id", ""),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": message.get("model", ""),
        "choices": [
            {
                "index": 0,
                "message": reply,
                "finish_reason": FINISH.get(message.get("stop_reason") or "", "stop"),
                "logprobs": None,
            }
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": _total(prompt, completion),
            "prompt_tokens_details": {"cached_tokens": cached},
        },
    }


def _prompt_tokens(usage: dict[str, Any]) -> tuple[Any, Any]:
    """(prompt_tokens, cached_tokens) in OpenAI's sense from Anthropic's usage. Anthropic's
    `input_tokens` counts only the prompt after the last cache breakpoint; the tokens read from the
    cache (`cache_read_input_tokens`) and those written to it (`cache_creation_input_tokens`) are
    counted apart. OpenAI's `prompt_tokens` is the whole prompt, its cached part in
    `prompt_tokens_details.cached_tokens`. Cache writes are billed at the input price here
    (Anthropic charges them 1.25x: docs/cost.md). A count that is not a number is passed on as it
    is, for the gateway's check (gateway.upstream.answers) to refuse."""
    prompt = usage.get("input_tokens") or 0
    read = usage.get("cache_read_input_tokens") or 0
    written = usage.get("cache_creation_input_tokens") or 0
    counts = (prompt, read, written)
    if not all(isinstance(n, int) and not isinstance(n, bool) for n in counts):
        return prompt, 0
    return prompt + read + written, read


def _total(prompt: Any, completion: Any) -> Any:
    numbers = all(
        isinstance(n, int | float) and not isinstance(n, bool) for n in (prompt, completion)
    )
    return prompt + completion if numbers else None


class StreamTranslator:
    """Turns Messages API stream events into OpenAI chat-completion chunks."""

    def __init__(self, model: str, include_usage: bool) -> None:
        self.model, self.include_usage = model, include_usage
        self.id = ""
        self.created = int(time.time())
        self.prompt: Any = 0
        self.cached: Any = 0
        self.completion = 0
        self.tool_index = -1

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        return (
            b"data: "
            + orjson.dumps(
                {
                    "id": self.id,
                    "object": "chat.completion.chunk",
                    "created": self.created,
                    "model": self.model,
                    "choices": [
                        {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
                    ],
                }
            )
            + b"\n\n"
        )

    def feed(self, event: bytes) -> list[bytes]:
        data = b""
        for line in event.split(b"\n"):
            if line.startswith(b"data:"):
                data += line[5:].strip()
        if not data:
            return []
        item = orjson.loads(data)
        kind = item.get("type")
        if kind == "message_start":
            message = item.get("message") or {}
            self.id = message.get("id", "")
            self.model = message.get("model") or self.model
            usage = message.get("usage")
            self.prompt, self.cached = _prompt_tokens(usage if isinstance(usage, dict) else {})
            return [self._chunk({"role": "assistant", "content": ""})]
        if kind == "content_block_start":
            block = item.get("content_block") or {}
            if block.get("type") == "tool_use":
                self.tool_index += 1
                return [
                    self._chunk(
                        {
                            "tool_calls": [
                                {
                                    "index": self.tool_index,
                                    "id": block.get("id", ""),
                                    "type": "function",
                                    "function": {"name": block.get("name", ""), "arguments": ""},
                                }
                            ]
                        }
                    )
                ]
            return []
        if kind == "content_block_delta":
            delta = item.get("delta") or {}
            if delta.get("type") == "text_delta":
                return [self._chunk({"content": delta.get("text", "")})]
            if delta.get("type") == "input_json_delta":
                return [
                    self._chunk(
                        {
                            "tool_calls": [
                                {
                                    "index": self.tool_index,
                                    "function": {"arguments": delta.get("partial_json", "")},
                                }
                            ]
                        }
                    )
                ]
            return []
        if kind == "message_delta":
            self.completion = (item.get("usage") or {}).get("output_tokens") or 0
            stop = (item.get("delta") or {}).get("stop_reason")
            return [self._chunk({}, FINISH.get(stop or "", "stop"))]
        if kind == "message_stop":
            out = []
            if self.include_usage:
                out.append(
                    b"data: "
                    + orjson.dumps(
                        {
                            "id": self.id,
                            "object": "chat.completion.chunk",
                            "created": self.created,
                            "model": self.model,
                            "choices": [],
                            "usage": {
                                "prompt_tokens": self.prompt,
                                "completion_tokens": self.completion,
                                "total_tokens": _total(self.prompt, self.completion),
                                "prompt_tokens_details": {"cached_tokens": self.cached},
                            },
                        }
                    )
                    + b"\n\n"
                )
            return [*out, b"data: [DONE]\n\n"]
        if kind == "error":
            message = (item.get("error") or {}).get("message", "upstream error")
            raise UpstreamFailure("upstream_error", f"stream error: {str(message)[:300]}")
        return []  # ping, content_block_stop


def client_headers(instance: InstanceSpec) -> dict[str, str]:
    """Who is asking and with which key, in Anthropic's words: every request to an Anthropic
    instance (probes too: `GET {base_url}/models`, Anthropic's free model list)."""
    return {
        "User-Agent": "smart-balancers",
        "anthropic-version": API_VERSION,
        "x-api-key": instance.api_key,
    }


class Native:
    """A client's own Messages API body, sent as it is (model and stream set) instead of the
    translation of the chat payload, with the client's `anthropic-*` headers (`anthropic-version`,
    `anthropic-beta`...); the answer still comes back translated for the gateway's checks and
    accounting, and the untranslated one is kept for the client: the whole body (`answer`) or
    the stream's events, as they arrive (`events`), in one record per attempt (`attempt`; two
    can race, a hedge), read back for the instance that served (`served`)."""

    def __init__(self, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        self.body = body
        self.headers = headers or {}
        # The instance this record's attempt called (on the request's own: the last one called).
        self.instance_id = ""
        self.answer: bytes | None = None
        self.events: deque[bytes] = deque()
        self.attempts: dict[str, Native] = {}

    def attempt(self, instance_id: str) -> Native:
        """A fresh record for one attempt on an Anthropic instance (each instance is attempted at
        most once per request)."""
        record = Native(self.body, self.headers)
        record.instance_id = self.instance_id = instance_id
        self.attempts[instance_id] = record
        return record

    def served(self, instance_id: str | None) -> Native | None:
        """The record of the attempt on `instance_id` (the x-balancer-instance that answered)."""
        return self.attempts.get(instance_id or "")

    def kept(self, raw: bytes) -> bytes:
        self.answer = raw
        return _answer(raw)

    async def tapped(self, events: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        async for event in events:
            self.events.append(event.rstrip(b"\n") + b"\n\n")
            yield event


async def call(
    instance: InstanceSpec,
    *,
    endpoint: str,
    payload: dict[str, Any],
    stream: bool,
    deadline: float,
    native: Native | None = None,
) -> UpstreamResponse | UpstreamStream:
    if endpoint != "chat":
        raise UpstreamFailure("protocol", "the Anthropic provider serves chat only")
    translator = StreamTranslator(
        instance.model, bool((payload.get("stream_options") or {}).get("include_usage"))
    )
    body: dict[str, Any]
    events: Callable[[AsyncIterator[bytes]], AsyncIterator[bytes]]
    forwarded: dict[str, str] = {}
    if native is not None:
        record = native.attempt(instance.instance_id)
        body = {**native.body, "model": instance.model, "stream": stream}
        forwarded = native.headers
        tap = record.tapped
        events, answer = (lambda raw: _translated(tap(raw), translator)), record.kept
    else:
        body = to_anthropic({**payload, "stream": stream}, instance.model)
        events, answer = (lambda raw: _translated(raw, translator)), _answer
    return await post_attempt(
        instance,
        url=instance.base_url + "/messages",
        body=orjson.dumps(body),
        headers={
            "content-type": "application/json",
            **client_headers(instance),
            **forwarded,  # the client's anthropic-version wins: the body is in its version
            **tracing.upstream_headers(),
        },
        stream=stream,
        deadline=deadline,
        error_body=_openai_error,
        events=events,
        answer=answer,
    )


def _answer(raw: bytes) -> bytes:
    try:
        return orjson.dumps(to_openai(orjson.loads(raw)))
    except MalformedAnswer as exc:
        raise UpstreamFailure("malformed", str(exc)) from None
    except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
        raise UpstreamFailure(
            "malformed", "the upstream answered with a body that is not a Messages API answer"
        ) from None


async def _translated(
    events: AsyncIterator[bytes], translator: StreamTranslator
) -> AsyncIterator[bytes]:
    async for event in events:
        try:
            chunks = translator.feed(event)
        except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
            raise UpstreamFailure(
                "malformed", "the upstream sent a stream event that is not a Messages API event"
            ) from None
        for chunk in chunks:
            yield chunk


def _openai_error(body: bytes, status: int) -> bytes:
    """Anthropic's {"type": "error", "error": {"type", "message"}} in OpenAI's error shape."""
    try:
        error = orjson.loads(body).get("error") or {}
    except (orjson.JSONDecodeError, AttributeError):
        error = {}
    if not isinstance(error, dict):
        error = {"message": str(error)}
    return orjson.dumps(
        {
            "error": {
                "message": error.get("message") or f"upstream error (HTTP {status})",
                "type": error.get("type") or "upstream_error",
                "param": None,
                "code": None,
            }
        }
    )
