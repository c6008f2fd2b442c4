"""Anthropic's Messages API at the gateway's door, translated to and from chat completions.

The gateway routes, fails over and costs chat completions; a `POST /v1/messages`
body is turned into one (this module, no Django), goes through the same proxy as
a chat request, and the answer — whole or streamed — is turned back into a
Messages answer. gateway/upstream/anthropic.py does the opposite trip for
Anthropic upstreams (chat → Messages → chat); the two share its stop-reason table
and image encoding. (An Anthropic instance is not served through this translation:
it gets the client's own body, see gateway.hotpath.messages_api.)

The rules:
- `system` (a string or text blocks) becomes one system message; each turn keeps
  its role. Text blocks stay text parts, image blocks (base64 or URL) become
  `image_url` parts (a base64 image as a data: URL), an assistant's `tool_use`
  blocks become `tool_calls`, and a user's `tool_result` blocks become `tool`
  messages placed before the rest of that user turn, as chat completions want.
  `thinking` and `redacted_thinking` blocks are dropped (no chat equivalent).
- `max_tokens` is required, as by Anthropic. `stop_sequences` → `stop`,
  `temperature`, `top_p` as they are, `metadata.user_id` → `user`; `top_k` has no
  chat equivalent and is dropped.
- Custom tools (`name`, `input_schema`) become function tools; Anthropic's server
  tools (web search, code execution...) are refused with a 400: no upstream
  behind a chat route runs them. `tool_choice` auto/any/tool/none maps to
  auto/required/{function}/none; `disable_parallel_tool_use` → `parallel_tool_calls`.
- Answers: the text, then one `tool_use` block per tool call; finish reasons map
  back (stop → end_turn, length → max_tokens, tool_calls → tool_use). A chat
  answer does not say whether a stop sequence ended it (OpenAI's `stop` finish
  covers both, and the stop string is cut from the text), so `stop_sequence` is
  reported only when it can be known: the choice names the matched string
  (`stop_reason`, as vLLM sends it, or `matched_stop`, as SGLang does) and it is
  one of the request's `stop_sequences`, or the text ends with one of them (a
  server that keeps it); then `stop_reason` is `stop_sequence`. Otherwise
  `end_turn` and a null `stop_sequence`.
- Streams: message_start, a ping, then content_block_start/delta/stop per text or
  tool block, message_delta (stop reason and the final usage) and message_stop.
  message_start's `input_tokens` is the gateway's estimate (the upstream reports
  its count at the end); message_delta carries the reported input and output
  counts, which the Anthropic SDKs take as final.
- Errors are `{"type": "error", "error": {"type", "message"}}`, the type named
  from the status as Anthropic names it; in a stream, an `error` event.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson

from gateway.text import estimate_tokens, message_text, prompt_tokens
from gateway.upstream.answers import event_data
from gateway.upstream.anthropic import FINISH

# The inverse of the Anthropic provider's table (stop_sequence folds into end_turn, unless
# the answer says which one: stop_sequence_of).
STOP_REASON = {chat: native for native, chat in FINISH.items() if native != "stop_sequence"}
STOP_REASON["content_filter"] = "refusal"

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    504: "timeout_error",
    529: "overloaded_error",
}


class InvalidMessages(ValueError):
    """The body is not a Messages API request; the message says what is wrong and `param` where."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


def error_body(status: int, message: str) -> bytes:
    kind = ERROR_TYPES.get(status) or ("api_error" if status >= 500 else "invalid_request_error")
    return orjson.dumps({"type": "error", "error": {"type": kind, "message": message}})


def _image_part(source: Any, where: str) -> dict[str, Any]:
    if not isinstance(source, dict):
        raise InvalidMessages(f"{where}.source must be an object.", where)
    if source.get("type") == "base64":
        return {
            "type": "image_url",
            "image_url": {
                "url": f"data:{source.get('media_type', '')};base64,{source.get('data', '')}"
            },
        }
    if source.get("type") == "url" and isinstance(source.get("url"), str):
        return {"type": "image_url", "image_url": {"url": source["url"]}}
    raise InvalidMessages(f"{where}.source: only base64 and url image sources are served.", where)


def _result_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return message_text([b for b in content if isinstance(b, dict) and b.get("type") == "text"])
    return ""


def _turn(message: Any, index: int) -> list[dict[str, Any]]:
    where = f"messages[{index}]"
    if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
        raise InvalidMessages(
            f"{where} must be an object with a role of 'user' or 'assistant'.", where
        )
    role, content = message["role"], message.get("content")
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    if not isinstance(content, list):
        raise InvalidMessages(
            f"{where}.content must be a string or an array of content blocks.", f"{where}.content"
        )
    parts: list[dict[str, Any]] = []
    tool_calls: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    for n, block in enumerate(content):
        here = f"{where}.content[{n}]"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            parts.append({"type": "text", "text": str(block.get("text", ""))})
        elif kind == "image":
            parts.append(_image_part(block.get("source"), here))
        elif kind == "tool_use" and role == "assistant":
            tool_calls.append(
                {
                    "id": str(block.get("id", "")),
                    "type": "function",
                    "function": {
                        "name": str(block.get("name", "")),
                        "arguments": orjson.dumps(block.get("input") or {}).decode(),
                    },
                }
            )
        elif kind == "tool_result" and role == "user":
            text = _result_text(block.get("content"))
            results.append(
                {
                    "role": "tool",
                    "tool_call_id": str(block.get("tool_use_id", "")),
                    "content": f"Error: {text}" if block.get("is_error") else text,
                }
            )
        elif kind in ("thinking", "redacted_thinking"):
            continue
        else:
            raise InvalidMessages(
                f"{here}: content blocks of type {kind!r} are not served on this {role} turn.", here
            )
    turns = list(results)
    if role == "assistant":
        text = "".join(p["text"] for p in parts if p["type"] == "text")
        reply: dict[str, Any] = {"role": "assistant", "content": text or None}
        if tool_calls:
            reply["tool_calls"] = tool_calls
        if text or tool_calls:
            turns.append(reply)
    elif parts:
        turns.append({"role": "user", "content": parts})
    return turns


def _tools(tools: Any) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise InvalidMessages("'tools' must be an array.", "tools")
    out = []
    for n, tool in enumerate(tools):
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
            raise InvalidMessages(f"tools[{n}] must be an object with a 'name'.", f"tools[{n}]")
        if tool.get("type") not in (None, "custom") or "input_schema" not in tool:
            raise InvalidMessages(
                f"tools[{n}] ({tool['name']!r}) is a server tool; this gateway serves custom tools "
                "(name, description, input_schema) only.",
                f"tools[{n}]",
            )
        function: dict[str, Any] = {
            "name": tool["name"],
            "parameters": tool.get("input_schema") or {"type": "object"},
        }
        if tool.get("description"):
            function["description"] = tool["description"]
        out.append({"type": "function", "function": function})
    return out


def _tool_choice(choice: Any) -> Any:
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind == "auto":
        return "auto"
    if kind == "any":
        return "required"
    if kind == "none":
        return "none"
    if kind == "tool" and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}
    raise InvalidMessages(
        "'tool_choice' must be {type: auto | any | none} or {type: tool, name}.", "tool_choice"
    )


def to_chat(body: Any) -> dict[str, Any]:
    """A Messages API request body as a chat-completions body (InvalidMessages when it is not
    one)."""
    if not isinstance(body, dict):
        raise InvalidMessages("The request body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidMessages("model: Field required (a balancer's serving name).", "model")
    max_tokens = body.get("max_tokens")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise InvalidMessages("max_tokens: Field required (a positive integer).", "max_tokens")
    turns = body.get("messages")
    if not isinstance(turns, list) or not turns:
        raise InvalidMessages("messages: a non-empty array is required.", "messages")
    messages: list[dict[str, Any]] = []
    system = body.get("system")
    if system:
        text = (
            system
            if isinstance(system, str)
            else message_text(system)
            if isinstance(system, list)
            else None
        )
        if text is None:
            raise InvalidMessages("system must be a string or an array of text blocks.", "system")
        messages.append({"role": "system", "content": text})
    for index, turn in enumerate(turns):
        messages.extend(_turn(turn, index))
    chat: dict[str, Any] = {"model": model, "messages": messages, "max_tokens": max_tokens}
    for key in ("temperature", "top_p"):
        if body.get(key) is not None:
            chat[key] = body[key]
    stop = body.get("stop_sequences")
    if stop:
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise InvalidMessages("stop_sequences must be an array of strings.", "stop_sequences")
        chat["stop"] = stop
    if body.get("tools"):
        chat["tools"] = _tools(body["tools"])
        choice = body.get("tool_choice")
        if choice is not None:
            chat["tool_choice"] = _tool_choice(choice)
            if isinstance(choice, dict) and choice.get("disable_parallel_tool_use"):
                chat["parallel_tool_calls"] = False
    user = (
        (body.get("metadata") or {}).get("user_id")
        if isinstance(body.get("metadata"), dict)
        else None
    )
    if user:
        chat["user"] = str(user)
    if "stream" in body:
        if not isinstance(body["stream"], bool):
            raise InvalidMessages("stream must be true or false.", "stream")
        if body["stream"]:
            chat["stream"] = True
            chat["stream_options"] = {"include_usage": True}  # message_delta carries the usage
    return chat


def count_tokens(body: Any) -> int:
    """The gateway's estimate of a Messages request's input tokens: the chat-format estimate of
    its turns (gateway.text.prompt_tokens) plus the estimate of its tools' JSON definitions."""
    chat = to_chat({**body, "max_tokens": 1}) if isinstance(body, dict) else to_chat(body)
    tools = chat.get("tools")
    return prompt_tokens(chat["messages"]) + (
        estimate_tokens(orjson.dumps(tools).decode()) if tools else 0
    )


def message_id(given: Any) -> str:
    text = given if isinstance(given, str) else ""
    return (
        text
        if text.startswith("msg_")
        else "msg_" + "".join(c for c in text if c.isalnum() or c in "_-")[:64]
    )


def _arguments(raw: Any) -> Any:
    if isinstance(raw, dict):
        return raw
    try:
        value = orjson.loads(raw or "{}")
    except (orjson.JSONDecodeError, TypeError):
        return {}
    return value if isinstance(value, dict) else {}


def stop_sequence_of(choice: dict[str, Any], text: str, stop_sequences: Any) -> str | None:
    """The request's stop sequence that ended a chat choice, when the answer lets it be known
    (see the module's rules); None otherwise."""
    if choice.get("finish_reason") != "stop" or not isinstance(stop_sequences, list):
        return None
    wanted = [s for s in stop_sequences if isinstance(s, str) and s]
    for field in ("stop_reason", "matched_stop"):  # vLLM, SGLang: the stop string that matched
        named = choice.get(field)
        if isinstance(named, str) and named in wanted:
            return named
    for sequence in wanted:  # a server that leaves the stop string in the text
        if text.endswith(sequence):
            return sequence
    return None


def from_chat(completion: dict[str, Any], stop_sequences: Any = None) -> dict[str, Any]:
    """A chat completion as a Messages API answer; `stop_sequences`: the request's."""
    choices = completion.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    reply = choice.get("message") or {}
    text = message_text(reply.get("content"))
    content: list[dict[str, Any]] = []
    calls = reply.get("tool_calls") or []
    if text or not calls:
        content.append({"type": "text", "text": text})
    for call in calls:
        function = call.get("function") or {}
        content.append(
            {
                "type": "tool_use",
                "id": call.get("id") or "",
                "name": function.get("name") or "",
                "input": _arguments(function.get("arguments")),
            }
        )
    usage = completion.get("usage") or {}
    sequence = stop_sequence_of(choice, text, stop_sequences)
    return {
        "id": message_id(completion.get("id")),
        "type": "message",
        "role": "assistant",
        "model": completion.get("model") or "",
        "content": content,
        "stop_reason": "stop_sequence"
        if sequence is not None
        else STOP_REASON.get(choice.get("finish_reason") or "stop", "end_turn"),
        "stop_sequence": sequence,
        "usage": {
            **_input_usage(usage.get("prompt_tokens") or 0, _cached_tokens(usage)),
            "output_tokens": usage.get("completion_tokens") or 0,
        },
    }


def _cached_tokens(usage: Any) -> int:
    """OpenAI's `prompt_tokens_details.cached_tokens` (0 when absent or not a count)."""
    details = usage.get("prompt_tokens_details") if isinstance(usage, dict) else None
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    return cached if isinstance(cached, int) and not isinstance(cached, bool) else 0


def _input_usage(prompt: Any, cached: int) -> dict[str, Any]:
    """Anthropic's input counts from a whole prompt and its cached part: `input_tokens` is the
    prompt past the cache, `cache_read_input_tokens` what was read from it."""
    if not cached or not isinstance(prompt, int) or cached > prompt:
        return {"input_tokens": prompt}
    return {"input_tokens": prompt - cached, "cache_read_input_tokens": cached}


def _event(kind: str, data: dict[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps({"type": kind, **data}) + b"\n\n"


class StreamTranslator:
    """Chat-completion chunks (SSE events, as the proxy relays them) in, Messages API events out."""

    def __init__(self, input_estimate: int, stop_sequences: Any = None) -> None:
        self.input_estimate = input_estimate
        self.stop_sequences = stop_sequences  # the request's, to tell which one ended the text
        self.stop_sequence: str | None = None
        self.tail = ""  # the end of the text so far (as long as the longest stop sequence)
        self.tail_size = max(
            (len(s) for s in stop_sequences or () if isinstance(s, str)), default=0
        )
        self.started = False
        self.finished = False
        self.block = -1  # index of the open content block (-1: none)
        self.block_kind = ""  # text | tool_use
        self.tool_blocks: dict[int, int] = {}  # chat tool-call index → content block index
        self.stop_reason = "end_turn"
        self.usage: dict[str, int] = {}

    def _start(self, chunk: dict[str, Any]) -> list[bytes]:
        if self.started:
            return []
        self.started = True
        message: dict[str, Any] = {
            "id": message_id(chunk.get("id")),
            "type": "message",
            "role": "assistant",
            "model": chunk.get("model") or "",
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": self.input_estimate, "output_tokens": 0},
        }
        return [_event("message_start", {"message": message}), _event("ping", {})]

    def _close(self) -> list[bytes]:
        if self.block_kind:
            self.block_kind = ""
            return [_event("content_block_stop", {"index": self.block})]
        return []

    def _open(self, kind: str, block: dict[str, Any]) -> list[bytes]:
        out = self._close()
        self.block += 1
        self.block_kind = kind
        out.append(_event("content_block_start", {"index": self.block, "content_block": block}))
        return out

    def feed(self, event: bytes) -> list[bytes]:
        """Translate one or more SSE events of the chat stream."""
        out: list[bytes] = []
        for raw in event.split(b"\n\n"):
            data = event_data(raw)
            if not data:
                continue
            if data == b"[DONE]":
                out.extend(self.finish())
                continue
            try:
                chunk = orjson.loads(data)
            except orjson.JSONDecodeError:
                continue
            if isinstance(chunk, dict):
                out.extend(self._chunk(chunk))
        return out

    def _chunk(self, chunk: dict[str, Any]) -> list[bytes]:
        error = chunk.get("error")
        if isinstance(error, dict):  # the proxy's error event for a stream cut after its first byte
            self.finished = True
            return [
                b"event: error\ndata: "
                + error_body(502, str(error.get("message") or "upstream error"))
                + b"\n\n"
            ]
        out = self._start(chunk)
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            for mine, theirs in (
                ("input_tokens", "prompt_tokens"),
                ("output_tokens", "completion_tokens"),
            ):
                if isinstance(usage.get(theirs), int):
                    self.usage[mine] = usage[theirs]
            if _cached_tokens(usage):
                self.usage["cached"] = _cached_tokens(usage)
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            delta = choice.get("delta") or {}
            text = delta.get("content")
            if isinstance(text, str) and text:
                if self.tail_size:
                    self.tail = (self.tail + text)[-self.tail_size :]
                if self.block_kind != "text":
                    out.extend(self._open("text", {"type": "text", "text": ""}))
                out.append(
                    _event(
                        "content_block_delta",
                        {"index": self.block, "delta": {"type": "text_delta", "text": text}},
                    )
                )
            for call in delta.get("tool_calls") or ():
                index = call.get("index", 0)
                function = call.get("function") or {}
                if index not in self.tool_blocks:
                    out.extend(
                        self._open(
                            "tool_use",
                            {
                                "type": "tool_use",
                                "id": call.get("id") or "",
                                "name": function.get("name") or "",
                                "input": {},
                            },
                        )
                    )
                    self.tool_blocks[index] = self.block
                arguments = function.get("arguments")
                if arguments:
                    out.append(
                        _event(
                            "content_block_delta",
                            {
                                "index": self.tool_blocks[index],
                                "delta": {"type": "input_json_delta", "partial_json": arguments},
                            },
                        )
                    )
            if choice.get("finish_reason"):
                self.stop_reason = STOP_REASON.get(choice["finish_reason"], "end_turn")
                self.stop_sequence = stop_sequence_of(choice, self.tail, self.stop_sequences)
                if self.stop_sequence is not None:
                    self.stop_reason = "stop_sequence"
        return out

    def finish(self) -> list[bytes]:
        """The closing events (once), at `[DONE]` or when the chat stream ends without one."""
        if self.finished:
            return []
        self.finished = True
        out = self._start({})
        out.extend(self._close())
        usage = {
            **_input_usage(
                self.usage.get("input_tokens", self.input_estimate), self.usage.get("cached", 0)
            ),
            "output_tokens": self.usage.get("output_tokens", 0),
        }
        out.append(
            _event(
                "message_delta",
                {
                    "delta": {"stop_reason": self.stop_reason, "stop_sequence": self.stop_sequence},
                    "usage": usage,
                },
            )
        )
        out.append(_event("message_stop", {}))
        return out


async def translate_stream(
    chunks: AsyncIterator[bytes], translator: StreamTranslator
) -> AsyncIterator[bytes]:
    try:
        async for chunk in chunks:
            for event in translator.feed(chunk):
                yield event
        for event in translator.finish():
            yield event
    finally:
        close = getattr(chunks, "aclose", None)
        if close is not None:
            await close()
