"""What an upstream's answer must be before the gateway relays it and costs it.

- A **malformed answer** is an upstream failure, like a 5xx: the attempt fails
  (the instance's health counts it), the next target is tried, and a 502 comes
  back when none is left. Malformed: a body that is not JSON or not an object;
  a chat answer without a `choices` array, an embeddings answer without a `data`
  array; a `usage` that is not an object; a token count that is not a number
  (`"prompt_tokens": "abc"`); a stream whose first event is not a JSON object
  or is an error.
- A token count that is a number but cannot be true — negative, fractional,
  not finite, or over the bound (GATEWAY_MAX_REPORTED_TOKENS, 10,000,000 by
  default: five times the largest context window on offer) — is **dropped**, not
  clamped: the usage event keeps the gateway's own estimate for that count and
  says why in `usage_note`. A clamped count would be an invented number; the
  estimate is at least the request's own. The answer itself is relayed
  untouched (the client sees what the upstream said).
- In a stream the first byte has already gone to the client, so nothing can
  fail over: a malformed usage chunk is dropped and noted the same way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from gateway.text import estimate_tokens, message_text


class MalformedAnswer(ValueError):
    """The upstream's answer is not what its status claims; the message says what is wrong."""


@dataclass(frozen=True, slots=True)
class ReportedUsage:
    """Token counts an upstream reported: None when absent or dropped (`note` says which and
    why)."""

    prompt: int | None = None
    completion: int | None = None
    note: str = ""
    # Of `prompt`, the tokens read from the provider's prompt cache (OpenAI's
    # usage.prompt_tokens_details.cached_tokens): billed at the cached-input price when one is set.
    cached: int = 0


def _count(usage: dict[str, Any], name: str, limit: int) -> tuple[int | None, str]:
    value = usage.get(name)
    if value is None:
        return None, ""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MalformedAnswer(f"usage.{name} is not a number")
    if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
        return None, f"{name} {value!r} is not a whole number"
    if value < 0:
        return None, f"{name} {value:g} is negative"
    if value > limit:
        return None, f"{name} {value:g} is over {limit:,}"
    return int(value), ""


def read_usage(usage: Any, *, limit: int) -> ReportedUsage:
    """The counts of an answer's `usage` member. Raises MalformedAnswer (see the module
    docstring)."""
    if usage is None:
        return ReportedUsage()
    if not isinstance(usage, dict):
        raise MalformedAnswer("usage is not an object")
    prompt, prompt_note = _count(usage, "prompt_tokens", limit)
    completion, completion_note = _count(usage, "completion_tokens", limit)
    notes = [n for n in (prompt_note, completion_note) if n]
    cached, cached_note = _cached(usage, prompt, limit)
    if cached_note:
        notes.append(cached_note)
    return ReportedUsage(prompt, completion, "; ".join(notes), cached)


def _cached(usage: dict[str, Any], prompt: int | None, limit: int) -> tuple[int, str]:
    """The cached part of the prompt (`prompt_tokens_details.cached_tokens`): 0 when absent, when
    the prompt count itself was dropped, or when it cannot be true (more than the prompt), which
    bills the whole prompt at the input price, never less than was spent."""
    details = usage.get("prompt_tokens_details")
    if not isinstance(details, dict) or prompt is None:
        return 0, ""
    try:
        cached, note = _count(details, "cached_tokens", limit)
    except MalformedAnswer:
        return 0, "cached_tokens is not a number"
    if cached is None:
        return 0, note
    if cached > prompt:
        return 0, f"cached_tokens {cached:,} is over prompt_tokens {prompt:,}"
    return cached, ""


def check_answer(data: Any, endpoint: str) -> dict[str, Any]:
    """The answer as an object, or MalformedAnswer. `endpoint`: chat | embeddings."""
    if not isinstance(data, dict):
        raise MalformedAnswer("the answer is JSON but not an object")
    if isinstance(data.get("error"), dict | str) and data.get("error"):
        raise MalformedAnswer("the answer is an error object with a success status")
    member = "choices" if endpoint == "chat" else "data"
    items = data.get(member)
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise MalformedAnswer(f"the answer has no {member!r} array of objects")
    return data


def completion_estimate(data: dict[str, Any]) -> int:
    """The tokens of a chat answer's text, estimated (for a dropped completion count)."""
    total = 0
    for choice in data.get("choices") or ():
        message = choice.get("message") if isinstance(choice, dict) else None
        if isinstance(message, dict):
            total += estimate_tokens(message_text(message.get("content")))
    return total


def event_data(event: bytes) -> bytes | None:
    """The data of one SSE event (its `data:` lines joined), None for a comment or a bare event."""
    if event.startswith(b"data:") and b"\n" not in event.rstrip(b"\n"):
        return event[5:].strip()
    lines = [line[5:].strip() for line in event.split(b"\n") if line.startswith(b"data:")]
    return b"\n".join(lines) if lines else None
