"""A leaner ASGI entry for the gateway's /v1/ and /healthz paths.

Django's ASGIHandler runs each request in a ThreadSensitiveContext and sends
request_started / closes the response through sync_to_async, so the database
signal receivers run in a thread created for the request. The gateway's views
are async and touch no database, so those hops are pure cost: measured on one
core with wrk at 32 connections, they held the gateway to ~230 req/s. This
handler keeps everything else (URL routing, the middleware chain, DRF views,
client-disconnect cancellation) and drops the thread hops: no per-request
thread context, no sync signal receivers, and no middleware (see below).
"""

from __future__ import annotations

import asyncio
import functools
import io
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.exception import convert_exception_to_response
from django.urls import get_resolver
from django.utils.log import log_response


class GatewayASGIHandler(ASGIHandler):
    def __init__(self) -> None:
        super().__init__()
        self._resolve = functools.lru_cache(maxsize=512)(get_resolver("gateway.urls").resolve)
        self._max_body = settings.GATEWAY_MAX_BODY_BYTES

    def load_middleware(self, is_async: bool = False) -> None:
        # No middleware on the gateway paths: every MiddlewareMixin-based middleware
        # (sessions, CSRF, auth, messages...) runs its hooks through sync_to_async
        # under ASGI, and the API needs none of them (keys are checked by the view).
        self._view_middleware = []
        self._template_response_middleware = []
        self._exception_middleware = []
        self._middleware_chain = convert_exception_to_response(self._get_response_async)

    async def get_response_async(self, request: Any) -> Any:
        # Django's version sets the thread's URLconf in an asgiref Local (this handler
        # resolves against its own resolver, below) and logs every 4xx/5xx answer through
        # sync_to_async: a thread hop per 401/429. Client errors are answered in the
        # OpenAI shape and recorded as usage events; gateway failures are logged here.
        response = await self._middleware_chain(request)
        response._resource_closers.append(request.close)
        if response.status_code >= 500:
            log_response("%s: %s", response.reason_phrase, request.path, response=response, request=request)
        return response

    def resolve_request(self, request: Any) -> Any:
        # Resolve against the gateway's own few URLs: faster than the whole site's
        # URLconf, and a worker that only serves the API never imports the pages, the
        # admin or the API schema generator. (Setting request.urlconf instead would
        # cost a write to an asgiref Local per request.) Matches are kept per path:
        # Django only reads them, and the gateway has a handful of paths.
        match = self._resolve(request.path_info)
        request.resolver_match = match
        return match

    async def send_response(self, response: Any, send: Any) -> None:
        if response.streaming:
            await super().send_response(response, send)
            return
        # A whole answer goes out in one body message with its Content-Length (Django
        # leaves the length to middleware, so the answer went out chunked).
        body = response.content
        headers = [(name.encode("ascii"), value.encode("latin-1")) for name, value in response.items()]
        if not response.has_header("Content-Length"):
            headers.append((b"Content-Length", str(len(body)).encode("ascii")))
        for cookie in response.cookies.values():
            headers.append((b"Set-Cookie", cookie.output(header="").encode("ascii").strip()))
        await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def read_body(self, receive: Any) -> io.BytesIO:
        # Django spools bodies into a SpooledTemporaryFile (1.6% of the worker's CPU at 256
        # connections). Gateway bodies are JSON capped at GATEWAY_MAX_BODY_BYTES, so hold
        # them in memory, and stop keeping bytes past the cap: the view answers 413 when
        # the body it sees is longer than the cap.
        limit = self._max_body
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise RequestAborted()
            body = message.get("body")
            if body and size <= limit:
                chunks.append(body)
                size += len(body)
            if not message.get("more_body", False):
                break
        return io.BytesIO(chunks[0] if len(chunks) == 1 else b"".join(chunks))

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        # No set_script_prefix(): the gateway's views never reverse() a URL, and the write
        # goes to an asgiref Local (2.3% of the CPU at 256 connections).
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        request, error_response = self.create_request(scope, body_file)
        if request is None:
            await self.send_response(error_response, send)
            error_response.close()
            return
        # The response is made in this task; one watcher task cancels it if the client
        # goes away (Django runs the view in a second task and waits on both).
        task = asyncio.current_task()
        assert task is not None
        listener = asyncio.create_task(_cancel_on_disconnect(receive, task))
        response = None
        try:
            response = await self.run_get_response(request)
            await self.send_response(response, send)
        except asyncio.CancelledError:
            if not listener.done():
                raise  # cancelled from outside (the server is stopping), not by the client
            task.uncancel()
        finally:
            listener.cancel()
            if response is not None:
                _close_without_signal(response)


def _close_without_signal(response: Any) -> None:
    """What HttpResponse.close() does, minus the request_finished signal.

    Its receivers reset this thread's URLconf and close this thread's database
    connections and caches; the event loop thread has none of them (the gateway's
    few queries run in worker threads), and the signal and the asgiref Locals they
    touch were 7.6% of the worker's CPU at 32 connections (bench/out, py-spy).
    """
    for closer in response._resource_closers:
        try:
            closer()
        except Exception:
            pass
    response._resource_closers.clear()
    response.closed = True


async def _cancel_on_disconnect(receive: Any, task: asyncio.Task[Any]) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            task.cancel()
            return


GATEWAY_PATH_PREFIXES = ("/v1/", "/healthz", "/plain/v1/")


def dispatch(gateway_app: Any, django_app: Any) -> Any:
    """Send gateway paths to the lean handler and everything else to Django's."""

    async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].startswith(GATEWAY_PATH_PREFIXES):
            await gateway_app(scope, receive, send)
        else:
            await django_app(scope, receive, send)

    return application
