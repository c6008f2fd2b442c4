"""Small text helpers shared by the simulator, usage accounting and classifiers."""

from __future__ import annotations

import re
from typing import Any

_TOKEN = re.compile(r"\w+|[^\w\s]")


def estimate_tokens(text: str) -> int:
    """A BPE-like token estimate: words and punctuation marks, long words split in 4-char pieces."""
    count = 0
    for match in _TOKEN.finditer(text):
        count += 1 + (len(match.group()) - 1) // 6
    return count


def message_text(content: Any) -> str:
    """The text of a chat message's content: a string, or a list of parts (text parts
    joined by newlines; images and other parts skipped)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # [{"type": "text", "text": ...}, {"type": "image_url", ...}]
        parts = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append(part["text"])
        return "\n".join(p for p in parts if p)
    return ""


def last_user_text(messages: Any) -> str:
    """The text of the conversation's last user turn ("" when there is none)."""
    if not isinstance(messages, list):
        return ""
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return message_text(message.get("content"))
    return ""


def prompt_tokens(messages: Any) -> int:
    if not isinstance(messages, list):
        return 0
    # ~4 tokens of framing per message, as OpenAI's chat format adds.
    return (
        sum(
            4 + estimate_tokens(message_text(m.get("content")))
            for m in messages
            if isinstance(m, dict)
        )
        + 3
    )
