"""OpenAI's Responses API at the gateway's door, translated to and from chat completions.

A `POST /v1/responses` body becomes a chat-completions body (this module, no
Django), is routed by the proxy like a chat request, and the chat answer — whole
or streamed — becomes a Responses object or the Responses event stream.

The rules:
- `input` is a string (one user message) or a list of items: messages (`role`
  user, system, developer or assistant; content a string or `input_text`,
  `output_text`, `refusal` and `input_image` parts — an image by URL or data:
  URL; files by id are refused), `function_call` items (an assistant turn's
  `tool_calls`, consecutive calls in one turn) and `function_call_output` items
  (`tool` messages). `reasoning` items are dropped. `developer` becomes `system`.
- `instructions` is a system message placed first; as with OpenAI, it is not
  carried to a follow-up request made with `previous_response_id`.
- `tools`: function tools only (a built-in tool — web search, file search... — is
  refused: no upstream behind a chat route runs it). `tool_choice` auto, none,
  required or {type: function, name}; `parallel_tool_calls` as is.
- `text.format`: json_schema → `response_format` {type: json_schema, json_schema:
  {name, schema, strict}}, json_object as is, text → nothing.
- `max_output_tokens` → `max_tokens`; `temperature`, `top_p`, `user` as they are;
  `metadata` stays at the gateway (echoed in the response, stored with it).
- The answer: one `message` item with the text (when there is text), then one
  `function_call` item per tool call. A `length` finish is status `incomplete`
  with reason `max_output_tokens`. `usage` is input/output/total tokens from the
  upstream's counts.
- A stream: response.created, response.in_progress, then per item
  output_item.added (+ content_part.added for text), the deltas
  (output_text.delta / function_call_arguments.delta), their .done events,
  output_item.done, and response.completed carrying the whole response. A stream
  cut after its first byte ends with an `error` event and response.failed.
"""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson

from gateway.text import message_text
from gateway.upstream.answers import event_data


class InvalidResponsesRequest(ValueError):
    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


def new_id(prefix: str) -> str:
    return f"{prefix}_{random.getrandbits(96):024x}"


def _part(part: Any, where: str) -> dict[str, Any]:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind in ("input_text", "output_text", "text"):
        return {"type": "text", "text": str(part.get("text", ""))}
    if kind == "refusal":
        return {"type": "text", "text": str(part.get("refusal", ""))}
    if kind == "input_image" and isinstance(part.get("image_url"), str):
        image: dict[str, Any] = {"url": part["image_url"]}
        if part.get("detail") in ("low", "high"):
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    raise InvalidResponsesRequest(
        f"{where}: content parts of type {kind!r} are not served (text and images by URL "
        "or data: URL are).",
        where,
    )


def _message(item: dict[str, Any], where: str) -> dict[str, Any]:
    role = item.get("role")
    if role not in ("user", "system", "developer", "assistant"):
        raise InvalidResponsesRequest(
            f"{where}.role must be user, system, developer or assistant.", f"{where}.role"
        )
    content = item.get("content")
    if isinstance(content, list):
        parts = [_part(p, f"{where}.content[{n}]") for n, p in enumerate(content)]
        if role == "user":
            return {"role": "user", "content": parts}
        content = message_text(parts)
    elif not isinstance(content, str):
        raise InvalidResponsesRequest(
            f"{where}.content must be a string or an array of parts.", f"{where}.content"
        )
    return {"role": "system" if role == "developer" else role, "content": content}


def input_messages(value: Any) -> list[dict[str, Any]]:
    """The request's `input` as chat messages."""
    if isinstance(value, str) and value:
        return [{"role": "user", "content": value}]
    if not isinstance(value, list) or not value:
        raise InvalidResponsesRequest(
            "'input' must be a non-empty string or array of items.", "input"
        )
    messages: list[dict[str, Any]] = []
    for n, item in enumerate(value):
        where = f"input[{n}]"
        if not isinstance(item, dict):
            raise InvalidResponsesRequest(f"{where} must be an object.", where)
        kind = item.get("type") or "message"
        if kind == "message":
            messages.append(_message(item, where))
        elif kind == "function_call":
            call = {
                "id": str(item.get("call_id", "")),
                "type": "function",
                "function": {
                    "name": str(item.get("name", "")),
                    "arguments": str(item.get("arguments") or "{}"),
                },
            }
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant" and "tool_calls" in last:
                last["tool_calls"].append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output")
            text = (
                output
                if isinstance(output, str)
                else message_text(
                    [
                        _part(p, f"{where}.output")
                        for p in output
                        if isinstance(p, dict) and "text" in p
                    ]
                )
                if isinstance(output, list)
                else ""
            )
            messages.append(
                {"role": "tool", "tool_call_id": str(item.get("call_id", "")), "content": text}
            )
        elif kind == "reasoning":
            continue
        else:
            raise InvalidResponsesRequest(f"{where}: items of type {kind!r} are not served.", where)
    return messages


def _listed_content(role: str, content: Any) -> list[dict[str, Any]]:
    """A message's content as the API lists it: parts; a string becomes one text part."""
    if isinstance(content, list):
        return [dict(part) for part in content if isinstance(part, dict)]
    if role == "assistant":
        return [{"type": "output_text", "text": str(content), "annotations": []}]
    return [{"type": "input_text", "text": str(content)}]


def input_items(value: Any) -> list[dict[str, Any]]:
    """The request's `input` (already checked by `input_messages`) as `GET
    /v1/responses/{id}/input_items` lists it back: each item with an `id` (the client's, or
    a new one) and status `completed`; a string is one user message; `reasoning` items are
    dropped, as they are on the way to the upstream."""
    if isinstance(value, str):
        value = [{"type": "message", "role": "user", "content": value}]
    items: list[dict[str, Any]] = []
    for item in value if isinstance(value, list) else ():
        if not isinstance(item, dict):
            continue
        kind = item.get("type") or "message"
        given = item.get("id")
        if kind == "message":
            role = str(item.get("role"))
            items.append(
                {
                    "id": given if isinstance(given, str) and given else new_id("msg"),
                    "type": "message",
                    "role": role,
                    "status": "completed",
                    "content": _listed_content(role, item.get("content")),
                }
            )
        elif kind == "function_call":
            items.append(
                {
                    "id": given if isinstance(given, str) and given else new_id("fc"),
                    "type": "function_call",
                    "call_id": str(item.get("call_id", "")),
                    "name": str(item.get("name", "")),
                    "arguments": str(item.get("arguments") or "{}"),
                    "status": "completed",
                }
            )
        elif kind == "function_call_output":
            output = item.get("output")
            items.append(
                {
                    "id": given if isinstance(given, str) and given else new_id("fco"),
                    "type": "function_call_output",
                    "call_id": str(item.get("call_id", "")),
                    "output": output if isinstance(output, str | list) else "",
                    "status": "completed",
                }
            )
    return items


def list_page(
    items: list[dict[str, Any]], *, limit: Any, order: Any, after: Any, before: Any
) -> dict[str, Any]:
    """One page of a response's input items, in OpenAI's list shape: `limit` 1 to 100
    (20), `order` asc or desc (desc: the newest first, OpenAI's default), `after` / `before`
    an item id of the list in that order."""
    try:
        count = 20 if limit in (None, "") else int(limit)
    except (TypeError, ValueError):
        count = 0
    if not 1 <= count <= 100:
        raise InvalidResponsesRequest("'limit' must be an integer from 1 to 100.", "limit")
    if order in (None, ""):
        order = "desc"
    if order not in ("asc", "desc"):
        raise InvalidResponsesRequest("'order' must be asc or desc.", "order")
    ordered = list(items) if order == "asc" else list(reversed(items))
    ids = [str(item.get("id")) for item in ordered]
    start, end = 0, len(ordered)
    for name, cursor in (("after", after), ("before", before)):
        if cursor in (None, ""):
            continue
        if cursor not in ids:
            raise InvalidResponsesRequest(
                f"'{name}' must be the id of one of this response's input items.", name
            )
        if name == "after":
            start = ids.index(cursor) + 1
        else:
            end = ids.index(cursor)
    window = ordered[start:end]
    # `before` pages backwards: the items just before the cursor.
    page = window[-count:] if before not in (None, "") and after in (None, "") else window[:count]
    return {
        "object": "list",
        "data": page,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
        "has_more": len(window) > len(page),
    }


def _tools(tools: Any) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise InvalidResponsesRequest("'tools' must be an array.", "tools")
    out = []
    for n, tool in enumerate(tools):
        if (
            not isinstance(tool, dict)
            or tool.get("type") != "function"
            or not isinstance(tool.get("name"), str)
        ):
            kind = tool.get("type") if isinstance(tool, dict) else None
            raise InvalidResponsesRequest(
                f"tools[{n}]: only function tools are served, not {kind!r}.", f"tools[{n}]"
            )
        function: dict[str, Any] = {
            "name": tool["name"],
            "parameters": tool.get("parameters") or {"type": "object"},
        }
        for key in ("description", "strict"):
            if tool.get(key) is not None:
                function[key] = tool[key]
        out.append({"type": "function", "function": function})
    return out


def _tool_choice(choice: Any) -> Any:
    if choice in ("auto", "none", "required"):
        return choice
    if (
        isinstance(choice, dict)
        and choice.get("type") == "function"
        and isinstance(choice.get("name"), str)
    ):
        return {"type": "function", "function": {"name": choice["name"]}}
    raise InvalidResponsesRequest(
        "'tool_choice' must be auto, none, required or {type: function, name}.", "tool_choice"
    )


def _response_format(text: Any) -> dict[str, Any] | None:
    if text is None:
        return None
    fmt = text.get("format") if isinstance(text, dict) else None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if fmt is None or kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema" and isinstance(fmt.get("schema"), dict):
        schema: dict[str, Any] = {"name": fmt.get("name") or "response", "schema": fmt["schema"]}
        for key in ("strict", "description"):
            if fmt.get(key) is not None:
                schema[key] = fmt[key]
        return {"type": "json_schema", "json_schema": schema}
    raise InvalidResponsesRequest(
        "'text.format' must be text, json_object or json_schema with a schema.", "text.format"
    )


def to_chat(
    body: Any, history: list[dict[str, Any]] | None = None
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(the chat-completions body, the conversation to store): the conversation is the earlier
    turns (`history`, from previous_response_id) and this input, without the instructions."""
    if not isinstance(body, dict):
        raise InvalidResponsesRequest("The request body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidResponsesRequest(
            "'model' is required: send a balancer's serving name.", "model"
        )
    conversation = [*(history or []), *input_messages(body.get("input"))]
    messages = list(conversation)
    instructions = body.get("instructions")
    if instructions is not None:
        if not isinstance(instructions, str):
            raise InvalidResponsesRequest("'instructions' must be a string.", "instructions")
        if instructions:
            messages.insert(0, {"role": "system", "content": instructions})
    chat: dict[str, Any] = {"model": model, "messages": messages}
    if body.get("tools"):
        chat["tools"] = _tools(body["tools"])
        if body.get("tool_choice") is not None:
            chat["tool_choice"] = _tool_choice(body["tool_choice"])
        if isinstance(body.get("parallel_tool_calls"), bool):
            chat["parallel_tool_calls"] = body["parallel_tool_calls"]
    response_format = _response_format(body.get("text"))
    if response_format is not None:
        chat["response_format"] = response_format
    limit = body.get("max_output_tokens")
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise InvalidResponsesRequest(
                "'max_output_tokens' must be a positive integer.", "max_output_tokens"
            )
        chat["max_tokens"] = limit
    for key in ("temperature", "top_p", "user"):
        if body.get(key) is not None:
            chat[key] = body[key]
    if (
        "metadata" in body
        and body["metadata"] is not None
        and not isinstance(body["metadata"], dict)
    ):
        raise InvalidResponsesRequest("'metadata' must be an object.", "metadata")
    if "stream" in body:
        if not isinstance(body["stream"], bool):
            raise InvalidResponsesRequest("'stream' must be true or false.", "stream")
        if body["stream"]:
            chat["stream"] = True
            chat["stream_options"] = {"include_usage": True}  # response.completed carries the usage
    return chat, conversation


def _usage(prompt: int, completion: int, cached: int = 0) -> dict[str, Any]:
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + completion,
    }


def _cached_tokens(usage: Any) -> int:
    """Chat's `prompt_tokens_details.cached_tokens` (0 when absent or not a count)."""
    details = usage.get("prompt_tokens_details") if isinstance(usage, dict) else None
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    return cached if isinstance(cached, int) and not isinstance(cached, bool) else 0


class Draft:
    """A Responses object being built: the request's echoed settings, then the output items."""

    def __init__(self, body: dict[str, Any], *, response_id: str, stored: bool) -> None:
        self.body = body
        self.id = response_id
        self.created_at = int(time.time())
        self.stored = stored
        self.model = ""
        self.output: list[dict[str, Any]] = []
        self.finish = "stop"
        self.prompt = 0
        self.completion = 0
        self.cached = 0  # of `prompt`, read from the provider's prompt cache

    def reply_message(self) -> dict[str, Any]:
        """The answer as a chat assistant message (what a follow-up's history holds)."""
        text = "".join(
            part["text"]
            for item in self.output
            if item["type"] == "message"
            for part in item["content"]
        )
        calls = [
            {
                "id": item["call_id"],
                "type": "function",
                "function": {"name": item["name"], "arguments": item["arguments"]},
            }
            for item in self.output
            if item["type"] == "function_call"
        ]
        message: dict[str, Any] = {"role": "assistant", "content": text or None}
        if calls:
            message["tool_calls"] = calls
        return message

    def response(self, status: str | None = None) -> dict[str, Any]:
        body = self.body
        incomplete = self.finish == "length"
        status = status or ("incomplete" if incomplete else "completed")
        fmt = (body.get("text") or {}).get("format") if isinstance(body.get("text"), dict) else None
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "error": None,
            "incomplete_details": {"reason": "max_output_tokens"}
            if incomplete and status == "incomplete"
            else None,
            "instructions": body.get("instructions"),
            "max_output_tokens": body.get("max_output_tokens"),
            "model": self.model or body.get("model"),
            "output": self.output if status != "in_progress" else [],
            "parallel_tool_calls": body.get("parallel_tool_calls", True),
            "previous_response_id": body.get("previous_response_id"),
            "reasoning": {"effort": None, "summary": None},
            "store": self.stored,
            "temperature": body.get("temperature"),
            "text": {"format": fmt or {"type": "text"}},
            "tool_choice": body.get("tool_choice", "auto"),
            "tools": body.get("tools") or [],
            "top_p": body.get("top_p"),
            "truncation": "disabled",
            "usage": _usage(self.prompt, self.completion, self.cached)
            if status != "in_progress"
            else None,
            "user": body.get("user"),
            "metadata": body.get("metadata") or {},
        }


def _message_item(text: str, status: str = "completed") -> dict[str, Any]:
    return {
        "type": "message",
        "id": new_id("msg"),
        "status": status,
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}],
    }


def _call_item(
    call_id: str, name: str, arguments: str, status: str = "completed"
) -> dict[str, Any]:
    return {
        "type": "function_call",
        "id": new_id("fc"),
        "call_id": call_id or new_id("call"),
        "name": name,
        "arguments": arguments,
        "status": status,
    }


def from_chat(completion: dict[str, Any], draft: Draft) -> dict[str, Any]:
    """A chat completion as a Responses object (the draft keeps the items for storage)."""
    choices = completion.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    reply = choice.get("message") or {}
    text = message_text(reply.get("content"))
    calls = reply.get("tool_calls") or []
    if text or not calls:
        draft.output.append(_message_item(text))
    for call in calls:
        function = call.get("function") or {}
        draft.output.append(
            _call_item(
                call.get("id") or "", function.get("name") or "", function.get("arguments") or ""
            )
        )
    usage = completion.get("usage") or {}
    draft.prompt, draft.completion = (
        usage.get("prompt_tokens") or 0,
        usage.get("completion_tokens") or 0,
    )
    draft.cached = _cached_tokens(usage)
    draft.model = completion.get("model") or ""
    draft.finish = choice.get("finish_reason") or "stop"
    return draft.response()


class StreamTranslator:
    """Chat-completion chunks in, Responses API events out; `draft` holds the finished response."""

    def __init__(self, draft: Draft) -> None:
        self.draft = draft
        self.sequence = 0
        self.started = False
        self.finished = False
        self.failed = False
        self.open: dict[str, Any] | None = None  # the output item being streamed
        self.calls: dict[int, dict[str, Any]] = {}  # chat tool-call index → function_call item

    def _event(self, kind: str, **data: Any) -> bytes:
        payload = {"type": kind, "sequence_number": self.sequence, **data}
        self.sequence += 1
        return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"

    def _start(self, chunk: dict[str, Any]) -> list[bytes]:
        if self.started:
            return []
        self.started = True
        self.draft.model = chunk.get("model") or ""
        initial = self.draft.response("in_progress")
        return [
            self._event("response.created", response=initial),
            self._event("response.in_progress", response=initial),
        ]

    def _close(self) -> list[bytes]:
        item, self.open = self.open, None
        if item is None:
            return []
        index = self.draft.output.index(item)
        item["status"] = "completed"
        if item["type"] == "message":
            part = item["content"][0]
            return [
                self._event(
                    "response.output_text.done",
                    item_id=item["id"],
                    output_index=index,
                    content_index=0,
                    text=part["text"],
                    logprobs=[],
                ),
                self._event(
                    "response.content_part.done",
                    item_id=item["id"],
                    output_index=index,
                    content_index=0,
                    part=part,
                ),
                self._event("response.output_item.done", output_index=index, item=item),
            ]
        return [
            self._event(
                "response.function_call_arguments.done",
                item_id=item["id"],
                output_index=index,
                arguments=item["arguments"],
                name=item["name"],
            ),
            self._event("response.output_item.done", output_index=index, item=item),
        ]

    def _add(self, item: dict[str, Any]) -> list[bytes]:
        out = self._close()
        self.draft.output.append(item)
        self.open = item
        index = len(self.draft.output) - 1
        shown = {**item, "status": "in_progress"}
        if item["type"] == "message":
            shown["content"] = []
        out.append(self._event("response.output_item.added", output_index=index, item=shown))
        if item["type"] == "message":
            out.append(
                self._event(
                    "response.content_part.added",
                    item_id=item["id"],
                    output_index=index,
                    content_index=0,
                    part={"type": "output_text", "text": "", "annotations": [], "logprobs": []},
                )
            )
        return out

    def feed(self, event: bytes) -> list[bytes]:
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
            if isinstance(chunk, dict) and not self.finished:
                out.extend(self._chunk(chunk))
        return out

    def _chunk(self, chunk: dict[str, Any]) -> list[bytes]:
        error = chunk.get("error")
        if isinstance(error, dict):  # the proxy's error event for a stream cut after its first byte
            self.finished = self.failed = True
            out = self._start(chunk)
            message = str(error.get("message") or "upstream error")
            out.append(
                self._event(
                    "error", code=error.get("code") or "upstream_error", message=message, param=None
                )
            )
            failed = self.draft.response("failed")
            failed["error"] = {"code": "server_error", "message": message}
            out.append(self._event("response.failed", response=failed))
            return out
        out = self._start(chunk)
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self.draft.prompt = usage.get("prompt_tokens") or 0
            self.draft.completion = usage.get("completion_tokens") or 0
            self.draft.cached = _cached_tokens(usage)
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            delta = choice.get("delta") or {}
            text = delta.get("content")
            if isinstance(text, str) and text:
                if self.open is None or self.open["type"] != "message":
                    out.extend(self._add(_message_item("", "in_progress")))
                assert self.open is not None
                self.open["content"][0]["text"] += text
                out.append(
                    self._event(
                        "response.output_text.delta",
                        item_id=self.open["id"],
                        output_index=len(self.draft.output) - 1,
                        content_index=0,
                        delta=text,
                        logprobs=[],
                    )
                )
            for call in delta.get("tool_calls") or ():
                index = call.get("index", 0)
                function = call.get("function") or {}
                item = self.calls.get(index)
                if item is None:
                    item = self.calls[index] = _call_item(
                        call.get("id") or "", function.get("name") or "", "", "in_progress"
                    )
                    out.extend(self._add(item))
                arguments = function.get("arguments")
                if arguments:
                    item["arguments"] += arguments
                    out.append(
                        self._event(
                            "response.function_call_arguments.delta",
                            item_id=item["id"],
                            output_index=self.draft.output.index(item),
                            delta=arguments,
                        )
                    )
            if choice.get("finish_reason"):
                self.draft.finish = choice["finish_reason"]
        return out

    def finish(self) -> list[bytes]:
        if self.finished:
            return []
        self.finished = True
        out = self._start({})
        out.extend(self._close())
        if not self.draft.output:
            self.draft.output.append(_message_item(""))
        response = self.draft.response()
        out.append(
            self._event(
                "response.completed"
                if response["status"] == "completed"
                else "response.incomplete",
                response=response,
            )
        )
        return out


async def translate_stream(
    chunks: AsyncIterator[bytes],
    translator: StreamTranslator,
    on_done: Callable[[], Any] | None = None,
) -> AsyncIterator[bytes]:
    """The translated stream; `on_done` (awaited) runs once the response completed."""
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
    if on_done is not None and not translator.failed:
        await on_done()
