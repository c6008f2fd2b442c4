"""A loopback server that speaks one provider's wire as its documentation describes, for tests.

One server per provider (targetgroups.providers.PROVIDERS): the provider's base path (Groq's
`/openai/v1`, Google's `/v1beta/openai`, OpenRouter's `/api/v1`, Azure's deployment URLs with
`?api-version=`), its auth header (`Authorization: Bearer`, Anthropic's `x-api-key` with
`anthropic-version`, Azure's `api-key`), its error bodies (OpenAI's shape, Mistral's and vLLM's
top-level `message`, Google's list-wrapped error with API_KEY_INVALID for a bad key, Anthropic's
`{"type": "error"}`, Ollama's `{"error": "text"}`), its rate-limit headers on a 429, its free
probe, and its streams (OpenAI chunks, with the SSE comments DeepSeek and OpenRouter send before
the first chunk; Anthropic's Messages events).

The model name picks the behaviour: `rate-limited` (429), `bad-request` (the provider's 400/422),
`no-credit` (402), `overloaded` (503, Anthropic 529; so does any name a test puts in
`overloaded`); anything else answers. A model name with `cached` in it answers with a prompt
partly read from the provider's prompt cache (CACHED_USAGE: OpenAI's
`prompt_tokens_details.cached_tokens`, Anthropic's `cache_read_input_tokens`).
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import orjson
from aiohttp import web

from targetgroups.providers import PROVIDERS

CONTENT = "Hello from the provider."
USAGE = {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}
# 2,000 prompt tokens of which 1,500 read from the prompt cache, 4 completion tokens.
CACHED_USAGE = {
    "prompt_tokens": 2000,
    "completion_tokens": 4,
    "total_tokens": 2004,
    "prompt_tokens_details": {"cached_tokens": 1500},
}
# The same in Anthropic's terms: input_tokens counts only the prompt past the cache.
ANTHROPIC_CACHED_USAGE = {
    "input_tokens": 500,
    "cache_read_input_tokens": 1500,
    "cache_creation_input_tokens": 0,
    "output_tokens": 4,
}


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(body), status=status, headers=headers, content_type="application/json"
    )


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any


@dataclass
class ProviderServer:
    provider: str
    key: str = "sk-provider-test"
    host: str = "127.0.0.1"
    port: int = 0
    seen: list[Seen] = field(default_factory=list)
    # Model names that answer as `overloaded` does (a test makes a real model name fail).
    overloaded: set[str] = field(default_factory=set)

    @property
    def facts(self) -> Any:
        return PROVIDERS[self.provider]

    @property
    def prefix(self) -> str:
        """The provider's base path, as its public base URL has it."""
        if self.provider == "azure":
            return ""
        if not self.facts.base_url:
            return "/v1"
        return urlsplit(self.facts.base_url).path.rstrip("/")

    @property
    def base_url(self) -> str:
        """What an operator would store: the provider's base URL, moved to loopback."""
        return f"http://{self.host}:{self.port}{self.prefix}"

    # -- server ---------------------------------------------------------------------

    def start(self) -> ProviderServer:
        with socket.socket() as sock:
            sock.bind((self.host, 0))
            self.port = sock.getsockname()[1]
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", self._handle)
            self._runner = web.AppRunner(app, access_log=None)
            self._loop.run_until_complete(self._runner.setup())
            self._loop.run_until_complete(web.TCPSite(self._runner, self.host, self.port).start())
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, daemon=True, name=f"provider-{self.provider}")
        self._thread.start()
        ready.wait(5)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    # -- the wire -------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            body = raw.decode("utf-8", "replace")
        self.seen.append(
            Seen(
                request.method,
                request.path,
                dict(request.query),
                {k.lower(): v for k, v in request.headers.items()},
                body,
            )
        )
        refused = self._auth(request)
        if refused is not None:
            return refused
        path = request.path
        if self.provider == "azure":
            if request.query.get("api-version") is None:
                return _json({"error": {"code": "404", "message": "Resource not found"}}, 404)
            if path == "/openai/models" and request.method == "GET":
                return _json({"data": [{"id": "gpt-4o", "object": "model"}], "object": "list"})
            parts = path.split("/")  # /openai/deployments/<name>/chat/completions
            if len(parts) >= 5 and parts[1:3] == ["openai", "deployments"]:
                rest = "/" + "/".join(parts[4:])
                return await self._endpoint(request, rest, body, deployment=parts[3])
            return _json({"error": {"code": "404", "message": "Resource not found"}}, 404)
        if not path.startswith(self.prefix + "/"):
            return _json({"error": {"message": f"no route {path}"}}, 404)
        rest = path[len(self.prefix) :]
        if request.method == "GET" and rest == self.facts.probe_path:
            if self.provider == "openrouter":
                return _json({"data": {"label": "sk-or-v1-abc...", "limit": None, "usage": 0}})
            return _json({"object": "list", "data": [{"id": "a-model", "object": "model"}]})
        return await self._endpoint(request, rest, body)

    def _auth(self, request: web.Request) -> web.Response | None:
        headers = request.headers
        if self.facts.auth == "x-api-key":
            if headers.get("x-api-key") == self.key and headers.get("anthropic-version"):
                return None
            return _json(
                {
                    "type": "error",
                    "error": {"type": "authentication_error", "message": "invalid x-api-key"},
                },
                401,
            )
        if self.facts.auth == "api-key":
            if headers.get("api-key") == self.key:
                return None
            return _json(
                {
                    "error": {
                        "code": "401",
                        "message": "Access denied due to invalid subscription key or wrong API "
                        "endpoint. Make sure to provide a valid key for an active subscription.",
                    }
                },
                401,
            )
        if not self.facts.key_required:  # Ollama, a custom server: no key needed
            return None
        if headers.get("Authorization") == f"Bearer {self.key}":
            return None
        if self.provider == "google":
            return _json(
                [
                    {
                        "error": {
                            "code": 400,
                            "message": "API key not valid. Please pass a valid API key.",
                            "status": "INVALID_ARGUMENT",
                            "details": [
                                {
                                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                                    "reason": "API_KEY_INVALID",
                                    "domain": "googleapis.com",
                                }
                            ],
                        }
                    }
                ],
                400,
            )
        if self.provider == "mistral":
            return _json({"message": "Unauthorized", "request_id": "f00"}, 401)
        return _json(
            {
                "error": {
                    "message": "Incorrect API key provided.",
                    "type": "invalid_request_error",
                    "param": None,
                    "code": "invalid_api_key",
                }
            },
            401,
        )

    async def _endpoint(
        self, request: web.Request, rest: str, body: Any, deployment: str = ""
    ) -> web.StreamResponse:
        if request.method != "POST" or not isinstance(body, dict):
            return _json({"error": {"message": "not found"}}, 404)
        model = deployment or str(body.get("model") or "")
        if self.facts.wire == "anthropic":
            if rest != "/messages":
                return _json({"type": "error", "error": {"type": "not_found_error"}}, 404)
        elif rest not in ("/chat/completions", "/embeddings"):
            return _json({"error": {"message": f"no route {rest}"}}, 404)
        if rest == "/chat/completions" and not body.get("messages"):
            # Refused before any generation (Perplexity's probe relies on it).
            return _json(
                {
                    "error": {
                        "message": "messages must not be empty",
                        "type": "invalid_request_error",
                        "code": 400,
                    }
                },
                400,
            )
        failure = self._failure(model)
        if failure is not None:
            return failure
        if rest == "/embeddings":
            inputs = body["input"] if isinstance(body.get("input"), list) else [body.get("input")]
            return _json(
                {
                    "object": "list",
                    "model": model,
                    "data": [
                        {"object": "embedding", "index": i, "embedding": [0.5, 0.25]}
                        for i, _ in enumerate(inputs)
                    ],
                    "usage": {"prompt_tokens": 2, "total_tokens": 2},
                }
            )
        if self.facts.wire == "anthropic":
            return await self._messages(request, body, model)
        return await self._chat(request, body, model)

    def _failure(self, model: str) -> web.Response | None:
        code = self.provider
        if model == "rate-limited":
            now = time.time()
            headers: dict[str, str] = {}
            if code in ("openai", "azure"):
                headers = {
                    "x-ratelimit-remaining-requests": "0",
                    "x-ratelimit-reset-requests": "20s",
                    "x-ratelimit-remaining-tokens": "1000",
                    "x-ratelimit-reset-tokens": "1m0s",
                }
                if code == "azure":
                    headers["retry-after-ms"] = "1500"
            elif code == "anthropic":
                reset = datetime.now(UTC) + timedelta(seconds=30)
                headers = {
                    "anthropic-ratelimit-requests-remaining": "0",
                    "anthropic-ratelimit-requests-reset": reset.strftime("%Y-%m-%dT%H:%M:%SZ"),
                }
            elif code == "openrouter":
                headers = {
                    "x-ratelimit-remaining": "0",
                    "x-ratelimit-reset": str(int((now + 12) * 1000)),
                }
            else:
                headers = {"retry-after": "7"}
            if code == "anthropic":
                body: Any = {
                    "type": "error",
                    "error": {"type": "rate_limit_error", "message": "rate limited"},
                }
            else:
                body = {"error": {"message": "Rate limit reached", "type": "rate_limit_error"}}
            return _json(body, 429, headers)
        if model == "bad-request":
            if code == "anthropic":
                return _json(
                    {
                        "type": "error",
                        "error": {"type": "invalid_request_error", "message": "max_tokens: bad"},
                    },
                    400,
                )
            if code == "mistral":
                return _json(
                    {
                        "object": "error",
                        "message": {"detail": [{"loc": ["body", "temperature"], "msg": "bad"}]},
                        "type": "invalid_request_message_error",
                        "param": None,
                        "code": None,
                    },
                    422,
                )
            if code == "custom":  # vLLM's shape
                return _json(
                    {
                        "object": "error",
                        "message": "temperature must be non-negative",
                        "type": "BadRequestError",
                        "param": None,
                        "code": 400,
                    },
                    400,
                )
            if code == "ollama":
                return _json({"error": "temperature must be non-negative"}, 400)
            if code == "google":
                return _json(
                    [
                        {
                            "error": {
                                "code": 400,
                                "message": "temperature must be non-negative",
                                "status": "INVALID_ARGUMENT",
                            }
                        }
                    ],
                    400,
                )
            return _json(
                {
                    "error": {
                        "message": "temperature must be non-negative",
                        "type": "invalid_request_error",
                        "param": "temperature",
                        "code": None,
                    }
                },
                400,
            )
        if model == "no-credit":
            return _json(
                {"error": {"message": "Insufficient Balance", "type": "payment_required"}}, 402
            )
        if model == "overloaded" or model in self.overloaded:
            if code == "anthropic":
                return _json(
                    {
                        "type": "error",
                        "error": {"type": "overloaded_error", "message": "Overloaded"},
                    },
                    529,
                )
            return _json({"error": {"message": "overloaded", "type": "server_error"}}, 503)
        return None

    async def _chat(
        self, request: web.Request, body: dict[str, Any], model: str
    ) -> web.StreamResponse:
        if not body.get("stream"):
            return _json(
                {
                    "id": "chatcmpl-provider",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": CONTENT},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": CACHED_USAGE if "cached" in model else USAGE,
                }
            )
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        if self.provider == "deepseek":
            await response.write(b": keep-alive\n\n")
        if self.provider == "openrouter":
            await response.write(b": OPENROUTER PROCESSING\n\n")

        def chunk(delta: dict[str, Any] | None, finish: str | None = None, **extra: Any) -> bytes:
            data = {
                "id": "chatcmpl-provider",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]
                if delta is not None
                else [],
                **extra,
            }
            return b"data: " + orjson.dumps(data) + b"\n\n"

        await response.write(chunk({"role": "assistant", "content": ""}))
        for word in CONTENT.split(" "):
            await response.write(chunk({"content": word + " "}))
        await response.write(chunk({}, "stop"))
        if (body.get("stream_options") or {}).get("include_usage"):
            await response.write(chunk(None, usage=CACHED_USAGE if "cached" in model else USAGE))
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def _messages(
        self, request: web.Request, body: dict[str, Any], model: str
    ) -> web.StreamResponse:
        if not body.get("stream"):
            return _json(
                {
                    "id": "msg_provider",
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [{"type": "text", "text": CONTENT}],
                    "stop_reason": "end_turn",
                    "usage": ANTHROPIC_CACHED_USAGE
                    if "cached" in model
                    else {"input_tokens": 9, "output_tokens": 4},
                }
            )
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)

        async def event(name: str, data: dict[str, Any]) -> None:
            await response.write(
                f"event: {name}\ndata: ".encode() + orjson.dumps({"type": name, **data}) + b"\n\n"
            )

        start_usage = (
            {k: v for k, v in ANTHROPIC_CACHED_USAGE.items() if k != "output_tokens"}
            if "cached" in model
            else {"input_tokens": 9}
        )
        await event(
            "message_start",
            {"message": {"id": "msg_provider", "model": model, "usage": start_usage}},
        )
        await event("content_block_start", {"index": 0, "content_block": {"type": "text"}})
        await event("ping", {})
        for word in CONTENT.split(" "):
            await event(
                "content_block_delta",
                {"index": 0, "delta": {"type": "text_delta", "text": word + " "}},
            )
        await event("content_block_stop", {"index": 0})
        await event(
            "message_delta", {"delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 4}}
        )
        await event("message_stop", {})
        await response.write_eof()
        return response
