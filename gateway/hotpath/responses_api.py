"""The OpenAI Responses API door: `POST /v1/responses`, `GET` and `DELETE /v1/responses/{id}`.

A Responses request is translated into a chat request (gateway.hotpath.responses_wire),
routed by gateway.hotpath.proxy exactly like one — balancer, decision, failover,
usage event (recorded with endpoint `responses`) and cost — and the answer
translated back. With `store` (true unless the client says false, as with
OpenAI) and GATEWAY_RESPONSES_RETENTION_DAYS above 0, a completed answer is kept
in the database (gateway.models.StoredResponse) with its conversation, so a
later request can continue it with `previous_response_id`; only the key that
made it can read, continue or delete it, and it expires after the retention.
The one database write is made after the answer (a stream's: after its last
event), in a worker thread, off the request's routing path.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any, cast

import orjson
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.utils import timezone

from gateway.db import in_thread
from gateway.hotpath import errors, responses_wire
from gateway.hotpath.proxy import proxy
from gateway.hotpath.snapshot import KeySpec
from gateway.hotpath.v1_api import GatewayApiView, exception_response, read_json, translated_request
from gateway.models import StoredResponse


def _openai_error(exc: Exception, context: Any = None) -> HttpResponse:
    if isinstance(exc, responses_wire.InvalidResponsesRequest):
        exc = errors.bad_request(str(exc), param=exc.param)
    return exception_response(exc)


def _not_found(response_id: str) -> errors.GatewayError:
    return errors.GatewayError(
        404, f"No response found with id {response_id[:100]!r}.", code="response_not_found"
    )


def _live(key: KeySpec, response_id: str) -> Any:
    """The key's stored, unexpired response with this id (a queryset)."""
    return StoredResponse.objects.filter(
        pk=response_id, api_key_id=key.pk, expires_at__gt=timezone.now()
    )


async def _history(key: KeySpec, previous: Any) -> list[dict[str, Any]] | None:
    if previous is None:
        return None
    if not isinstance(previous, str) or not previous:
        raise errors.bad_request(
            "'previous_response_id' must be a response id.", param="previous_response_id"
        )
    if settings.GATEWAY_RESPONSES_RETENTION_DAYS == 0:
        raise errors.bad_request(
            "This gateway stores no responses (GATEWAY_RESPONSES_RETENTION_DAYS is 0), so "
            "'previous_response_id' cannot be used: send the whole conversation as input.",
            param="previous_response_id",
            code="previous_response_not_found",
        )
    conversation = await in_thread(
        lambda: _live(key, previous).values_list("conversation", flat=True).first()
    )
    if conversation is None:
        raise errors.bad_request(
            f"Previous response with id {previous[:100]!r} not found.",
            param="previous_response_id",
            code="previous_response_not_found",
        )
    return list(conversation)


def _store(
    key: KeySpec,
    draft: responses_wire.Draft,
    conversation: list[dict[str, Any]],
    items: list[dict[str, Any]],
) -> None:
    StoredResponse.objects.create(
        id=draft.id,
        api_key_id=key.pk,
        response=draft.response(),
        conversation=[*conversation, draft.reply_message()],
        input_items=items,
        expires_at=timezone.now() + timedelta(days=settings.GATEWAY_RESPONSES_RETENTION_DAYS),
    )


class ResponsesApi(GatewayApiView):
    def get_exception_handler(self) -> Any:
        return _openai_error

    async def post(self, request: Any) -> HttpResponse | StreamingHttpResponse:
        http: HttpRequest = request._request
        key = self.key(request)
        body = read_json(http)
        if not isinstance(body, dict):
            raise errors.bad_request("The request body must be a JSON object.")
        history = await _history(key, body.get("previous_response_id"))
        chat, conversation = responses_wire.to_chat(body, history)
        store = (
            body.get("store", True) is not False and settings.GATEWAY_RESPONSES_RETENTION_DAYS > 0
        )
        draft = responses_wire.Draft(body, response_id=responses_wire.new_id("resp"), stored=store)
        client_request = translated_request(http, chat, key, "responses")
        response = await proxy(client_request, self.config(request))

        async def keep() -> None:
            items = responses_wire.input_items(body.get("input"))
            await in_thread(_store, key, draft, conversation, items)

        if isinstance(response, StreamingHttpResponse):
            translator = responses_wire.StreamTranslator(draft)
            response.streaming_content = responses_wire.translate_stream(
                cast(AsyncIterator[bytes], response.streaming_content),
                translator,
                keep if store else None,
            )
            return response
        if response.status_code >= 400:
            return response
        response.content = orjson.dumps(
            responses_wire.from_chat(orjson.loads(response.content), draft)
        )
        if store:
            await keep()
        return response


class ResponseDetailApi(GatewayApiView):
    async def get(self, request: Any, response_id: str) -> HttpResponse:
        found = await in_thread(
            lambda: _live(self.key(request), response_id).values_list("response", flat=True).first()
        )
        if found is None:
            raise _not_found(response_id)
        return JsonResponse(found)

    async def delete(self, request: Any, response_id: str) -> HttpResponse:
        deleted, _ = await in_thread(lambda: _live(self.key(request), response_id).delete())
        if not deleted:
            raise _not_found(response_id)
        return JsonResponse({"id": response_id, "object": "response", "deleted": True})


class ResponseInputItemsApi(GatewayApiView):
    """`GET /v1/responses/{id}/input_items`: the input the request sent, in OpenAI's list shape,
    paged by `limit`, `order`, `after` and `before` (responses_wire.list_page)."""

    def get_exception_handler(self) -> Any:
        return _openai_error

    async def get(self, request: Any, response_id: str) -> HttpResponse:
        items = await in_thread(
            lambda: (
                _live(self.key(request), response_id).values_list("input_items", flat=True).first()
            )
        )
        if items is None:
            raise _not_found(response_id)
        query = request._request.GET
        return JsonResponse(
            responses_wire.list_page(
                list(items),
                limit=query.get("limit"),
                order=query.get("order"),
                after=query.get("after"),
                before=query.get("before"),
            )
        )
