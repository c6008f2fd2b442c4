"""A real OpenAI-compatible HTTP server on loopback, for tests: the only thing we mock is the LLM.

Each upstream model name has a Behaviour the test sets: status, delay before the
headers, Retry-After, streaming pace, a failure after N chunks, a router answer.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web


@dataclass
class Behaviour:
    status: int = 200
    delay: float = 0.0  # seconds before the response headers
    retry_after: str | None = None
    content: str = "Hello from the fake upstream."
    error_body: dict[str, Any] | None = None
    chunks: int = 5
    chunk_delay: float = 0.0
    break_after_chunks: int | None = None  # close the connection mid-stream
    first_chunk_delay: float = 0.0  # streaming: delay after headers, before the first event
    # A finish_reason "stop" caused by this stop string, reported as vLLM does (the choice's
    # `stop_reason`; the string itself is not in the text).
    stop_reason: str | None = None
    # A tool loop, on both wire formats: a request with tools is answered with a call of the first
    # tool, arguments {"city": "Paris"}; a request whose last turn carries a tool's result, with
    # "The <tool> tool returned: <result>." (the simulator's phrase). Off: chat ignores tools and
    # Messages answers every tools request with a call.
    tool_loop: bool = False


TOOL_ARGUMENTS = {"city": "Paris"}


def chat_tool_result(messages: list[dict[str, Any]]) -> str | None:
    """The phrase answering a chat request whose last turn is a tool's result, else None."""
    if not messages or messages[-1].get("role") != "tool":
        return None
    last = messages[-1]
    names = {
        call.get("id"): call.get("function", {}).get("name")
        for m in messages
        for call in m.get("tool_calls") or []
    }
    result = last.get("content")
    if isinstance(result, list):
        result = "".join(part.get("text", "") for part in result)
    return f"The {names.get(last.get('tool_call_id'))} tool returned: {result}."


def messages_tool_result(messages: list[dict[str, Any]]) -> str | None:
    """The phrase answering a Messages request whose last turn carries a tool_result, else None."""
    content = messages[-1].get("content") if messages else None
    results = [b for b in content or [] if isinstance(b, dict) and b.get("type") == "tool_result"]
    if not results:
        return None
    names = {
        b.get("id"): b.get("name")
        for m in messages
        if isinstance(m.get("content"), list)
        for b in m["content"]
        if b.get("type") == "tool_use"
    }
    result = results[-1].get("content")
    if isinstance(result, list):
        result = "".join(part.get("text", "") for part in result)
    return f"The {names.get(results[-1].get('tool_use_id'))} tool returned: {result}."


@dataclass
class FakeUpstream:
    host: str = "127.0.0.1"
    port: int = 0
    behaviours: dict[str, Behaviour] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)
    auth_headers: list[str | None] = field(default_factory=list)
    messages_headers: list[dict[str, str]] = field(
        default_factory=list
    )  # each POST /v1/messages's headers, names in lower case
    traceparents: list[str | None] = field(
        default_factory=list
    )  # the W3C traceparent each request carried
    models_status: int = 200  # what GET /v1/models answers (health probes)
    models_headers: list[dict[str, str]] = field(
        default_factory=list
    )  # each GET /v1/models's headers
    calls: list[tuple[str, str]] = field(
        default_factory=list
    )  # (method, path) of every request, any path
    # A strict upstream: a request field outside this set is refused with OpenAI's own 400
    # (None: anything goes).
    known_fields: frozenset[str] | None = None
    # Chat requests being answered now, and the most at once, per model.
    in_flight: dict[str, int] = field(default_factory=dict)
    peak_in_flight: dict[str, int] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def behaviour(self, model: str) -> Behaviour:
        return self.behaviours.setdefault(model, Behaviour())

    def count(self, model: str) -> int:
        return sum(1 for r in self.requests if r.get("model") == model)

    # -- server -------------------------------------------------------------------

    def start(self) -> FakeUpstream:
        with socket.socket() as sock:
            sock.bind((self.host, 0))
            self.port = sock.getsockname()[1]
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            app = web.Application(client_max_size=64 * 1024 * 1024, middlewares=[self._record_call])
            app.router.add_post("/v1/chat/completions", self._chat)
            app.router.add_post("/v1/embeddings", self._embeddings)
            app.router.add_post("/v1/messages", self._messages)
            app.router.add_get("/v1/models", self._models)
            self._runner = web.AppRunner(app, access_log=None)
            self._loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, self.host, self.port)
            self._loop.run_until_complete(site.start())
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, daemon=True, name="fake-upstream")
        self._thread.start()
        ready.wait(5)
        return self

    def stop(self) -> None:
        async def shutdown() -> None:
            await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    @web.middleware
    async def _record_call(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.calls.append((request.method, request.path))
        if request.path != "/v1/chat/completions":
            return await handler(request)
        try:
            body = await request.json(loads=orjson.loads)
        except ValueError:
            body = None
        model = str(body.get("model", "")) if isinstance(body, dict) else ""
        self.in_flight[model] = self.in_flight.get(model, 0) + 1
        self.peak_in_flight[model] = max(self.peak_in_flight.get(model, 0), self.in_flight[model])
        try:
            return await handler(request)
        finally:
            self.in_flight[model] -= 1

    async def _models(self, request: web.Request) -> web.Response:
        self.models_headers.append({k.lower(): v for k, v in request.headers.items()})
        if self.models_status != 200:
            return web.json_response({"error": {"message": "refused"}}, status=self.models_status)
        return web.json_response(
            {"object": "list", "data": [{"id": m, "object": "model"} for m in self.behaviours]}
        )

    async def _prelude(
        self, request: web.Request
    ) -> tuple[dict[str, Any], Behaviour, web.Response | None]:
        payload = await request.json(loads=orjson.loads)
        self.requests.append(payload)
        self.auth_headers.append(request.headers.get("Authorization"))
        self.traceparents.append(request.headers.get("traceparent"))
        b = self.behaviour(payload.get("model", ""))
        unknown = sorted(set(payload) - self.known_fields) if self.known_fields is not None else []
        if unknown:
            return (
                payload,
                b,
                web.json_response(
                    {
                        "error": {
                            "message": f"Unrecognized request argument supplied: {unknown[0]}",
                            "type": "invalid_request_error",
                            "param": None,
                            "code": None,
                        }
                    },
                    status=400,
                ),
            )
        if b.delay:
            await asyncio.sleep(b.delay)
        if b.status != 200:
            headers = {"Retry-After": b.retry_after} if b.retry_after else {}
            body = b.error_body or {
                "error": {
                    "message": f"fake upstream error {b.status}",
                    "type": "upstream",
                    "param": None,
                    "code": None,
                }
            }
            return (
                payload,
                b,
                web.json_response(
                    body, status=b.status, headers=headers, dumps=lambda o: orjson.dumps(o).decode()
                ),
            )
        return payload, b, None

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        payload, b, early = await self._prelude(request)
        if early is not None:
            return early
        model = payload.get("model")
        usage = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
        content, chunks, call = b.content, b.chunks, None
        answered = chat_tool_result(payload.get("messages") or []) if b.tool_loop else None
        if answered is not None:
            content, chunks = answered, len(answered.split(" "))
        elif b.tool_loop and payload.get("tools"):
            name = payload["tools"][0]["function"]["name"]
            arguments = orjson.dumps(TOOL_ARGUMENTS).decode()
            call = {"id": "call_fake_1", "type": "function", "function": {"name": name}}
            call["function"]["arguments"] = arguments
        if not payload.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": content}
            if call is not None:
                message = {"role": "assistant", "content": None, "tool_calls": [call]}
            return web.json_response(
                {
                    "id": "chatcmpl-fake",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": message,
                            "finish_reason": "stop" if call is None else "tool_calls",
                            **({"stop_reason": b.stop_reason} if b.stop_reason else {}),
                        }
                    ],
                    "usage": usage,
                }
            )
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        if b.first_chunk_delay:
            await asyncio.sleep(b.first_chunk_delay)

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "finish_reason": finish}
            if finish and b.stop_reason:
                choice["stop_reason"] = b.stop_reason
            return (
                b"data: "
                + orjson.dumps(
                    {
                        "id": "chatcmpl-fake",
                        "object": "chat.completion.chunk",
                        "created": 0,
                        "model": model,
                        "choices": [choice],
                    }
                )
                + b"\n\n"
            )

        await response.write(chunk({"role": "assistant", "content": ""}))
        if call is not None:
            head = {"index": 0, "id": call["id"], "type": "function"}
            head["function"] = {"name": call["function"]["name"], "arguments": ""}
            await response.write(chunk({"tool_calls": [head]}))
            tail = {"index": 0, "function": {"arguments": call["function"]["arguments"]}}
            await response.write(chunk({"tool_calls": [tail]}))
            chunks = 0
        words = content.split(" ")
        for index in range(chunks):
            if b.break_after_chunks is not None and index >= b.break_after_chunks:
                request.transport.close()
                return response
            if b.chunk_delay:
                await asyncio.sleep(b.chunk_delay)
            await response.write(
                chunk({"content": (" " if index else "") + words[index % len(words)]})
            )
        await response.write(chunk({}, "stop" if call is None else "tool_calls"))
        if (payload.get("stream_options") or {}).get("include_usage"):
            await response.write(
                b"data: "
                + orjson.dumps(
                    {
                        "id": "chatcmpl-fake",
                        "object": "chat.completion.chunk",
                        "created": 0,
                        "model": model,
                        "choices": [],
                        "usage": usage,
                    }
                )
                + b"\n\n"
            )
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        """Anthropic's Messages API, as far as the gateway's translation needs it."""
        payload = await request.json(loads=orjson.loads)
        self.requests.append(payload)
        self.auth_headers.append(request.headers.get("x-api-key"))
        self.messages_headers.append({k.lower(): v for k, v in request.headers.items()})
        b = self.behaviour(payload.get("model", ""))
        if b.delay:
            await asyncio.sleep(b.delay)
        if b.status != 200:
            return web.json_response(
                {
                    "type": "error",
                    "error": {"type": "overloaded_error", "message": f"fake {b.status}"},
                },
                status=b.status,
            )
        model = payload["model"]
        text = b.content
        answered = messages_tool_result(payload.get("messages") or []) if b.tool_loop else None
        wants_tool = bool(payload.get("tools")) and answered is None
        if answered is not None:
            text = answered
        content: list[dict[str, Any]] = [{"type": "text", "text": text}]
        if wants_tool:
            content.append(
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": payload["tools"][0]["name"],
                    "input": TOOL_ARGUMENTS,
                }
            )
        if not payload.get("stream"):
            return web.json_response(
                {
                    "id": "msg_fake",
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": content,
                    "stop_reason": "tool_use" if wants_tool else "end_turn",
                    "usage": {"input_tokens": 13, "output_tokens": 5},
                }
            )
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)

        async def event(name: str, data: dict[str, Any]) -> None:
            await response.write(
                f"event: {name}\ndata: ".encode() + orjson.dumps({"type": name, **data}) + b"\n\n"
            )

        await event(
            "message_start",
            {
                "message": {
                    "id": "msg_fake",
                    "model": model,
                    "usage": {"input_tokens": 13, "output_tokens": 1},
                }
            },
        )
        await event(
            "content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}
        )
        await event("ping", {})
        for index, word in enumerate(text.split(" ")):
            await event(
                "content_block_delta",
                {
                    "index": 0,
                    "delta": {"type": "text_delta", "text": (" " if index else "") + word},
                },
            )
        await event("content_block_stop", {"index": 0})
        if wants_tool:
            block = {**content[1], "input": {}}
            await event("content_block_start", {"index": 1, "content_block": block})
            arguments = orjson.dumps(TOOL_ARGUMENTS).decode()
            delta = {"type": "input_json_delta", "partial_json": arguments}
            await event("content_block_delta", {"index": 1, "delta": delta})
            await event("content_block_stop", {"index": 1})
        stop = "tool_use" if wants_tool else "end_turn"
        await event(
            "message_delta", {"delta": {"stop_reason": stop}, "usage": {"output_tokens": 5}}
        )
        await event("message_stop", {})
        await response.write_eof()
        return response

    async def _embeddings(self, request: web.Request) -> web.Response:
        payload, _, early = await self._prelude(request)
        if early is not None:
            return early
        raw = payload.get("input")
        inputs = [raw] if isinstance(raw, str) else raw
        return web.json_response(
            {
                "object": "list",
                "model": payload.get("model"),
                "data": [
                    {"object": "embedding", "index": i, "embedding": [0.1, 0.2, 0.3]}
                    for i, _ in enumerate(inputs)
                ],
                "usage": {"prompt_tokens": 3 * len(inputs), "total_tokens": 3 * len(inputs)},
            }
        )
