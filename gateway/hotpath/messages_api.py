"""The Anthropic Messages API door: `POST /v1/messages` and `POST /v1/messages/count_tokens`.

A Messages request is translated into a chat request (gateway.hotpath.messages_wire), routed by
gateway.hotpath.proxy exactly like one — same balancer, decision, failover, usage event (recorded
with endpoint `messages`) and cost — and its answer translated back — except on an Anthropic
instance, which gets the client's own body and whose own answer goes back untranslated
(upstream.anthropic .Native; the proxy still reads its translation for usage and health). The key
comes as `x-api-key` (what the Anthropic SDKs send) or `Authorization: Bearer`; `anthropic-version`
is accepted whatever its value and not required (the translation is the 2023-06-01 wire format). On
a pass-through to an Anthropic instance the client's `anthropic-*` headers (`anthropic-version`,
`anthropic-beta`...) go with its body (anthropic_headers). Every error on these paths is
Anthropic-shaped.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, cast

import orjson
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse

from gateway.hotpath import errors, messages_wire
from gateway.hotpath.proxy import find_balancer, proxy
from gateway.hotpath.scrub import Scrubber, scrubber_for
from gateway.hotpath.v1_api import GatewayApiView, exception_response, read_json, translated_request
from gateway.upstream import anthropic


def _anthropic_error(exc: Exception, context: Any = None) -> HttpResponse:
    if isinstance(exc, messages_wire.InvalidMessages):
        exc = errors.bad_request(str(exc), param=exc.param)
    return _reshaped(exception_response(exc))  # an unexpected exception is logged there


def _reshaped(response: HttpResponse) -> HttpResponse:
    """An OpenAI-shaped error answer, same status and headers, with Anthropic's body."""
    try:
        error = orjson.loads(response.content).get("error") or {}
    except (orjson.JSONDecodeError, AttributeError):
        error = {}
    message = error.get("message") if isinstance(error, dict) else None
    response.content = messages_wire.error_body(
        response.status_code, message or f"HTTP {response.status_code}"
    )
    if not getattr(response, "error_code", ""):
        code = error.get("code") or error.get("type") if isinstance(error, dict) else None
        response.error_code = str(code or "")  # type: ignore[attr-defined]
    return response


_FORWARDED_MAX = (
    20  # anthropic-* headers passed on, at most, each at most _FORWARDED_VALUE_MAX long
)
_FORWARDED_VALUE_MAX = 2000


def anthropic_headers(http: HttpRequest) -> dict[str, str]:
    """The client's `anthropic-*` headers (`anthropic-version`, `anthropic-beta`...), forwarded
    with its body when an Anthropic instance serves it untranslated; dropped for other
    providers, which would not know them."""
    found: dict[str, str] = {}
    for name, value in http.headers.items():
        lowered = name.lower()
        if (
            lowered.startswith("anthropic-")
            and len(found) < _FORWARDED_MAX
            and len(value) <= _FORWARDED_VALUE_MAX
            and value.isprintable()
        ):
            found[lowered] = value
    return found


class AnthropicApiView(GatewayApiView):
    def get_exception_handler(self) -> Any:
        return _anthropic_error


class MessagesApi(AnthropicApiView):
    async def post(self, request: Any) -> HttpResponse | StreamingHttpResponse:
        http: HttpRequest = request._request
        body = read_json(http)
        chat = messages_wire.to_chat(body)
        client_request = translated_request(http, chat, self.key(request), "messages")
        native = client_request.native = anthropic.Native(body, anthropic_headers(http))
        config = self.config(request)
        response = await proxy(client_request, config)
        # Served by an Anthropic instance: the client gets that instance's own answer, untranslated.
        served = (
            native.served(response.get("x-balancer-instance"))
            if response.status_code < 400
            else None
        )
        scrubber = scrubber_for(config.instances, config.secrets)
        if isinstance(response, StreamingHttpResponse):
            translator = messages_wire.StreamTranslator(
                messages_wire.count_tokens(body), body.get("stop_sequences")
            )
            chunks = cast(AsyncIterator[bytes], response.streaming_content)
            response.streaming_content = (
                _native_stream(chunks, served, translator, scrubber)
                if served is not None
                else messages_wire.translate_stream(chunks, translator)
            )
            return response
        if response.status_code >= 400:
            return _reshaped(response)
        if served is not None and served.answer is not None:
            response.content = scrubber.body(served.answer)
        else:
            response.content = orjson.dumps(
                messages_wire.from_chat(orjson.loads(response.content), body.get("stop_sequences"))
            )
        return response


async def _native_stream(
    chunks: AsyncIterator[bytes],
    native: anthropic.Native,
    translator: messages_wire.StreamTranslator,
    scrubber: Scrubber,
) -> AsyncIterator[bytes]:
    """The Anthropic instance's own events, relayed in step with the proxy's stream of their
    translation (which the proxy reads for usage and health); the proxy's own error event, for a
    stream cut after its first byte, in the Messages shape."""
    try:
        async for chunk in chunks:
            if chunk.startswith(b'data: {"error"'):
                native.events.clear()
                for event in translator.feed(chunk):
                    yield event
                continue
            while native.events:
                yield scrubber.body(native.events.popleft())
        while native.events:
            yield scrubber.body(native.events.popleft())
    finally:
        close = getattr(chunks, "aclose", None)
        if close is not None:
            await close()


class CountTokensApi(AnthropicApiView):
    """The gateway's own estimate (messages_wire.count_tokens); no upstream is called."""

    async def post(self, request: Any) -> HttpResponse | StreamingHttpResponse:
        body = read_json(request._request)
        tokens = messages_wire.count_tokens(body)
        find_balancer(self.config(request), self.key(request), body["model"], "chat")
        return JsonResponse({"input_tokens": tokens})
