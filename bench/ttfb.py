"""Streamed time to first byte: N sequential streaming chat completions over one keep-alive
connection.

    python bench/ttfb.py URL MODEL KEY [--requests 200] [--warmup 5]

For each request: the time from writing the request to the arrival of the first
byte of the response body (the first SSE event: a gateway cannot send it before
its upstream's first event), and to the end of the stream. Raw asyncio +
httptools on uvloop, so the client adds a few microseconds and adds the same to
every target. Prints one JSON object: ttfb and total p50/p99/mean in ms, the
number of non-2xx answers and of socket errors (a broken connection is reopened).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from urllib.parse import urlsplit

import httptools

try:
    import uvloop
except ImportError:  # pragma: no cover
    uvloop = None


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (the same rule as wrk's histogram)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(pct / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


class _Response:
    def __init__(self) -> None:
        self.first_body: float | None = None
        self.done = asyncio.get_running_loop().create_future()
        self.status = 0
        self.body = bytearray()

    def on_body(self, body: bytes) -> None:
        if self.first_body is None:
            self.first_body = time.perf_counter()
        self.body += body

    def on_message_complete(self) -> None:
        if not self.done.done():
            self.done.set_result(None)


PROMPTS = (
    "Summarise this support reply in one line.",
    "Draft a short thank-you note to a customer who sent us feedback.",
    "What are your opening hours on Sunday?",
    "Prove that the sum of two odd integers is even.",
    "Our p99 latency doubled after the last deploy; walk through how to find the root cause.",
    "A customer was double charged and threatens a chargeback; decide whether to refund or "
    "escalate.",
)


async def run(
    url: str, model: str, key: str, requests: int, warmup: int, request_timeout: float
) -> dict[str, object]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    path = parts.path or "/"

    def request_bytes(index: int) -> bytes:
        # A different prompt every request, so the router's decision cache cannot answer it.
        body = json.dumps(
            {
                "model": model,
                "stream": True,
                "messages": [
                    {
                        "role": "user",
                        "content": f"{PROMPTS[index % len(PROMPTS)]} (request {index})",
                    }
                ],
            }
        ).encode()
        return (
            f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {key}\r\nAccept: application/json\r\nContent-Length: "
            f"{len(body)}\r\n\r\n"
        ).encode() + body

    ttfb: list[float] = []
    total: list[float] = []
    non_2xx = 0
    socket_errors = 0
    sample_body = b""
    problems: list[str] = []
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    for index in range(warmup + requests):
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(host, port)
            assert reader is not None
            response = _Response()
            parser = httptools.HttpResponseParser(response)
            payload = request_bytes(index)
            started = time.perf_counter()
            writer.write(payload)
            async with asyncio.timeout(request_timeout):
                while not response.done.done():
                    data = await reader.read(65536)
                    if not data:
                        raise ConnectionResetError("the server closed the connection")
                    parser.feed_data(data)
            ended = time.perf_counter()
            status = parser.get_status_code()
            if index < warmup:
                continue
            if not 200 <= status < 300:
                non_2xx += 1
                if len(problems) < 3:
                    problems.append(
                        f"HTTP {status}: {bytes(response.body[:300]).decode(errors='replace')}"
                    )
                continue
            if not sample_body:
                sample_body = bytes(response.body)
            first = response.first_body if response.first_body is not None else ended
            ttfb.append((first - started) * 1000)
            total.append((ended - started) * 1000)
            if not parser.should_keep_alive():
                writer.close()
                writer = None
        except (OSError, TimeoutError, httptools.HttpParserError) as exc:
            if index >= warmup:
                socket_errors += 1
            if len(problems) < 3:
                problems.append(f"{type(exc).__name__}: {exc}")
            if writer is not None:
                writer.close()
            writer = None
    if writer is not None:
        writer.close()
    text = sample_body.decode(errors="replace")
    return {
        "requests": len(ttfb),
        "ttfb_p50_ms": percentile(ttfb, 50),
        "ttfb_p99_ms": percentile(ttfb, 99),
        "ttfb_mean_ms": sum(ttfb) / len(ttfb) if ttfb else float("nan"),
        "total_p50_ms": percentile(total, 50),
        "total_p99_ms": percentile(total, 99),
        "non_2xx": non_2xx,
        "socket_errors": socket_errors,
        "stream_ok": "data:" in text and "[DONE]" in text,
        "problems": problems,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Time to first byte of streamed chat completions.")
    parser.add_argument("url")
    parser.add_argument("model")
    parser.add_argument("key")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    args = parser.parse_args(argv)
    coro = run(args.url, args.model, args.key, args.requests, args.warmup, args.timeout)
    result = (uvloop.run if uvloop is not None else asyncio.run)(coro)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
