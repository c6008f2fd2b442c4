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
    # A strict upstream: a request field outside this set is refused with OpenAI's own 400 (None: anything goes).
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
        if not payload.get("stream"):
            return web.json_response(
                {
                    "id": "chatcmpl-fake",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": b.content},
                            "finish_reason": "stop",
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
        words = b.content.split(" ")
        for index in range(b.chunks):
            if b.break_after_chunks is not None and index >= b.break_after_chunks:
                request.transport.close()
                return response
            if b.chunk_delay:
                await asyncio.sleep(b.chunk_delay)
            await response.write(
                chunk({"content": (" " if index else "") + words[index % len(words)]})
            )
        await response.write(chunk({}, "stop"))
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
        wants_tool = bool(payload.get("tools"))
        content: list[dict[str, Any]] = [{"type": "text", "text": b.content}]
        if wants_tool:
            content.append(
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": payload["tools"][0]["name"],
                    "input": {"city": "Paris"},
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
        for word in b.content.split(" "):
            await event(
                "content_block_delta",
                {"index": 0, "delta": {"type": "text_delta", "text": word + " "}},
            )
        await event("content_block_stop", {"index": 0})
        await event(
            "message_delta", {"delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 5}}
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
