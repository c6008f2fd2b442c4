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
    """The text of a chat message's content: a string, or a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def prompt_tokens(messages: Any) -> int:
    if not isinstance(messages, list):
        return 0
    # ~4 tokens of framing per message, as OpenAI's chat format adds.
    return sum(4 + estimate_tokens(message_text(m.get("content"))) for m in messages if isinstance(m, dict)) + 3
