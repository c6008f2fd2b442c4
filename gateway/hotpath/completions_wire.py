"""Legacy text completions (`POST /v1/completions`) as one-message chat requests, and back.

The prompt (a string, or a list holding one string) becomes a single user
message; `max_tokens`, `temperature`, `top_p`, `stop`, `seed`, `user`,
`presence_penalty`, `frequency_penalty`, `stream` and `stream_options` pass as
they are. The chat answer's text is the completion's `text`; `echo` prepends the
prompt to it. Refused (400), because a chat route cannot honour them: several
prompts in one request, token-id prompts, `suffix`, `logprobs`, `best_of` > 1 and
`n` > 1. Streamed chunks become `text_completion` chunks, the usage chunk and
`[DONE]` kept.
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.text import message_text
from gateway.upstream.answers import event_data

PASSED = (
    "max_tokens",
    "temperature",
    "top_p",
    "stop",
    "seed",
    "user",
    "presence_penalty",
    "frequency_penalty",
    "stream",
    "stream_options",
)


class InvalidCompletionRequest(ValueError):
    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


def prompt_of(body: dict[str, Any]) -> str:
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise InvalidCompletionRequest(
            "'prompt' must be a string (one prompt per request; token ids are not served).",
            "prompt",
        )
    return prompt


def to_chat(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise InvalidCompletionRequest("The request body must be a JSON object.")
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise InvalidCompletionRequest(
            "'model' is required: send a balancer's serving name.", "model"
        )
    for name, allowed in (
        ("suffix", (None,)),
        ("logprobs", (None, 0)),
        ("best_of", (None, 1)),
        ("n", (None, 1)),
    ):
        if body.get(name) not in allowed:
            raise InvalidCompletionRequest(
                f"'{name}' is not served: this gateway answers completions through chat routes.",
                name,
            )
    chat: dict[str, Any] = {
        "model": body["model"],
        "messages": [{"role": "user", "content": prompt_of(body)}],
    }
    for key in PASSED:
        if body.get(key) is not None:
            chat[key] = body[key]
    return chat


def _text(choice: dict[str, Any], key: str) -> str:
    return message_text((choice.get(key) or {}).get("content"))


def from_chat(completion: dict[str, Any], echo: str) -> dict[str, Any]:
    choices = [c for c in completion.get("choices") or () if isinstance(c, dict)]
    return {
        "id": "cmpl-" + str(completion.get("id") or "").removeprefix("chatcmpl-"),
        "object": "text_completion",
        "created": completion.get("created") or 0,
        "model": completion.get("model") or "",
        "choices": [
            {
                "text": echo + _text(c, "message"),
                "index": c.get("index", 0),
                "logprobs": None,
                "finish_reason": c.get("finish_reason"),
            }
            for c in choices
        ],
        "usage": completion.get("usage"),
    }


class StreamTranslator:
    def __init__(self, echo: str) -> None:
        self.echo = echo

    def feed(self, event: bytes) -> list[bytes]:
        out: list[bytes] = []
        for raw in event.split(b"\n\n"):
            data = event_data(raw)
            if not data:
                continue
            try:
                chunk = orjson.loads(data) if data != b"[DONE]" else None
            except orjson.JSONDecodeError:
                chunk = None
            if not isinstance(chunk, dict) or "error" in chunk:
                out.append(raw + b"\n\n")  # [DONE] and error events as they are
                continue
            choices = []
            for c in chunk.get("choices") or ():
                text = _text(c, "delta")
                if self.echo:
                    text, self.echo = self.echo + text, ""
                if text or c.get("finish_reason"):
                    choices.append(
                        {
                            "text": text,
                            "index": c.get("index", 0),
                            "logprobs": None,
                            "finish_reason": c.get("finish_reason"),
                        }
                    )
            if not choices and chunk.get("usage") is None:
                continue  # the role-only first chunk
            piece: dict[str, Any] = {
                "id": "cmpl-" + str(chunk.get("id") or "").removeprefix("chatcmpl-"),
                "object": "text_completion",
                "created": chunk.get("created") or 0,
                "model": chunk.get("model") or "",
                "choices": choices,
            }
            if chunk.get("usage") is not None:
                piece["usage"] = chunk["usage"]
            out.append(b"data: " + orjson.dumps(piece) + b"\n\n")
        return out
