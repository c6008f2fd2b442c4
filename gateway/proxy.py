"""The hot path: one client request → decision → attempts → response → usage event.

Framework-free apart from Django's response classes, so the DRF views and the
plain async views (kept for measuring what DRF costs) share every line of it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson
from django.http import HttpResponse, StreamingHttpResponse

from gateway import errors
from gateway.decision import Decision, decide
from gateway.engine.planner import Attempt, AttemptPlan, plan_attempts
from gateway.engine.types import BalancerSpec, InstanceSpec
from gateway.ratelimit import check_rate_limit
from gateway.runtime import routing
from gateway.snapshot import GatewayConfig, KeySpec
from gateway.text import prompt_tokens
from gateway.upstream import UpstreamFailure, UpstreamResponse, UpstreamStream, call_upstream
from gateway.usage import UsageRecord, recorder

logger = logging.getLogger(__name__)

ENDPOINT_FOR_KIND = {"chat": "/v1/chat/completions", "embeddings": "/v1/embeddings"}
_MILLION = Decimal(1_000_000)


@dataclass(slots=True)
class ClientRequest:
    endpoint: str  # chat | embeddings
    payload: dict[str, Any]
    key: KeySpec
    request_id: str
    route_override: str | None
    started: float  # time.monotonic()
    created_at: datetime
    recorded: bool = False  # a usage event is (or will be, at the stream's end) recorded for it here


def check_route_override(key: KeySpec, override: str | None) -> str | None:
    """An X-Balancer-Route override is for keys allowed to choose a route (the playground's is)."""
    if override and not key.allow_route_override:
        raise errors.GatewayError(
            403, "This API key may not choose a route: the X-Balancer-Route header needs a key allowed to "
                 "override routing. Send the request without it, or ask an operator to allow route override "
                 "on this key.",
            type="permission_error", code="route_override_not_allowed", param="X-Balancer-Route")
    return override


def validate_payload(endpoint: str, payload: Any) -> dict[str, Any]:
    """The checks the gateway needs; everything else passes through to the upstream untouched."""
    if not isinstance(payload, dict):
        raise errors.bad_request("The request body must be a JSON object.")
    model = payload.get("model")
    if not isinstance(model, str) or not model:
        raise errors.bad_request("'model' is required: send a balancer's serving name.", param="model")
    if endpoint == "chat":
        messages = payload.get("messages")
        if not isinstance(messages, list) or not messages:
            raise errors.bad_request("'messages' must be a non-empty array.", param="messages")
        for index, message in enumerate(messages):
            if not isinstance(message, dict) or not isinstance(message.get("role"), str):
                raise errors.bad_request(f"messages[{index}] must be an object with a 'role'.", param=f"messages[{index}]")
        if "stream" in payload and not isinstance(payload["stream"], bool):
            raise errors.bad_request("'stream' must be true or false.", param="stream")
        options = payload.get("stream_options")
        if options is not None and not isinstance(options, dict):
            raise errors.bad_request("'stream_options' must be an object.", param="stream_options")
    else:
        value = payload.get("input")
        if not (isinstance(value, str) and value) and not (isinstance(value, list) and value):
            raise errors.bad_request("'input' must be a non-empty string or array.", param="input")
    return payload


def find_balancer(config: GatewayConfig, key: KeySpec, model: str, endpoint: str | None) -> BalancerSpec:
    balancer = config.routing.balancers.get(model)
    if balancer is None or not balancer.enabled:
        raise errors.model_not_found(model)
    if key.allowed is not None and balancer.serving_name not in key.allowed:
        raise errors.forbidden(f"This API key may not use {model!r}.")
    if endpoint is not None and balancer.workload_kind != endpoint:
        raise errors.bad_request(
            f"{model!r} is a {balancer.workload_kind} balancer; call {ENDPOINT_FOR_KIND[balancer.workload_kind]} instead.",
            param="model", code="wrong_workload_kind",
        )
    return balancer


@functools.lru_cache(maxsize=1024)
def _per_token(price_per_million: float) -> Decimal:
    return Decimal(str(price_per_million)) / _MILLION


def _cost(instance: InstanceSpec, prompt: int, completion: int) -> Decimal:
    return (prompt * _per_token(instance.input_price_per_million)
            + completion * _per_token(instance.output_price_per_million))


class _Exchange:
    """Bookkeeping of one client request, turned into a usage event at the end."""

    __slots__ = ("attempt_log", "balancer", "decision", "plan", "req", "ttfb_ms")

    def __init__(self, req: ClientRequest, balancer: BalancerSpec, decision: Decision, plan: AttemptPlan) -> None:
        self.req, self.balancer, self.decision, self.plan = req, balancer, decision, plan
        self.attempt_log: list[dict[str, Any]] = []
        self.ttfb_ms: float | None = None

    @property
    def reason(self) -> str:
        return self.decision.reason if self.decision.route is not None else self.plan.reason

    def log_attempt(self, attempt: Attempt, outcome: str, started: float, status: int | None = None) -> None:
        self.attempt_log.append({
            "route": attempt.route.name, "instance": attempt.instance.instance_id, "outcome": outcome,
            "status": status, "ms": round((time.monotonic() - started) * 1000, 2),
        })

    def headers(self, attempt: Attempt | None) -> dict[str, str]:
        headers = {
            "x-balancer": self.balancer.serving_name,
            "x-balancer-decision": self.reason,
            "x-balancer-attempts": str(len(self.attempt_log)),
            "x-request-id": self.req.request_id,
        }
        if attempt is not None:
            headers["x-balancer-route"] = attempt.route.name
            headers["x-balancer-instance"] = attempt.instance.instance_id
        return headers

    def record(self, *, status: int, attempt: Attempt | None, prompt: int = 0, completion: int = 0,
               error_type: str = "", stream: bool = False) -> None:
        instance = attempt.instance if attempt is not None else None
        self.req.recorded = True
        recorder.record(UsageRecord(
            created_at=self.req.created_at,
            request_id=self.req.request_id,
            endpoint=self.req.endpoint,
            status_code=status,
            latency_ms=round((time.monotonic() - self.req.started) * 1000, 3),
            api_key_id=self.req.key.pk,
            balancer_id=self.balancer.pk,
            serving_name=self.balancer.serving_name,
            route=attempt.route.name if attempt is not None else "",
            instance=instance.instance_id if instance is not None else "",
            model=instance.model if instance is not None else "",
            decision_reason=self.reason,
            confidence=self.decision.confidence,
            classifier_ms=self.decision.classifier_ms,
            attempts=len(self.attempt_log),
            attempt_log=self.attempt_log,
            error_type=error_type,
            stream=stream,
            ttfb_ms=self.ttfb_ms,
            prompt_tokens=prompt,
            completion_tokens=completion,
            cost_usd=_cost(instance, prompt, completion) if instance is not None else Decimal(0),
        ))


async def proxy(req: ClientRequest, config: GatewayConfig) -> HttpResponse | StreamingHttpResponse:
    payload = validate_payload(req.endpoint, req.payload)
    balancer = find_balancer(config, req.key, payload["model"], req.endpoint)
    check_route_override(req.key, req.route_override)
    if req.key.rate_limit_per_minute:
        wait = await check_rate_limit(req.key.pk, req.key.rate_limit_per_minute)
        if wait is not None:
            raise errors.rate_limited(wait)
    decision = await decide(balancer, config.version, payload, req.route_override)
    plan = plan_attempts(balancer, routing, first=decision.route, reason=decision.reason)
    exchange = _Exchange(req, balancer, decision, plan)
    stream = req.endpoint == "chat" and payload.get("stream") is True
    client_wants_usage = bool(stream and (payload.get("stream_options") or {}).get("include_usage"))
    deadline = req.started + balancer.request_timeout
    last_failure: UpstreamFailure | None = None

    while (attempt := plan.next()) is not None:
        instance = attempt.instance
        upstream_payload = dict(payload)
        upstream_payload["model"] = instance.model
        if stream and not client_wants_usage:
            # Ask for usage anyway so the request can be costed; the extra chunk is not relayed.
            upstream_payload["stream_options"] = {**(payload.get("stream_options") or {}), "include_usage": True}
        started = time.monotonic()
        try:
            result = await call_upstream(instance, endpoint=req.endpoint, payload=upstream_payload, stream=stream, deadline=deadline)
            if isinstance(result, UpstreamResponse):
                body, prompt, completion = _read_body(result, instance)
        except UpstreamFailure as failure:
            if not failure.retryable:
                # The instance answered; the request itself is at fault: hand the error back unchanged.
                plan.succeeded(latency_s=time.monotonic() - started)
                exchange.log_attempt(attempt, "client_error", started, failure.status)
                exchange.record(status=failure.status or 400, attempt=attempt, error_type="upstream_client_error")
                return _client_error(failure, exchange.headers(attempt))
            plan.failed(retry_after=failure.retry_after)
            exchange.log_attempt(attempt, failure.kind, started, failure.status)
            last_failure = failure
            if time.monotonic() >= deadline:
                break
            continue
        except asyncio.CancelledError:
            plan.abandoned()
            exchange.log_attempt(attempt, "cancelled", started)
            exchange.record(status=499, attempt=attempt, error_type="client_disconnected", stream=stream)
            raise
        plan.succeeded(latency_s=time.monotonic() - started)
        exchange.log_attempt(attempt, "ok", started, 200)
        exchange.ttfb_ms = round((time.monotonic() - req.started) * 1000, 3)
        if isinstance(result, UpstreamStream):
            req.recorded = True  # by the relay, when the stream ends
            return _stream_response(result, exchange, attempt, strip_usage=not client_wants_usage)
        exchange.record(status=200, attempt=attempt, prompt=prompt, completion=completion)
        response = HttpResponse(body, content_type="application/json")
        for key, value in exchange.headers(attempt).items():
            response[key] = value
        return response

    status = 504 if last_failure is not None and last_failure.is_timeout else 502
    exchange.record(status=status, attempt=None, error_type="upstream_timeout" if status == 504 else "upstream_failed")
    tried = "; ".join(f"{a['instance']} ({a['route']}): {a['outcome']}{' ' + str(a['status']) if a['status'] else ''}"
                      for a in exchange.attempt_log) or "no instance was available"
    raise errors.GatewayError(
        status,
        f"Every attempt failed for {balancer.serving_name}. Tried: {tried}.",
        type="upstream_error",
        code="upstream_timeout" if status == 504 else "upstream_unavailable",
        headers=exchange.headers(None),
    )


def _read_body(result: UpstreamResponse, instance: InstanceSpec) -> tuple[bytes, int, int]:
    """Usage from the upstream body; `model` filled in only if the upstream left it out."""
    try:
        data = orjson.loads(result.body)
    except orjson.JSONDecodeError:
        raise UpstreamFailure("protocol", "the upstream answered with a body that is not JSON") from None
    if not isinstance(data, dict):
        raise UpstreamFailure("protocol", "the upstream answered with JSON that is not an object")
    usage = data.get("usage") or {}
    prompt = int(usage.get("prompt_tokens") or 0) if isinstance(usage, dict) else 0
    completion = int(usage.get("completion_tokens") or 0) if isinstance(usage, dict) else 0
    body = result.body
    if not data.get("model"):
        data["model"] = instance.model
        body = orjson.dumps(data)
    return body, prompt, completion


def _client_error(failure: UpstreamFailure, headers: dict[str, str]) -> HttpResponse:
    body = failure.body or b""
    try:
        parsed = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        parsed = None
    if not (isinstance(parsed, dict) and isinstance(parsed.get("error"), dict)):
        body = orjson.dumps({"error": {"message": f"The upstream refused the request (HTTP {failure.status}).",
                                       "type": "invalid_request_error", "param": None, "code": None}})
    response = HttpResponse(body, status=failure.status or 400, content_type="application/json")
    for key, value in headers.items():
        response[key] = value
    return response


def _stream_response(result: UpstreamStream, exchange: _Exchange, attempt: Attempt, *, strip_usage: bool) -> StreamingHttpResponse:
    instance = attempt.instance
    idle_timeout = instance.first_byte_timeout

    async def relay() -> AsyncIterator[bytes]:
        usage: dict[str, int] = {}
        content_chunks = 0
        error_type = ""
        status = 200
        try:
            event = _inspect(result.first, usage, strip_usage)
            if event:
                yield event
            iterator = result.rest.__aiter__()
            while True:
                try:
                    async with asyncio.timeout(idle_timeout):
                        raw = await iterator.__anext__()
                except StopAsyncIteration:
                    break
                content_chunks += 1
                event = _inspect(raw, usage, strip_usage)
                if event:
                    yield event
        except asyncio.CancelledError:
            error_type, status = "client_disconnected", 499
            raise
        except GeneratorExit:
            error_type, status = "client_disconnected", 499
            raise
        except Exception as exc:  # the upstream broke after the first byte: end the stream with an error event
            error_type, status = "stream_interrupted", 502
            message = "no data within the idle timeout" if isinstance(exc, TimeoutError) else type(exc).__name__
            logger.warning("stream from %s interrupted after the first byte: %s", instance.instance_id, message)
            yield b"data: " + orjson.dumps({"error": {
                "message": f"The upstream stream was interrupted ({message}).", "type": "upstream_error",
                "param": None, "code": "stream_interrupted"}}) + b"\n\n"
        finally:
            await result.aclose()
            prompt = usage.get("prompt_tokens") or prompt_tokens(exchange.req.payload.get("messages"))
            completion = usage.get("completion_tokens") or max(0, content_chunks - 2)
            exchange.record(status=status, attempt=attempt, prompt=prompt, completion=completion,
                            error_type=error_type, stream=True)

    response = StreamingHttpResponse(relay(), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    for key, value in exchange.headers(attempt).items():
        response[key] = value
    return response


def _inspect(event: bytes, usage: dict[str, int], strip_usage: bool) -> bytes | None:
    """Pick the usage out of a chunk; drop the usage-only chunk the client did not ask for."""
    if b'"usage"' not in event or b'"usage":null' in event or b'"usage": null' in event:
        return event
    start = event.find(b"data:")
    if start < 0:
        return event
    try:
        chunk = orjson.loads(event[start + 5:].strip())
    except orjson.JSONDecodeError:
        return event
    found = chunk.get("usage") if isinstance(chunk, dict) else None
    if isinstance(found, dict):
        usage["prompt_tokens"] = int(found.get("prompt_tokens") or 0)
        usage["completion_tokens"] = int(found.get("completion_tokens") or 0)
        if strip_usage and not chunk.get("choices"):
            return None
    return event

