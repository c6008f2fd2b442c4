"""Capability-aware routing: which targets can serve a request at all.

A request is never sent to a target that cannot serve it, in every routing mode
(explicit routes, weights, the classifier, auto): the planner leaves such
targets out before it picks, and records each one with the reason.

What a request needs (``needs_of``), read from its body:

    tools        a non-empty ``tools`` (or legacy ``functions``) list
    vision       an image part in any message (``image_url``, ``input_image``, ``image``)
    json_mode    ``response_format`` of type ``json_object`` or ``json_schema``
    streaming    ``stream: true``
    prompt size  an estimate of the prompt's tokens (``gateway.text``: words and
                 punctuation, long words split; no tokenizer of the target's own
                 ships offline, see docs/routing.md), plus the ``tools``' JSON
    max_tokens   ``max_completion_tokens`` or ``max_tokens``, when given

What a target offers: its instance's capabilities (the operator's values, else
the model catalogue's, ``targetgroups.catalogue``). Unknown (None) never
refuses: an instance nobody described is tried as before.

The rules (``unfit_reason``), in this order, the first that applies is the reason:

    tools and supports_tools is False            no tool support
    images and supports_vision is False          no vision
    json_mode and supports_json_mode is False    no JSON mode
    streaming and supports_streaming is False    no streaming
    max_tokens > max_output_tokens               answer larger than its max output
    prompt + max_tokens > context_window         prompt larger than its context window

An upstream that still refuses the prompt as too long (``context_length_exceeded``)
makes the planner drop every target whose window is not larger than that one's
(``outgrown_reason``), and the request fails over to a larger window.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from gateway.engine.types import InstanceSpec
from gateway.text import estimate_tokens, message_text, prompt_tokens

IMAGE_PARTS = frozenset({"image_url", "input_image", "image"})
JSON_FORMATS = frozenset({"json_object", "json_schema"})

SKIP_TOOLS = "no tool support (the request has tools)"
SKIP_VISION = "no vision (the request has images)"
SKIP_JSON = "no JSON mode (the request sets response_format)"
SKIP_STREAMING = "no streaming (the request streams)"
# Every reason starts with one of these (the attempt log and the error name the rule).
CAPABILITY_PREFIXES = ("no tool support", "no vision", "no JSON mode", "no streaming", "max output")
CONTEXT_PREFIX = "context window"


class Needs:
    """What one request needs of its target.

    The prompt's token estimate is computed only when a context window is close enough to
    matter: ``upper`` (characters plus framing, never below the estimate) settles most checks
    without scanning the text.
    """

    __slots__ = (
        "_count",
        "_tokens",
        "json_mode",
        "max_tokens",
        "streaming",
        "tools",
        "upper",
        "vision",
    )

    def __init__(
        self,
        *,
        tools: bool = False,
        vision: bool = False,
        json_mode: bool = False,
        streaming: bool = False,
        max_tokens: int | None = None,
        prompt_tokens: int | None = None,
        upper: int | None = None,
        count: Callable[[], int] | None = None,
    ) -> None:
        self.tools, self.vision, self.json_mode, self.streaming = (
            tools,
            vision,
            json_mode,
            streaming,
        )
        self.max_tokens = max_tokens  # the answer size the request asks for
        self._tokens = prompt_tokens
        self._count = count
        self.upper = upper if upper is not None else (prompt_tokens or 0)

    @property
    def prompt_tokens(self) -> int:
        """The prompt's token estimate (computed once, when first asked)."""
        if self._tokens is None:
            self._tokens = self._count() if self._count is not None else 0
        return self._tokens

    def __repr__(self) -> str:
        return (
            f"Needs(tools={self.tools}, vision={self.vision}, json_mode={self.json_mode}, "
            f"streaming={self.streaming}, max_tokens={self.max_tokens}, upper={self.upper})"
        )


def needs_of(payload: Mapping[str, Any], endpoint: str = "chat") -> Needs:
    """What the request needs of its target (see the module docstring)."""
    if endpoint != "chat":
        value = payload.get("input")
        texts = [value] if isinstance(value, str) else value if isinstance(value, list) else []
        # An embeddings window applies to each input: the largest one must fit.
        sizes = [
            estimate_tokens(t) if isinstance(t, str) else len(t) if isinstance(t, list) else 0
            for t in texts
        ]
        largest = max(sizes, default=0)
        return Needs(prompt_tokens=largest, upper=largest)
    tools = payload.get("tools")
    functions = payload.get("functions")
    has_tools = (bool(tools) and isinstance(tools, list)) or bool(functions)
    messages = payload.get("messages")
    tools_text = ""
    if has_tools:
        try:
            tools_text = json.dumps(tools or functions, ensure_ascii=False)
        except (TypeError, ValueError):
            tools_text = ""

    def count() -> int:
        return prompt_tokens(messages) + (estimate_tokens(tools_text) if tools_text else 0)

    response_format = payload.get("response_format")
    json_mode = isinstance(response_format, dict) and response_format.get("type") in JSON_FORMATS
    max_tokens = payload.get("max_completion_tokens")
    if max_tokens is None:
        max_tokens = payload.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        max_tokens = None
    return Needs(
        tools=has_tools,
        vision=_has_image(messages),
        json_mode=json_mode,
        streaming=payload.get("stream") is True,
        max_tokens=max_tokens,
        upper=_upper_bound(messages) + len(tools_text),
        count=count,
    )


def _upper_bound(messages: Any) -> int:
    """A bound the estimate never exceeds: every estimated token is at least one character."""
    if not isinstance(messages, list):
        return 0
    total = 3
    for message in messages:
        if isinstance(message, dict):
            total += 4 + len(message_text(message.get("content")))
    return total


def _has_image(messages: Any) -> bool:
    if not isinstance(messages, list):
        return False
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and part.get("type") in IMAGE_PARTS:
                    return True
    return False


def unfit_reason(instance: InstanceSpec, needs: Needs) -> str | None:
    """Why this instance cannot serve a request with these needs, or None when it can."""
    if needs.tools and instance.supports_tools is False:
        return SKIP_TOOLS
    if needs.vision and instance.supports_vision is False:
        return SKIP_VISION
    if needs.json_mode and instance.supports_json_mode is False:
        return SKIP_JSON
    if needs.streaming and instance.supports_streaming is False:
        return SKIP_STREAMING
    answer = needs.max_tokens or 0
    limit = instance.max_output_tokens
    if needs.max_tokens is not None and limit is not None and needs.max_tokens > limit:
        return f"max output {limit} tokens < max_tokens {needs.max_tokens}"
    window = instance.context_window
    if (
        window is not None
        and needs.upper + answer > window  # cheap: most prompts fit by their length alone
        and needs.prompt_tokens + answer > window
    ):
        asked = f"prompt ~{needs.prompt_tokens} tokens" + (
            f" + max_tokens {answer}" if answer else ""
        )
        return f"{CONTEXT_PREFIX} {window} tokens < {asked}"
    return None


def unfit_instances(instances: Iterable[InstanceSpec], needs: Needs) -> dict[int, str]:
    """Every instance (by pk) that cannot serve the request, with the reason."""
    found: dict[int, str] = {}
    for instance in instances:
        if instance.pk in found:
            continue
        reason = unfit_reason(instance, needs)
        if reason is not None:
            found[instance.pk] = reason
    return found


def outgrown_reason(refused: InstanceSpec, candidate: InstanceSpec) -> str | None:
    """After ``refused`` answered that the prompt exceeds its context window: why ``candidate``
    cannot do better (a known window no larger than the refused one's), or None."""
    limit = refused.context_window
    window = candidate.context_window
    if candidate.pk == refused.pk:
        return f"{CONTEXT_PREFIX} exceeded (the upstream said so)"
    if limit is not None and window is not None and window <= limit:
        return (
            f"{CONTEXT_PREFIX} {window} tokens not larger than {refused.instance_id}'s "
            f"{limit}, which refused the prompt as too long"
        )
    return None
