"""A hostile OpenAI-compatible (and Anthropic) upstream on loopback, for the fault tests.

Like tests/upstream_server.py, a real HTTP server the test scripts per upstream model
name; this one answers what a broken or malicious provider would: impossible or
non-numeric usage, bodies that are not answers, streams that break, stall or never
end, and error messages that echo the credential the gateway sent.
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

NORMAL_USAGE = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}


@dataclass
class Script:
    usage: Any = field(
        default_factory=lambda: dict(NORMAL_USAGE)
    )  # the answer's `usage` member, any JSON
    body: bytes | None = None  # a 200 answer sent as these bytes
    status: int = 200
    echo_credential: bool = False  # an error answer whose message quotes the Authorization header
    # Streams: "normal" | "cut" (connection closed after the first event) | "content" / "comments"
    # (an event or an SSE comment every `pace` seconds for `duration` seconds) | "stall" (silence
    # after the first event) | "error_echo" (an error event quoting the credential after the first)
    stream: str = "normal"
    pace: float = 0.5
    duration: float = 40.0
    body_stall: bool = False  # not streamed: headers and half the body, then silence


@dataclass
class HostileUpstream:
    host: str = "127.0.0.1"
    port: int = 0
    scripts: dict[str, Script] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def count(self, model: str) -> int:
        return sum(1 for r in self.requests if r.get("model") == model)

    def start(self) -> HostileUpstream:
        with socket.socket() as sock:
            sock.bind((self.host, 0))
            self.port = sock.getsockname()[1]
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            app = web.Application()
            app.router.add_post("/v1/chat/completions", self._chat)
            app.router.add_post("/v1/messages", self._messages)
            app.router.add_get("/v1/models", self._models)
            self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)
            self._loop.run_until_complete(self._runner.setup())
            self._loop.run_until_complete(web.TCPSite(self._runner, self.host, self.port).start())
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, daemon=True, name="hostile-upstream")
        self._thread.start()
        ready.wait(5)
        return self

    def stop(self) -> None:
        async def shutdown() -> None:
            await self._runner.cleanup()
            # Handlers still sleeping through a stall or an endless stream: end them too.
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": []})

    def _error(self, script: Script, credential: str | None) -> web.Response:
        message = (
            f"Invalid request. You sent 'Authorization: {credential}'."
            if script.echo_credential
            else "refused"
        )
        return web.json_response(
            {
                "error": {
                    "message": message,
                    "type": "invalid_request_error",
                    "param": None,
                    "code": "echo",
                }
            },
            status=script.status,
        )

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        payload = await request.json(loads=orjson.loads)
        self.requests.append(payload)
        model = payload.get("model", "")
        script = self.scripts.get(model, Script())
        if script.status != 200:
            return self._error(script, request.headers.get("Authorization"))
        if not payload.get("stream"):
            body = script.body
            if body is None:
                body = orjson.dumps(
                    {
                        "id": "chatcmpl-hostile",
                        "object": "chat.completion",
                        "created": int(time.time()),
                        "model": model,
                        "choices": [
                            {
                                "index": 0,
                                "message": {
                                    "role": "assistant",
                                    "content": "Hello from a hostile upstream.",
                                },
                                "finish_reason": "stop",
                            }
                        ],
                        "usage": script.usage,
                    }
                )
            if script.body_stall:
                response = web.StreamResponse(headers={"Content-Type": "application/json"})
                response.content_length = len(body)
                await response.prepare(request)
                await response.write(body[: len(body) // 2])
                await asyncio.sleep(script.duration)
                return response
            return web.Response(body=body, content_type="application/json")
        return await self._stream(request, payload, script)

    async def _stream(
        self, request: web.Request, payload: dict[str, Any], script: Script
    ) -> web.StreamResponse:
        model = payload["model"]
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            return (
                b"data: "
                + orjson.dumps(
                    {
                        "id": "chatcmpl-hostile",
                        "object": "chat.completion.chunk",
                        "created": 0,
                        "model": model,
                        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                    }
                )
                + b"\n\n"
            )

        try:
            await response.write(chunk({"role": "assistant", "content": ""}))
            if script.stream == "cut":
                request.transport.close()
                return response
            if script.stream == "stall":
                await asyncio.sleep(script.duration)
                return response
            if script.stream == "error_echo":
                await response.write(chunk({"content": "Hi"}))
                message = (
                    "upstream failure; request had Authorization: "
                    f"{request.headers.get('Authorization')}"
                )
                await response.write(
                    b"data: " + orjson.dumps({"error": {"message": message}}) + b"\n\n"
                )
                await response.write_eof()
                return response
            if script.stream in ("content", "comments"):
                ends = time.monotonic() + script.duration
                while time.monotonic() < ends:
                    await asyncio.sleep(script.pace)
                    await response.write(
                        chunk({"content": "more "})
                        if script.stream == "content"
                        else b": still here\n\n"
                    )
            else:
                await response.write(chunk({"content": "Hello"}))
            await response.write(chunk({}, "stop"))
            await response.write(
                b"data: "
                + orjson.dumps(
                    {
                        "id": "chatcmpl-hostile",
                        "object": "chat.completion.chunk",
                        "created": 0,
                        "model": model,
                        "choices": [],
                        "usage": script.usage,
                    }
                )
                + b"\n\n"
            )
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
        except (ConnectionError, RuntimeError):
            pass  # the gateway hung up: what it should do with a stream past its bounds
        return response

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        """Anthropic's Messages API (not streamed), with the script's usage or body."""
        payload = await request.json(loads=orjson.loads)
        self.requests.append(payload)
        model = payload.get("model", "")
        script = self.scripts.get(model, Script())
        if script.status != 200:
            message = (
                f"invalid x-api-key {request.headers.get('x-api-key')}"
                if script.echo_credential
                else "refused"
            )
            return web.json_response(
                {"type": "error", "error": {"type": "invalid_request_error", "message": message}},
                status=script.status,
            )
        if script.body is not None:
            return web.Response(body=script.body, content_type="application/json")
        usage = script.usage
        if isinstance(usage, dict) and "prompt_tokens" in usage:
            usage = {
                "input_tokens": usage["prompt_tokens"],
                "output_tokens": usage.get("completion_tokens"),
            }
        return web.json_response(
            {
                "id": "msg_hostile",
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [{"type": "text", "text": "Hello from a hostile upstream."}],
                "stop_reason": "end_turn",
                "usage": usage,
            }
        )
