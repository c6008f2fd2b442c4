"""The OpenAI wire: OpenAI and every provider that speaks it (targetgroups.providers: Google's
OpenAI-compatible endpoint, Mistral, DeepSeek, xAI, Groq, Perplexity, OpenRouter, Together,
Fireworks, Ollama, vLLM, llama.cpp, LM Studio), and Azure OpenAI's deployment URLs.

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
from urllib.parse import quote

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
    retry_after_from,
)
from targetgroups.providers import AZURE_API_VERSION, PROVIDERS

_PATHS = {"chat": "/chat/completions", "embeddings": "/embeddings"}
_MAX_CONNECTIONS = settings.GATEWAY_UPSTREAM_MAX_CONNECTIONS


def client_headers(instance: InstanceSpec) -> dict[str, str]:
    """Who is asking and with which key: every request to an OpenAI-wire instance (probes too).
    `Authorization: Bearer` for all but Azure OpenAI, which takes an `api-key` header."""
    headers = {"User-Agent": "smart-balancers"}
    if instance.api_key:
        facts = PROVIDERS.get(instance.provider)
        if facts is not None and facts.auth == "api-key":
            headers["api-key"] = instance.api_key
        else:
            headers["Authorization"] = f"Bearer {instance.api_key}"
    return headers


def _azure_version(instance: InstanceSpec) -> str:
    version = instance.options.get("api_version")
    return version if isinstance(version, str) and version else AZURE_API_VERSION


def url_for(instance: InstanceSpec, endpoint: str) -> str:
    """The endpoint's URL: `{base_url}/chat/completions`, or for Azure OpenAI (base URL =
    the resource, https://<resource>.openai.azure.com) the deployment's (deployment = the model
    name) with its api-version: `/openai/deployments/{model}/chat/completions?api-version=...`."""
    if instance.provider == "azure":
        deployment = quote(instance.model, safe="")
        return (
            f"{instance.base_url}/openai/deployments/{deployment}{_PATHS[endpoint]}"
            f"?api-version={quote(_azure_version(instance), safe='')}"
        )
    return instance.base_url + _PATHS[endpoint]


def probe_url(instance: InstanceSpec) -> str:
    """What a probe asks (targetgroups.providers: never a billed request)."""
    facts = PROVIDERS.get(instance.provider)
    path = facts.probe_path if facts is not None else "/models"
    if instance.provider == "azure":
        return f"{instance.base_url}{path}?api-version={quote(_azure_version(instance), safe='')}"
    return instance.base_url + path


def openai_error(body: bytes, status: int) -> tuple[bytes, int]:
    """An OpenAI-wire provider's error body in OpenAI's shape {"error": {message, type, param,
    code}}, and the status it stands for. Read: OpenAI's own shape; `{"error": "text"}` (Ollama,
    LM Studio); `{"object": "error", "message", "type", "code"}` (Mistral, vLLM); FastAPI's
    `{"detail": ...}`; Google's list-wrapped `[{"error": {code, message, status}}]`. Google
    answers a refused key with a 400 whose reason is API_KEY_INVALID: a 401 here, so it fails
    over like every refused credential. A body that is not JSON is left as it is."""
    try:
        parsed: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body, status
    if isinstance(parsed, list) and parsed and isinstance(parsed[0], dict):
        parsed = parsed[0]
    if not isinstance(parsed, dict):
        return body, status
    error = parsed.get("error")
    if isinstance(error, str):
        error = {"message": error}
    elif not isinstance(error, dict):
        message = parsed.get("message") or parsed.get("detail")
        if message is None:
            return body, status
        error = {
            "message": message if isinstance(message, str) else orjson.dumps(message).decode(),
            "type": parsed.get("type"),
            "param": parsed.get("param"),
            "code": parsed.get("code"),
        }
    google_status = error.get("status")
    if status == 400 and any(
        isinstance(d, dict) and d.get("reason") == "API_KEY_INVALID"
        for d in error.get("details") or ()
    ):
        status = 401
    kind = error.get("type")
    if not isinstance(kind, str) and isinstance(google_status, str):
        kind = google_status.lower()
    return (
        orjson.dumps(
            {
                "error": {
                    "message": error.get("message") or f"upstream error (HTTP {status})",
                    "type": kind if isinstance(kind, str) else None,
                    "param": error.get("param"),
                    "code": error.get("code"),
                }
            }
        ),
        status,
    )


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
    return await post_attempt(
        instance,
        url=url_for(instance, endpoint),
        body=orjson.dumps(payload),
        headers=_headers(instance),
        stream=stream,
        deadline=deadline,
        error_shape=openai_error,
    )


def _same(value: Any, *_: Any) -> Any:
    return value


async def post_attempt(
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
    error_shape: Callable[[bytes, int], tuple[bytes, int]] | None = None,
) -> UpstreamResponse | UpstreamStream:
    """POST one request with the instance's timeouts and classify what went wrong.

    Providers that speak another dialect pass translators for the error body, the
    stream's events and the whole answer (`error_shape`: the error body and the status it
    stands for). The provider's facts (targetgroups.providers) say which statuses are
    retryable and which headers tell when a rate limit resets. Each timeout gets its own kind (see
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
            status = response.status
            if error_shape is not None:
                data, status = error_shape(data, status)
            facts = PROVIDERS.get(instance.provider)
            raise UpstreamFailure(
                "status",
                f"HTTP {status}"
                if status == response.status
                else f"HTTP {response.status} (read as {status})",
                status=status,
                retry_after=retry_after_from(
                    response.headers, status, facts.reset_headers if facts else ()
                ),
                body=error_body(data, status),
                retryable_statuses=facts.retryable if facts else None,
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
