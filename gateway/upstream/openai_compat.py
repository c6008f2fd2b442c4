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
from gateway.hotpath import tracing
from gateway.upstream import http
from gateway.upstream.answers import event_data
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
    # traceparent: the attempt's span, when tracing is on (gateway/hotpath/tracing.py)
    return {
        "Content-Type": "application/json",
        **client_headers(instance),
        **tracing.upstream_headers(),
    }


async def call(
    instance: InstanceSpec, *, endpoint: str, payload: dict[str, Any], stream: bool, deadline: float
) -> UpstreamResponse | UpstreamStream:
    return await exchange(
        instance,
        url=instance.base_url + _PATHS[endpoint],
        body=orjson.dumps(payload),
        headers=_headers(instance),
        stream=stream,
        deadline=deadline,
    )


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
    stream's events and the whole answer. Each timeout gets its own kind (see
    base.TIMEOUT_KINDS): the headers (or a stream's first event) wait at most the
    instance's first_byte_timeout, a body may pause at most as long, and the whole
    attempt ends at the request's deadline or the instance's request_timeout.
    """
    started = time.monotonic()
    end = min(deadline, started + instance.request_timeout)
    first_byte_budget = min(instance.first_byte_timeout, end - started)
    if first_byte_budget <= 0:
        raise UpstreamFailure("request_timeout", "no time left for this attempt")
    # A wait cut short by the request's end is the request's timeout, not the instance's.
    first_byte_kind = (
        "first_byte_timeout"
        if first_byte_budget >= instance.first_byte_timeout
        else "request_timeout"
    )
    response: http.Response | None = None
    waiting = first_byte_kind
    try:
        response = await http.request(
            "POST",
            url,
            headers=headers,
            body=body,
            connect_timeout=instance.connect_timeout,
            first_byte_timeout=first_byte_budget,
            max_connections=_MAX_CONNECTIONS,
        )
        if response.status >= 400:
            try:
                data = await response.read(
                    max(0.001, started + first_byte_budget - time.monotonic())
                )
            except (TimeoutError, http.ClientError):
                data = b""  # the status says enough
            raise UpstreamFailure(
                "status",
                f"HTTP {response.status}",
                status=response.status,
                retry_after=parse_retry_after(response.headers.get("retry-after")),
                body=error_body(data, response.status),
            )
        if stream:
            rest = events(_sse_events(response))
            async with asyncio.timeout(max(0.001, started + first_byte_budget - time.monotonic())):
                first = await _first_event(rest)
            return UpstreamStream(
                status=response.status, first=first, rest=rest, closer=_closer(response)
            )
        waiting = "body"
        data = await response.read(
            max(0.001, end - time.monotonic()), idle=instance.first_byte_timeout
        )
        return UpstreamResponse(status=response.status, body=answer(data))
    except UpstreamFailure:
        if response is not None:
            response.close()
        raise
    except TimeoutError as exc:
        if response is not None:
            response.close()
        if isinstance(exc, http.StallTimeout):
            raise UpstreamFailure(
                "stall_timeout", f"the body stopped for {instance.first_byte_timeout:g}s"
            ) from None
        if waiting == "body":
            raise UpstreamFailure(
                "request_timeout", f"the answer was not whole within {end - started:g}s"
            ) from None
        raise UpstreamFailure(waiting, f"no answer within {first_byte_budget:g}s") from None
    except StopAsyncIteration:
        raise UpstreamFailure("malformed", "the stream ended before its first event") from None
    except http.ConnectTimeout as exc:
        raise UpstreamFailure("connect_timeout", str(exc)) from None
    except http.ConnectError as exc:
        raise UpstreamFailure("connect", str(exc)) from None
    except http.ClientError as exc:
        raise UpstreamFailure("protocol", str(exc)) from None
    except asyncio.CancelledError:
        if response is not None:
            response.close()
        raise


async def _first_event(events: AsyncIterator[bytes]) -> bytes:
    """The stream's first data event, checked: leading SSE comments (keep-alives some
    providers send while the model starts) are skipped, not relayed, so a stream that
    only ever sends comments times out before its first byte and can fail over."""
    while True:
        event = await anext(events)
        data = event_data(event)
        if data is None:
            continue
        if data == b"[DONE]":
            raise UpstreamFailure("malformed", "the stream ended before its first chunk")
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise UpstreamFailure("malformed", "the stream's first event is not JSON") from None
        if not isinstance(chunk, dict):
            raise UpstreamFailure("malformed", "the stream's first event is not a JSON object")
        error = chunk.get("error")
        if error:
            message = error.get("message") if isinstance(error, dict) else error
            raise UpstreamFailure(
                "upstream_error", f"the stream began with an error: {str(message)[:300]}"
            )
        return event


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
