"""The legacy text completions door, `POST /v1/completions` (gateway.hotpath.completions_wire):
routed as a one-message chat request, recorded with endpoint `completions`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, cast

import orjson
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse

from gateway.hotpath import completions_wire, errors
from gateway.hotpath.proxy import proxy
from gateway.hotpath.v1_api import GatewayApiView, exception_response, read_json, translated_request


def _openai_error(exc: Exception, context: Any = None) -> HttpResponse:
    if isinstance(exc, completions_wire.InvalidCompletionRequest):
        exc = errors.bad_request(str(exc), param=exc.param)
    return exception_response(exc)


async def _translated(
    chunks: AsyncIterator[bytes], translator: completions_wire.StreamTranslator
) -> AsyncIterator[bytes]:
    try:
        async for chunk in chunks:
            for event in translator.feed(chunk):
                yield event
    finally:
        close = getattr(chunks, "aclose", None)
        if close is not None:
            await close()


class CompletionsApi(GatewayApiView):
    def get_exception_handler(self) -> Any:
        return _openai_error

    async def post(self, request: Any) -> HttpResponse | StreamingHttpResponse:
        http: HttpRequest = request._request
        body = read_json(http)
        chat = completions_wire.to_chat(body)
        echo = completions_wire.prompt_of(body) if body.get("echo") else ""
        client_request = translated_request(http, chat, self.key(request), "completions")
        response = await proxy(client_request, self.config(request))
        if isinstance(response, StreamingHttpResponse):
            response.streaming_content = _translated(
                cast(AsyncIterator[bytes], response.streaming_content),
                completions_wire.StreamTranslator(echo),
            )
            return response
        if response.status_code < 400:
            response.content = orjson.dumps(
                completions_wire.from_chat(orjson.loads(response.content), echo)
            )
        return response
