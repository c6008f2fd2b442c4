"""Any OpenAI-compatible server (OpenAI, vLLM, Ollama, DeepSeek, Groq, OpenRouter, ...).

Calls go through gateway.upstream.http, the gateway's own pooled HTTP/1.1 client
(one pool per event loop and origin). History of the choice, measured on one
core: a bare Django async proxy view did ~250 req/s with httpx's default client
and ~1,150 with aiohttp; in the gateway worker at 256 connections aiohttp was
still ~20% of the CPU, which the httptools-based client cut (docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
from django.conf import settings

from gateway.engine.types import InstanceSpec
from gateway.upstream import http
from gateway.upstream.base import (
    UpstreamFailure,
    UpstreamResponse,
    UpstreamStream,
    parse_retry_after,
)

_PATHS = {"chat": "/chat/completions", "embeddings": "/embeddings"}
_MAX_CONNECTIONS = settings.GATEWAY_UPSTREAM_MAX_CONNECTIONS


def client_headers(instance: InstanceSpec) -> dict[str, str]:
    """Who is asking and with which key: every request to an OpenAI-compatible instance (probes too)."""
    headers = {"User-Agent": "smart-balancers"}
    if instance.api_key:
        headers["Authorization"] = f"Bearer {instance.api_key}"
    return headers


def _headers(instance: InstanceSpec) -> dict[str, str]:
    return {"Content-Type": "application/json", **client_headers(instance)}


async def call(
    instance: InstanceSpec, *, endpoint: str, payload: dict[str, Any], stream: bool, deadline: float
) -> UpstreamResponse | UpstreamStream:
    return await exchange(instance, url=instance.base_url + _PATHS[endpoint], body=orjson.dumps(payload),
                          headers=_headers(instance), stream=stream, deadline=deadline)


def _same(value: Any, *_: Any) -> Any:
    return value


async def exchange(
    instance: InstanceSpec,
    *,
    url: str,
    body: bytes,
    headers: dict[str, str],
    stream: bool,
    deadline: float,
    error_body: Callable[[bytes, int], bytes] = _same,
    events: Callable[[AsyncIterator[bytes]], AsyncIterator[bytes]] = _same,
    answer: Callable[[bytes], bytes] = _same,
) -> UpstreamResponse | UpstreamStream:
    """POST one request with the instance's timeouts and classify what went wrong.

    Providers that speak another dialect pass translators for the error body, the
    stream's events and the whole answer.
    """
    now = time.monotonic()
    remaining = min(deadline - now, instance.request_timeout)
    first_byte_budget = min(instance.first_byte_timeout, remaining)
    if first_byte_budget <= 0:
        raise UpstreamFailure("timeout", "no time left for this attempt")
    response: http.Response | None = None
    try:
        response = await http.request("POST", url, headers=headers, body=body, connect_timeout=instance.connect_timeout,
                                      first_byte_timeout=first_byte_budget, max_connections=_MAX_CONNECTIONS)
        if response.status >= 400:
            data = await response.read(max(0.001, now + first_byte_budget - time.monotonic()))
            raise UpstreamFailure(
                "status",
                f"HTTP {response.status}",
                status=response.status,
                retry_after=parse_retry_after(response.headers.get("retry-after")),
                body=error_body(data, response.status),
            )
        if stream:
            rest = events(_sse_events(response))
            async with asyncio.timeout(max(0.001, now + first_byte_budget - time.monotonic())):
                first = await anext(rest)
            return UpstreamStream(status=response.status, first=first, rest=rest, closer=_closer(response))
        data = await response.read(max(0.001, deadline - time.monotonic()))
        return UpstreamResponse(status=response.status, body=answer(data))
    except UpstreamFailure:
        raise
    except TimeoutError:
        if response is not None:
            response.close()
        kind = "first_byte_timeout" if time.monotonic() - now >= first_byte_budget * 0.99 else "timeout"
        raise UpstreamFailure(kind, f"no answer within {first_byte_budget:g}s") from None
    except StopAsyncIteration:
        raise UpstreamFailure("protocol", "the stream ended before its first event") from None
    except http.ConnectError as exc:
        raise UpstreamFailure("connect", str(exc)) from None
    except http.ClientError as exc:
        raise UpstreamFailure("protocol", str(exc)) from None
    except asyncio.CancelledError:
        if response is not None:
            response.close()
        raise


def _closer(response: http.Response) -> Any:
    async def close() -> None:
        response.close()

    return close


async def _sse_events(response: http.Response) -> AsyncIterator[bytes]:
    """Split the upstream body into whole SSE events (each ending in a blank line), none longer
    than max_event_bytes (http.TooLarge: a stream that never ends an event cannot fill memory)."""
    limit = http.default_limits().max_event_bytes
    buffer = bytearray()  # grows in place: a long event is neither copied nor scanned over and over
    async for chunk in response.iter_chunks():
        scanned = max(0, len(buffer) - 1)  # where a blank line may start
        buffer += chunk.replace(b"\r\n", b"\n") if b"\r" in chunk else chunk
        while (cut := buffer.find(b"\n\n", scanned)) >= 0:
            event = bytes(buffer[: cut + 2])
            del buffer[: cut + 2]
            scanned = 0
            if event.strip():
                yield event
        if len(buffer) > limit:
            response.close()
            raise http.TooLarge(f"an event of the upstream's stream exceeds {limit} bytes")
    if buffer.strip():
        yield bytes(buffer) + b"\n\n"
