"""A fast OpenAI-compatible mock upstream for the benchmarks: raw asyncio + httptools on uvloop.

    python bench/mock_upstream.py --port 9100 [--latency-ms 0] [--chunks 8] [--chunk-delay-ms 0]

Serves
  POST /v1/chat/completions   a fixed completion; with ``"stream": true`` an SSE stream of
                              ``--chunks`` content chunks (a usage chunk when the client asked
                              for ``stream_options.include_usage``), then ``data: [DONE]``
  POST /v1/embeddings         a fixed 8-d embedding per input
  GET  /v1/models             one model
  GET  /_mock/config          the knobs and the request count
  POST /_mock/config          change knobs at run time: {"latency_ms", "chunks", "chunk_delay_ms"}

``latency_ms`` delays the response headers (the time to first byte), ``chunk_delay_ms``
spaces the stream's chunks. Nothing is parsed beyond what the answer needs, bodies are
prebuilt per model name, and a 0 ms answer is written from the parser callback, so on
one core it answers tens of thousands of requests per second: far more than the gateway
or LiteLLM, so it is never the bottleneck (bench/run.py measures it as the "direct" target).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
from typing import Any

import httptools
import orjson

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
    uvloop = None

CONTENT = "This is a mock completion of a fixed length for the benchmark."


class Knobs:
    def __init__(
        self, latency_ms: float = 0.0, chunks: int = 8, chunk_delay_ms: float = 0.0
    ) -> None:
        self.latency_ms = latency_ms
        self.chunks = chunks
        self.chunk_delay_ms = chunk_delay_ms
        self.requests = 0
        self.started = time.time()

    def update(self, data: dict[str, Any]) -> None:
        if "latency_ms" in data:
            self.latency_ms = max(0.0, float(data["latency_ms"]))
        if "chunks" in data:
            self.chunks = max(1, int(data["chunks"]))
        if "chunk_delay_ms" in data:
            self.chunk_delay_ms = max(0.0, float(data["chunk_delay_ms"]))

    def as_dict(self) -> dict[str, Any]:
        return {
            "latency_ms": self.latency_ms,
            "chunks": self.chunks,
            "chunk_delay_ms": self.chunk_delay_ms,
            "requests": self.requests,
            "pid": os.getpid(),
        }


def _response(
    status: int, body: bytes, content_type: bytes = b"application/json", keep_alive: bool = True
) -> bytes:
    reason = {200: b"OK", 400: b"Bad Request", 404: b"Not Found", 405: b"Method Not Allowed"}.get(
        status, b"OK"
    )
    return b"".join(
        (
            b"HTTP/1.1 %d %s\r\n" % (status, reason),
            b"content-type: " + content_type + b"\r\n",
            b"content-length: %d\r\n" % len(body),
            b"" if keep_alive else b"connection: close\r\n",
            b"\r\n",
            body,
        )
    )


def _error(status: int, message: str, keep_alive: bool) -> bytes:
    body = orjson.dumps(
        {
            "error": {
                "message": message,
                "type": "invalid_request_error",
                "param": None,
                "code": None,
            }
        }
    )
    return _response(status, body, keep_alive=keep_alive)


_TOKENS = CONTENT.split(" ")
_USAGE = {"prompt_tokens": 12, "completion_tokens": len(_TOKENS), "total_tokens": 12 + len(_TOKENS)}
_completion_cache: dict[bytes, bytes] = {}


def completion_body(model: str) -> bytes:
    key = model.encode()
    body = _completion_cache.get(key)
    if body is None:
        body = orjson.dumps(
            {
                "id": "chatcmpl-mock",
                "object": "chat.completion",
                "created": 1700000000,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": CONTENT},
                        "finish_reason": "stop",
                    }
                ],
                "usage": _USAGE,
            }
        )
        if len(_completion_cache) < 100:
            _completion_cache[key] = body
    return body


def _chunked(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def stream_events(model: str, chunks: int, include_usage: bool) -> list[bytes]:
    """The SSE events of one streamed completion, each already framed as an HTTP chunk."""

    def event(delta: dict[str, Any], finish: str | None = None) -> bytes:
        return (
            b"data: "
            + orjson.dumps(
                {
                    "id": "chatcmpl-mock",
                    "object": "chat.completion.chunk",
                    "created": 1700000000,
                    "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                }
            )
            + b"\n\n"
        )

    words = [(" " if i else "") + _TOKENS[i % len(_TOKENS)] for i in range(chunks)]
    events = [event({"role": "assistant", "content": words[0]})]
    events += [event({"content": w}) for w in words[1:]]
    events.append(event({}, "stop"))
    if include_usage:
        usage = {"prompt_tokens": 12, "completion_tokens": chunks, "total_tokens": 12 + chunks}
        events.append(
            b"data: "
            + orjson.dumps(
                {
                    "id": "chatcmpl-mock",
                    "object": "chat.completion.chunk",
                    "created": 1700000000,
                    "model": model,
                    "choices": [],
                    "usage": usage,
                }
            )
            + b"\n\n"
        )
    events.append(b"data: [DONE]\n\n")
    return [_chunked(e) for e in events]


STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
    b"transfer-encoding: chunked\r\n\r\n"
)
STREAM_END = b"0\r\n\r\n"


class MockProtocol(asyncio.Protocol):
    __slots__ = ("body", "knobs", "loop", "method", "parser", "transport", "url")

    def __init__(self, knobs: Knobs) -> None:
        self.knobs = knobs
        self.loop = asyncio.get_event_loop()
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.body: list[bytes] = []

    # asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.write(_error(400, "bad request", keep_alive=False))
                self.transport.close()

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.url = b""
        self.body = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        keep_alive = self.parser.should_keep_alive()
        method = self.parser.get_method()
        path = self.url.split(b"?", 1)[0]
        self.knobs.requests += 1
        if path.endswith(b"/chat/completions") and method == b"POST":
            self._chat(keep_alive)
        elif path.endswith(b"/embeddings") and method == b"POST":
            self._embeddings(keep_alive)
        elif path.endswith(b"/models") and method == b"GET":
            body = orjson.dumps(
                {
                    "object": "list",
                    "data": [{"id": "mock-model", "object": "model", "owned_by": "bench"}],
                }
            )
            self._send(_response(200, body, keep_alive=keep_alive), keep_alive)
        elif path == b"/_mock/config":
            if method == b"POST":
                try:
                    self.knobs.update(orjson.loads(b"".join(self.body) or b"{}"))
                except (ValueError, TypeError) as exc:
                    self._send(_error(400, f"bad knobs: {exc}", keep_alive), keep_alive)
                    return
            self._send(
                _response(200, orjson.dumps(self.knobs.as_dict()), keep_alive=keep_alive),
                keep_alive,
            )
        else:
            self._send(
                _error(
                    404, f"no route {method.decode()} {path.decode(errors='replace')}", keep_alive
                ),
                keep_alive,
            )

    # answers
    def _send(self, data: bytes, keep_alive: bool, delay_ms: float = 0.0) -> None:
        if delay_ms > 0:
            self.loop.call_later(delay_ms / 1000, self._send, data, keep_alive)
            return
        transport = self.transport
        if transport is None:
            return
        transport.write(data)
        if not keep_alive:
            transport.close()

    def _payload(self) -> dict[str, Any] | None:
        try:
            payload = orjson.loads(b"".join(self.body))
        except ValueError:
            return None
        return payload if isinstance(payload, dict) else None

    def _chat(self, keep_alive: bool) -> None:
        payload = self._payload()
        if payload is None or not isinstance(payload.get("messages"), list):
            self._send(_error(400, "a JSON body with messages is required", keep_alive), keep_alive)
            return
        model = str(payload.get("model") or "mock-model")
        if not payload.get("stream"):
            self._send(
                _response(200, completion_body(model), keep_alive=keep_alive),
                keep_alive,
                self.knobs.latency_ms,
            )
            return
        options = payload.get("stream_options")
        include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
        events = stream_events(model, self.knobs.chunks, include_usage)
        delay = self.knobs.chunk_delay_ms
        if delay <= 0:
            self._send(
                STREAM_HEAD + b"".join(events) + STREAM_END, keep_alive, self.knobs.latency_ms
            )
            return
        # Headers and the first event after the latency, then one event every chunk_delay_ms.
        # Each part schedules the next: timers set all at once may fire out of order (uvloop).
        parts = [STREAM_HEAD + events[0], *events[1:-1], events[-1] + STREAM_END]
        self.loop.call_later(
            self.knobs.latency_ms / 1000, self._stream_part, parts, 0, keep_alive, delay / 1000
        )

    def _stream_part(
        self, parts: list[bytes], index: int, keep_alive: bool, delay_s: float
    ) -> None:
        if self.transport is None:
            return
        last = index == len(parts) - 1
        self._send(parts[index], keep_alive or not last)
        if not last:
            self.loop.call_later(delay_s, self._stream_part, parts, index + 1, keep_alive, delay_s)

    def _embeddings(self, keep_alive: bool) -> None:
        payload = self._payload()
        if payload is None or "input" not in payload:
            self._send(_error(400, "a JSON body with input is required", keep_alive), keep_alive)
            return
        inputs = payload["input"] if isinstance(payload["input"], list) else [payload["input"]]
        body = orjson.dumps(
            {
                "object": "list",
                "model": str(payload.get("model") or "mock-model"),
                "data": [
                    {"object": "embedding", "index": i, "embedding": [0.125] * 8}
                    for i in range(len(inputs))
                ],
                "usage": {"prompt_tokens": 4 * len(inputs), "total_tokens": 4 * len(inputs)},
            }
        )
        self._send(_response(200, body, keep_alive=keep_alive), keep_alive, self.knobs.latency_ms)


async def serve(host: str, port: int, knobs: Knobs, ready: asyncio.Event | None = None) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: MockProtocol(knobs), host, port, backlog=4096, reuse_address=True
    )
    if ready is not None:
        ready.set()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - not the main thread
            pass
    async with server:
        print(f"mock upstream on http://{host}:{port}/v1 (pid {os.getpid()})", flush=True)
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument(
        "--latency-ms", type=float, default=0.0, help="delay before the response headers"
    )
    parser.add_argument(
        "--chunks", type=int, default=8, help="content chunks per streamed completion"
    )
    parser.add_argument(
        "--chunk-delay-ms", type=float, default=0.0, help="delay between streamed chunks"
    )
    args = parser.parse_args(argv)
    knobs = Knobs(args.latency_ms, args.chunks, args.chunk_delay_ms)
    (uvloop.run if uvloop is not None else asyncio.run)(serve(args.host, args.port, knobs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
