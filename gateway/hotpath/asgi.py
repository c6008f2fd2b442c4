"""A leaner ASGI entry for the gateway's /v1/ and /healthz paths.

Django's ASGIHandler runs each request in a ThreadSensitiveContext and sends
request_started / closes the response through sync_to_async, so the database
signal receivers run in a thread created for the request. The gateway's views
are async and touch no database, so those hops are pure cost: measured on one
core with wrk at 32 connections, they held the gateway to ~230 req/s. This
handler keeps everything else (URL routing, the middleware chain, DRF views,
client-disconnect cancellation) and drops the thread hops: no per-request
thread context, no sync signal receivers, and no middleware chain (see below).

What the site's middleware would give every answer still applies here: the Host
header is checked against ALLOWED_HOSTS (an OpenAI-shaped 400 otherwise) with
Django's own validate_host, and the headers SecurityMiddleware would add (HSTS on
secure requests, nosniff, Referrer-Policy, Cross-Origin-Opener-Policy) are added
from the same settings. Both are computed once rather than per request: calling
get_host() and SecurityMiddleware's hooks per request cost 13.5 µs of CPU, the lean
version 2.0 µs (`python -m bench.security_cost`, load average 9). /v1 is exempt from
the HTTPS redirect (SECURE_REDIRECT_EXEMPT: a redirected POST loses its body).
"""

from __future__ import annotations

import asyncio
import functools
import io
from collections.abc import Awaitable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

from asgiref.sync import ThreadSensitiveContext, iscoroutinefunction, sync_to_async
from django.conf import settings
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.exception import convert_exception_to_response
from django.http.request import split_domain_port, validate_host
from django.urls import get_resolver
from django.utils.log import log_response

from gateway.hotpath import errors, outcomes, tracing
from gateway.hotpath.django_contract import close_quietly
from gateway.hotpath.snapshot import holder


class BodyTooLarge(Exception):
    """The request body (declared or received) is past GATEWAY_MAX_BODY_BYTES."""


class GatewayASGIHandler(ASGIHandler):
    def __init__(self) -> None:
        super().__init__()
        self._resolve = functools.lru_cache(maxsize=512)(
            get_resolver("gateway.hotpath.v1_urls").resolve
        )
        self._max_body = settings.GATEWAY_MAX_BODY_BYTES

    def load_middleware(self, is_async: bool = False) -> None:
        # No middleware on the gateway paths: every MiddlewareMixin-based middleware
        # (sessions, CSRF, auth, messages...) runs its hooks through sync_to_async
        # under ASGI, and the API needs none of them (keys are checked by the view).
        self._security_headers = _security_headers()
        self._hsts = _hsts_header()
        self._chain = convert_exception_to_response(self._secured_response)

    async def _call_view(self, request: Any) -> Any:
        # Resolve and call the view: what BaseHandler's private _get_response_async does, from
        # its public steps, with no view, exception or template-response middleware to apply.
        callback, args, kwargs = self.resolve_request(request)
        view: Any = self.make_view_atomic(callback)
        if not iscoroutinefunction(view):
            view = sync_to_async(view, thread_sensitive=True)
        response = await view(request, *args, **kwargs)
        self.check_response(response, callback)
        if hasattr(response, "render") and callable(response.render):
            if iscoroutinefunction(response.render):
                response = await response.render()
            else:
                response = await sync_to_async(response.render, thread_sensitive=True)()
        return response

    async def _secured_response(self, request: Any) -> Any:
        # ALLOWED_HOSTS, as CommonMiddleware checks on every other path.
        raw_host = _raw_host(request.META)
        if not _host_allowed(raw_host):
            return errors.GatewayError(
                400, f"Invalid HTTP_HOST header: {raw_host[:100]!r}.", code="disallowed_host"
            ).response()
        response = await self._call_view(request)
        for name, value in self._security_headers:
            if name not in response:
                response[name] = value
        if self._hsts and "Strict-Transport-Security" not in response and request.is_secure():
            response["Strict-Transport-Security"] = self._hsts
        return response

    async def get_response_async(self, request: Any) -> Any:
        # Django's version sets the thread's URLconf in an asgiref Local (this handler
        # resolves against its own resolver, below) and logs every 4xx/5xx answer through
        # sync_to_async: a thread hop per 401/429. Client errors are answered in the
        # OpenAI shape and recorded as usage events; gateway failures are logged here.
        response: Any = await cast(Awaitable[Any], self._chain(request))
        if response.status_code >= 400 and not response.get("Content-Type", "").startswith(
            "application/json"
        ):
            # Django's own answers (an HTML 404 or 500) never reach a /v1 client: same status,
            # OpenAI shape.
            response = errors.GatewayError(
                response.status_code,
                f"{response.reason_phrase}.",
                type="server_error" if response.status_code >= 500 else "invalid_request_error",
                code=response.reason_phrase.lower().replace(" ", "_"),
            ).response()
        if response.status_code >= 500:
            log_response(
                "%s: %s", response.reason_phrase, request.path, response=response, request=request
            )
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
        headers = [
            (name.encode("ascii"), value.encode("latin-1")) for name, value in response.items()
        ]
        if not response.has_header("Content-Length"):
            headers.append((b"Content-Length", str(len(body)).encode("ascii")))
        for cookie in response.cookies.values():
            headers.append((b"Set-Cookie", cookie.output(header="").encode("ascii").strip()))
        await send(
            {"type": "http.response.start", "status": response.status_code, "headers": headers}
        )
        await send({"type": "http.response.body", "body": body})

    async def read_body(self, receive: Any) -> io.BytesIO:
        # Django spools bodies into a SpooledTemporaryFile (1.6% of the worker's CPU at 256
        # connections). Gateway bodies are JSON capped at GATEWAY_MAX_BODY_BYTES, so hold
        # them in memory, and stop reading at the cap (BodyTooLarge: the caller answers 413
        # and closes the connection, so a chunked upload past the cap is never read whole).
        limit = self._max_body
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise RequestAborted()
            body = message.get("body")
            if body:
                chunks.append(body)
                size += len(body)
                if size > limit:
                    raise BodyTooLarge()
            if not message.get("more_body", False):
                break
        return io.BytesIO(chunks[0] if len(chunks) == 1 else b"".join(chunks))

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        # No set_script_prefix(): the gateway's views never reverse() a URL, and the write
        # goes to an asgiref Local (2.3% of the CPU at 256 connections).
        started, created_at = outcomes.now()
        try:
            if _declared_length(scope) > self._max_body:
                raise BodyTooLarge()  # answered from the header: the body is never read
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        except BodyTooLarge:
            await self._refuse(scope, send, errors.too_large(self._max_body), started, created_at)
            return
        created, error_response = self.create_request(scope, body_file)
        if created is None:
            if error_response is not None:
                error_response.close()
            await self._refuse(
                scope,
                send,
                errors.bad_request("The request could not be read."),
                started,
                created_at,
            )
            return
        request: Any = created  # carries the gateway's own attributes from here on
        request.gateway_request_id = outcomes.request_id_for(
            request.META.get("HTTP_X_REQUEST_ID", "")
        )
        span = (
            tracing.start_request(_trace_headers(scope))
            if tracing.enabled and outcomes.is_recorded_path(scope["path"])
            else None
        )
        # The response is made in this task; one watcher task cancels it if the client
        # goes away (Django runs the view in a second task and waits on both).
        task = asyncio.current_task()
        assert task is not None
        listener = asyncio.create_task(_cancel_on_disconnect(receive, task))
        response = None
        try:
            response = await self.run_get_response(request)
            if not response.has_header("x-request-id"):
                response["x-request-id"] = request.gateway_request_id
            _record_unless_proxied(
                request,
                response.status_code,
                getattr(response, "error_code", ""),
                started,
                created_at,
            )
            await self.send_response(response, send)
        except asyncio.CancelledError:
            if not listener.done():
                raise  # cancelled from outside (the server is stopping), not by the client
            task.uncancel()
            if response is None:
                _record_unless_proxied(request, 499, "client_disconnected", started, created_at)
        finally:
            listener.cancel()
            if response is not None:
                close_quietly(response)  # the closers without request_finished: see the module
            request.close()  # its uploaded files, as Django's handler does via the response
            if span is not None:
                tracing.finish(span)

    async def _refuse(
        self,
        scope: dict[str, Any],
        send: Any,
        error: errors.GatewayError,
        started: float,
        created_at: Any,
    ) -> None:
        """Answer before a request object exists (413, unreadable request), record it, close the
        connection."""
        headers = _meta_headers(scope)
        request_id = outcomes.request_id_for(headers.get("HTTP_X_REQUEST_ID", ""))
        if outcomes.is_recorded_path(scope["path"]):
            outcomes.record_outcome(
                status=error.status,
                error_code=error.code or error.type,
                endpoint=outcomes.endpoint_of(scope["path"]),
                request_id=request_id,
                started=started,
                created_at=created_at,
                key=outcomes.key_from_headers(headers, holder.peek()),
            )
        # Connection: close, so the server drops the connection rather than read the unread body.
        response = error.response({"x-request-id": request_id, "Connection": "close"})
        await self.send_response(response, send)


def _declared_length(scope: dict[str, Any]) -> int:
    for name, value in scope.get("headers") or ():
        if name == b"content-length":
            return (
                int(value) if value.isdigit() else 0
            )  # a malformed length is the server's to refuse
    return 0


def _trace_headers(scope: dict[str, Any]) -> dict[str, str]:
    return {
        name.decode("latin-1"): value.decode("latin-1")
        for name, value in scope.get("headers") or ()
        if name in (b"traceparent", b"tracestate")
    }


def _meta_headers(scope: dict[str, Any]) -> dict[str, str]:
    """The few request headers the edge reads, named as in request.META."""
    wanted = {
        b"authorization": "HTTP_AUTHORIZATION",
        b"api-key": "HTTP_API_KEY",
        b"x-api-key": "HTTP_X_API_KEY",
        b"x-request-id": "HTTP_X_REQUEST_ID",
    }
    return {
        wanted[name]: value.decode("latin-1")
        for name, value in scope.get("headers") or ()
        if name in wanted
    }


def _record_unless_proxied(
    request: Any, status: int, error_code: str, started: float, created_at: Any
) -> None:
    """A usage event for this answer, unless gateway.hotpath.proxy records (or has recorded) one
    itself."""
    client_request = getattr(request, "client_request", None)
    if (client_request is not None and client_request.recorded) or not outcomes.is_recorded_path(
        request.path
    ):
        return
    config = getattr(request, "gateway_config", None) or holder.peek()
    key = getattr(request, "gateway_key", None) or outcomes.key_from_headers(request.META, config)
    payload = getattr(request, "gateway_payload", None)
    model = payload.get("model") if isinstance(payload, dict) else None
    if model is None and request.resolver_match is not None:
        model = request.resolver_match.kwargs.get("model")
    outcomes.record_outcome(
        status=status,
        error_code=error_code or "",
        endpoint=outcomes.endpoint_of(request.path),
        request_id=request.gateway_request_id,
        started=started,
        created_at=created_at,
        key=key,
        serving_name=outcomes.clean_serving_name(model),
        config=config,
    )


def _raw_host(meta: dict[str, Any]) -> str:
    """The Host as Django's HttpRequest._get_raw_host() reads it."""
    if settings.USE_X_FORWARDED_HOST and "HTTP_X_FORWARDED_HOST" in meta:
        return str(meta["HTTP_X_FORWARDED_HOST"])
    if "HTTP_HOST" in meta:
        return str(meta["HTTP_HOST"])
    return f"{meta.get('SERVER_NAME', '')}:{meta.get('SERVER_PORT', '')}"


@functools.lru_cache(maxsize=256)  # bounded: a client sending a new Host each time only evicts
def _host_allowed(raw_host: str) -> bool:
    domain, _port = split_domain_port(raw_host)
    allowed = settings.ALLOWED_HOSTS or (
        ["localhost", "127.0.0.1", "[::1]"] if settings.DEBUG else []
    )
    return bool(domain) and validate_host(domain, allowed)


def _security_headers() -> tuple[tuple[str, str], ...]:
    """The headers SecurityMiddleware adds to every answer, from the same settings."""
    headers = []
    if settings.SECURE_CONTENT_TYPE_NOSNIFF:
        headers.append(("X-Content-Type-Options", "nosniff"))
    if settings.SECURE_REFERRER_POLICY:
        policy = settings.SECURE_REFERRER_POLICY
        headers.append(("Referrer-Policy", policy if isinstance(policy, str) else ",".join(policy)))
    if settings.SECURE_CROSS_ORIGIN_OPENER_POLICY:
        headers.append(("Cross-Origin-Opener-Policy", settings.SECURE_CROSS_ORIGIN_OPENER_POLICY))
    return tuple(headers)


def _hsts_header() -> str:
    if not settings.SECURE_HSTS_SECONDS:
        return ""
    value = f"max-age={settings.SECURE_HSTS_SECONDS}"
    if settings.SECURE_HSTS_INCLUDE_SUBDOMAINS:
        value += "; includeSubDomains"
    if settings.SECURE_HSTS_PRELOAD:
        value += "; preload"
    return value


async def _cancel_on_disconnect(receive: Any, task: asyncio.Task[Any]) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            task.cancel()
            return


GATEWAY_PATH_PREFIXES = ("/v1/", "/healthz", "/readyz", "/metrics")
GATEWAY_PATHS = ("/v1",)


# A live board's event stream stays open for as long as the board is: Django's handler gives each
# request its own thread for its synchronous steps (the session, the user), kept until the
# response ends, so every open board held an idle thread (50 boards: 9 -> 59 threads in make
# bench). The streams share this one instead; their synchronous steps are short look-ups.
BOARD_STREAM_SUFFIX = "/board/events/"
_board_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="board-streams")


def dispatch(gateway_app: Any, django_app: Any) -> Any:
    """Send gateway paths to the lean handler and everything else to Django's."""

    async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and (
            path.startswith(GATEWAY_PATH_PREFIXES) or path in GATEWAY_PATHS
        ):
            await gateway_app(scope, receive, send)
        elif scope["type"] == "http" and path.endswith(BOARD_STREAM_SUFFIX):
            async with ThreadSensitiveContext(executor=_board_thread):
                await django_app(scope, receive, send)
        else:
            await django_app(scope, receive, send)

    return application
