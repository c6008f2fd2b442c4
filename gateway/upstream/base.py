from __future__ import annotations

import email.utils
import functools
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from gateway.engine.types import InstanceSpec
from targetgroups import egress
from targetgroups.providers import PROVIDERS

# Statuses that mean "this instance cannot serve this request now": try the next one.
# 401/403/404 from an upstream mean our credential or model name is wrong there.
RETRYABLE_STATUSES = frozenset({401, 403, 404, 408, 409, 425, 429, 500, 502, 503, 504})

# Each timeout has its own kind, recorded as the attempt's outcome (and as the usage event's
# error_type when it ends the request):
#   connect_timeout     no TCP (or TLS) connection within the instance's connect_timeout
#   first_byte_timeout  no response headers (a stream: no first event) within first_byte_timeout
#   stall_timeout       the body (or a stream) started, then nothing arrived for first_byte_timeout
#   request_timeout     the whole request ran into the balancer's request_timeout (or the
#                       instance's, whichever ends first), however busy the upstream still was
TIMEOUT_KINDS = frozenset(
    {"connect_timeout", "first_byte_timeout", "stall_timeout", "request_timeout"}
)


@dataclass
class UpstreamFailure(Exception):
    """A failed attempt. `retryable` failures move on to the next target."""

    # connect | status | protocol (not HTTP we can read) | malformed (HTTP, but not an answer)
    # | upstream_error (an error event in a 200 stream) | stream_interrupted | a TIMEOUT_KINDS one
    kind: str
    detail: str
    status: int | None = None
    retry_after: float | None = None
    body: bytes | None = None  # an upstream error body, for non-retryable client errors
    headers: dict[str, str] = field(default_factory=dict)
    # The provider's own retryable statuses (targetgroups.providers); None: RETRYABLE_STATUSES.
    retryable_statuses: frozenset[int] | None = None

    def __str__(self) -> str:
        return self.detail

    @property
    def retryable(self) -> bool:
        if self.kind == "status":
            statuses = self.retryable_statuses or RETRYABLE_STATUSES
            return self.status is not None and (self.status in statuses or self.status >= 500)
        return True

    @property
    def is_timeout(self) -> bool:
        return self.kind in TIMEOUT_KINDS


@dataclass(slots=True)
class UpstreamResponse:
    status: int
    body: bytes
    content_type: str = "application/json"


@dataclass(slots=True)
class UpstreamStream:
    """An open stream whose first event has arrived."""

    status: int
    first: bytes
    rest: AsyncIterator[bytes]
    closer: Any = None  # awaitable factory that releases the connection

    async def aclose(self) -> None:
        if self.closer is not None:
            await self.closer()


def _base_url_problem(base_url: str) -> str | None:
    from gateway.upstream.http import default_limits

    return _base_url_problem_under(base_url, default_limits().allow_private)


@functools.lru_cache(maxsize=1024)
def _base_url_problem_under(base_url: str, allow_private: bool) -> str | None:
    return egress.base_url_problem(base_url, allow_private=allow_private)


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_DURATION_WHOLE = re.compile(r"^(?:\d+(?:\.\d+)?(?:ms|h|m|s))+$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_reset(value: str | None) -> float | None:
    """Seconds until a rate-limit window resets, from a reset header in any of the forms providers
    use: a duration ("1s", "6m0s", "59.56ms": OpenAI, Groq, Azure), an RFC 3339 time (Anthropic),
    epoch seconds or milliseconds (OpenRouter, Together), or plain seconds. None when unreadable."""
    if not value:
        return None
    text = value.strip()
    if _DURATION_WHOLE.match(text):
        return sum(float(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION.findall(text))
    try:
        number = float(text)
    except ValueError:
        try:
            when = datetime.fromisoformat(text)
        except ValueError:
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return max(0.0, when.timestamp() - time.time())
    if number > 1e12:  # epoch milliseconds
        return max(0.0, number / 1000 - time.time())
    if number > 1e9:  # epoch seconds
        return max(0.0, number - time.time())
    return max(0.0, number)


def retry_after_from(
    headers: dict[str, str], status: int, reset_headers: tuple[str, ...] = ()
) -> float | None:
    """How long the upstream asks us to wait: `retry-after-ms` (OpenAI, Azure), `Retry-After`,
    else, on a 429, the provider's rate-limit reset headers (targetgroups.providers): the latest
    reset among the limits whose `...remaining...` header says 0, or the earliest of them all."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    waited = parse_retry_after(headers.get("retry-after"))
    if waited is not None or status != 429:
        return waited
    exhausted: list[float] = []
    resets: list[float] = []
    for name in reset_headers:
        wait = parse_reset(headers.get(name))
        if wait is None:
            continue
        resets.append(wait)
        if headers.get(name.replace("reset", "remaining"), "").strip() == "0":
            exhausted.append(wait)
    if exhausted:
        return max(exhausted)
    return min(resets) if resets else None


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


async def call_upstream(
    instance: InstanceSpec,
    *,
    endpoint: str,
    payload: dict[str, Any],
    stream: bool,
    deadline: float,
    native: Any = None,
) -> UpstreamResponse | UpstreamStream:
    """Call one instance. `endpoint` is "chat" or "embeddings"; `deadline` is
    time.monotonic()-based. `native`: the client's own Messages API body (anthropic.Native), sent
    untranslated to an Anthropic instance; other providers get `payload`."""
    from gateway.hotpath import tracing

    span = (
        tracing.start_attempt(instance, endpoint, str(payload.get("model")))
        if tracing.enabled
        else None
    )
    if span is None:
        return await _call(
            instance,
            endpoint=endpoint,
            payload=payload,
            stream=stream,
            deadline=deadline,
            native=native,
        )
    try:
        result = await _call(
            instance,
            endpoint=endpoint,
            payload=payload,
            stream=stream,
            deadline=deadline,
            native=native,
        )
    except UpstreamFailure as failure:
        tracing.end_attempt(span, failure=failure)
        raise
    except BaseException:
        tracing.end_attempt(span)
        raise
    tracing.end_attempt(span)
    return result


async def _call(
    instance: InstanceSpec,
    *,
    endpoint: str,
    payload: dict[str, Any],
    stream: bool,
    deadline: float,
    native: Any = None,
) -> UpstreamResponse | UpstreamStream:
    if instance.provider == "simulator":
        from gateway.upstream import simulator

        return await simulator.call(
            instance, endpoint=endpoint, payload=payload, stream=stream, deadline=deadline
        )
    facts = PROVIDERS.get(instance.provider)
    if facts is None:
        raise UpstreamFailure(
            "protocol", f"provider {instance.provider!r} cannot answer {endpoint} requests"
        )
    problem = _base_url_problem(instance.base_url)
    if problem:  # a row saved before the egress policy: refused here as at save time
        raise UpstreamFailure("connect", f"base URL refused: {problem}")
    if facts.wire == "anthropic":
        from gateway.upstream import anthropic

        return await anthropic.call(
            instance,
            endpoint=endpoint,
            payload=payload,
            stream=stream,
            deadline=deadline,
            native=native,
        )
    from gateway.upstream import openai_compat  # the openai and azure wires

    return await openai_compat.call(
        instance, endpoint=endpoint, payload=payload, stream=stream, deadline=deadline
    )
