"""A slow OpenAI-compatible upstream on a raw socket, for the latency threshold and hedge tests.

It waits `delay` seconds before its first byte (a stream: `headers_first` sends the headers at
once and waits before the first event) and, while it waits, watches the connection: a client
that closes it is noted in `closed` (seconds after the request arrived), which is how a test
sees a cancelled attempt's connection go. A request it outlives is answered in full.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import orjson


@dataclass
class SlowUpstream:
    delay: float = 2.0
    headers_first: bool = False  # streams: headers at once, the first event after `delay`
    content: str = "from the slow upstream"
    host: str = "127.0.0.1"
    port: int = 0
    requests: list[dict[str, Any]] = field(default_factory=list)
    closed: list[float] = field(default_factory=list)  # seconds after the request, per close
    answered: int = 0

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def start(self) -> SlowUpstream:
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            self._server = self._loop.run_until_complete(
                asyncio.start_server(self._handle, self.host, 0)
            )
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, daemon=True, name="slow-upstream")
        self._thread.start()
        ready.wait(5)
        return self

    def stop(self) -> None:
        def close() -> None:
            self._server.close()
            self._loop.stop()

        self._loop.call_soon_threadsafe(close)
        self._thread.join(5)

    def wait_closed(self, count: int = 1, timeout: float = 5.0) -> list[float]:
        deadline = time.monotonic() + timeout
        while len(self.closed) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return list(self.closed)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip())
            payload = orjson.loads(await reader.readexactly(length))
            arrived = time.monotonic()
            self.requests.append(payload)
            stream = bool(payload.get("stream"))
            if stream and self.headers_first:
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                    b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                )
                await writer.drain()
            if await self._client_left(reader, self.delay):
                self.closed.append(time.monotonic() - arrived)
                return
            if stream:
                if not self.headers_first:
                    writer.write(
                        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                        b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                    )
                for event in self._events(str(payload.get("model"))):
                    writer.write(b"%x\r\n%s\r\n" % (len(event), event))
                writer.write(b"0\r\n\r\n")
            else:
                body = orjson.dumps(self._answer(str(payload.get("model"))))
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
                )
            await writer.drain()
            self.answered += 1
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    @staticmethod
    async def _client_left(reader: asyncio.StreamReader, delay: float) -> bool:
        """Wait `delay` seconds; True as soon as the client closes the connection."""
        try:
            async with asyncio.timeout(delay):
                return await reader.read(1) == b""
        except TimeoutError:
            return False

    def _answer(self, model: str) -> dict[str, Any]:
        return {
            "id": "chatcmpl-slow",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": self.content},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
        }

    def _events(self, model: str) -> list[bytes]:
        def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
            data = {
                "id": "chatcmpl-slow",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                **extra,
            }
            return b"data: " + orjson.dumps(data) + b"\n\n"

        usage = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
        return [
            chunk({"role": "assistant", "content": ""}),
            chunk({"content": self.content}),
            chunk({}, "stop"),
            b"data: "
            + orjson.dumps(
                {
                    "id": "chatcmpl-slow",
                    "object": "chat.completion.chunk",
                    "created": 0,
                    "model": model,
                    "choices": [],
                    "usage": usage,
                }
            )
            + b"\n\n",
            b"data: [DONE]\n\n",
        ]
